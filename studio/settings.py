"""Server settings: command-line flags first, then environment variables; credentials only from outside the code."""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError

MAX_UPLOAD_BYTES = 50 * 2**20
MAX_OBJECT_BYTES = 20 * 2**20
ADMIN_USER_ENV, ADMIN_PASSWORD_ENV = "STUDIO_ADMIN_USER", "STUDIO_ADMIN_PASSWORD"
WORKER_SECRET_ENV = "STUDIO_WORKER_SECRET"
MIN_SECRET_LENGTH = 16
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

    Security (docs/SECURITY.md):
    trusted_proxies: addresses or networks of reverse proxies whose ``X-Forwarded-For`` is believed.
    login_max_failures, login_delay_s: failed logins per user or address before refusals (429), and
        the first delay (it doubles with every further failure).
    session_starts_per_minute, tasks_per_minute: per client address, for /annotate session starts and
        for tasks made from the demo.
    worker_secret: key of signed worker links (``?worker=ID&sig=HMAC-SHA256(secret, ID)``, hex); None
        turns signatures off. require_signed_workers: the starting value of the admin's switch.
    unsigned_assignment_timeout_s: open assignments of unsigned workers expire after this.
    max_object_bytes: the largest object file (.obj .ply .off .stl .txt ...) the demo parses.
    pixel_budget: decoded image pixels all requests of one lane may hold at once; a request beyond it
        waits up to ``pixel_wait_s``, then is refused with a message.
    cache_max_age_s, cache_max_bytes: uploads, Gradio's cache and output folders older than this are
        deleted, and the oldest go first when the folders hold more than ``cache_max_bytes``;
        ``sweep_every_s`` between sweeps.
    runs_max_bytes: the tabs' kept runs (``annotations.runs``) beyond this total are deleted oldest
        first at each sweep; studies keep their own copies of stimuli, so they are not affected.
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
    trusted_proxies: tuple[str, ...] = ()
    login_max_failures: int = 5
    login_delay_s: float = 30.0
    session_starts_per_minute: int = 30
    tasks_per_minute: int = 6
    worker_secret: str | None = None
    require_signed_workers: bool = False
    unsigned_assignment_timeout_s: float = 600.0
    max_object_bytes: int = MAX_OBJECT_BYTES
    pixel_budget: int = 120_000_000
    pixel_wait_s: float = 20.0
    cache_max_age_s: float = 3600.0
    cache_max_bytes: int = 4 * 2**30
    sweep_every_s: float = 60.0
    runs_max_bytes: int = 8 * 2**30

    def __post_init__(self):
        if not 1 <= self.gpu_concurrency <= 64:
            raise InputError(f"gpu concurrency must be between 1 and 64, got {self.gpu_concurrency}")
        if not 1 <= self.store_concurrency <= 256:
            raise InputError(f"store concurrency must be between 1 and 256, got {self.store_concurrency}")
        import ipaddress
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise InputError(f"trusted proxy {proxy!r} is not an IP address or network") from None
        if self.login_max_failures < 1 or self.login_delay_s <= 0:
            raise InputError("login throttling needs at least 1 failure and a positive delay")
        if self.session_starts_per_minute < 1 or self.tasks_per_minute < 1:
            raise InputError("rate limits must allow at least 1 per minute")
        if self.worker_secret is not None and len(self.worker_secret) < MIN_SECRET_LENGTH:
            raise InputError(f"${WORKER_SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters")
        if self.require_signed_workers and self.worker_secret is None:
            raise InputError(f"signed worker links need ${WORKER_SECRET_ENV}")
        if self.unsigned_assignment_timeout_s <= 0 or self.cache_max_age_s <= 0 or self.sweep_every_s <= 0:
            raise InputError("timeouts, cache age and sweep interval must be positive")
        if self.max_object_bytes < 1 or self.pixel_budget < 1 or self.cache_max_bytes < 1 or self.runs_max_bytes < 1:
            raise InputError("size limits must be positive")


def admin_from_env(environ=os.environ) -> Login | None:
    """The admin login from $STUDIO_ADMIN_USER and $STUDIO_ADMIN_PASSWORD; None when either is unset."""
    username, password = environ.get(ADMIN_USER_ENV, ""), environ.get(ADMIN_PASSWORD_ENV, "")
    if not username or not password:
        return None
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"${ADMIN_PASSWORD_ENV} must be at least {MIN_PASSWORD_LENGTH} characters")
    return Login(username, password)


def worker_secret_from_env(environ=os.environ) -> str | None:
    """The key of signed worker links from $STUDIO_WORKER_SECRET (None when unset)."""
    return environ.get(WORKER_SECRET_ENV) or None


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
