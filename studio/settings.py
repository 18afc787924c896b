"""Server settings: command-line flags first, then environment variables; credentials only from outside the code."""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError

MAX_UPLOAD_BYTES = 50 * 2**20
ADMIN_USER_ENV, ADMIN_PASSWORD_ENV = "STUDIO_ADMIN_USER", "STUDIO_ADMIN_PASSWORD"
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class Login:
    """One account (the admin's, or an annotator's). ``repr`` hides the password so it never reaches a log."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Login(username={self.username!r}, password=***)"

    def check(self, username: str, password: str) -> bool:
        """Constant-time comparison of both fields (a timing side channel leaks nothing)."""
        same_user = hmac.compare_digest(str(username).encode(), self.username.encode())
        same_password = hmac.compare_digest(str(password).encode(), self.password.encode())
        return same_user and same_password


@dataclass(frozen=True)
class StudioSettings:
    """Everything one server process needs.

    models_dir: where licensed model files live (``python app.py doctor`` lists them).
    db_url: SQLAlchemy URL of the annotation store (None: SQLite under var/).
    data_dir: where the store keeps images and objects (None: var/annotations).
    gpu_concurrency: how many GPU-bound events run at once (one shared ``concurrency_id``).
    store_concurrency: how many store events (next task, submit, ...) run at once.
    max_upload_bytes: the largest upload any page accepts.
    admin: the admin login; None leaves ``/admin`` closed.
    annotator_logins: accounts for ``/annotate`` (empty: annotators come with ``?worker=ID`` instead).
    device: "auto", "cpu" or "cuda[:N]" for the engine.
    """

    models_dir: Path
    db_url: str | None = None
    data_dir: Path | None = None
    gpu_concurrency: int = 1
    store_concurrency: int = 16
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    admin: Login | None = None
    annotator_logins: tuple[Login, ...] = ()
    device: str = "auto"

    def __post_init__(self):
        if not 1 <= self.gpu_concurrency <= 64:
            raise InputError(f"gpu concurrency must be between 1 and 64, got {self.gpu_concurrency}")
        if not 1 <= self.store_concurrency <= 256:
            raise InputError(f"store concurrency must be between 1 and 256, got {self.store_concurrency}")


def admin_from_env(environ=os.environ) -> Login | None:
    """The admin login from $STUDIO_ADMIN_USER and $STUDIO_ADMIN_PASSWORD; None when either is unset."""
    username, password = environ.get(ADMIN_USER_ENV, ""), environ.get(ADMIN_PASSWORD_ENV, "")
    if not username or not password:
        return None
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"${ADMIN_PASSWORD_ENV} must be at least {MIN_PASSWORD_LENGTH} characters")
    return Login(username, password)


def logins_from_file(path: Path | str) -> tuple[Login, ...]:
    """Annotator accounts from a file of ``username:password`` lines (blank lines and # comments skipped)."""
    accounts = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, separator, password = line.strip().partition(":")
        if not separator or not username or len(password) < MIN_PASSWORD_LENGTH:
            raise InputError(f"{path}, line {number}: expected username:password with a password of at least "
                             f"{MIN_PASSWORD_LENGTH} characters")
        accounts.append(Login(username, password))
    return tuple(accounts)


def any_login(accounts: tuple[Login, ...]):
    """A Gradio auth callback accepting any of ``accounts`` (every account is checked: no early exit)."""
    def check(username: str, password: str) -> bool:
        return sum(account.check(username, password) for account in accounts) > 0
    return check
