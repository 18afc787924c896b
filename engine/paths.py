"""Default locations. Every one can be overridden by an argument or environment variable."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from engine.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    """Writable state (caches, the SQLite store): ``$STUDIO_VAR`` or ``var/`` in the repo."""
    path = Path(os.environ.get("STUDIO_VAR", REPO_ROOT / "var"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    path = var_dir() / "cache" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir(override: str | Path | None = None) -> Path:
    """Where licensed files live: the argument, ``$STUDIO_MODELS`` or ``models/``."""
    if override is not None:
        return Path(override)
    return Path(os.environ.get("STUDIO_MODELS", REPO_ROOT / "models"))


_CACHE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def cache_name(label: str) -> str:
    """``label`` (a topology id, a preset) if it is safe inside a cache file name, else InputError."""
    if not isinstance(label, str) or not _CACHE_NAME.fullmatch(label):
        raise InputError(f"{label!r} may only hold letters, digits, '.', '_' and '-' (at most 64, no leading '.')")
    return label


def write_atomically(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Call ``save`` on a private temporary file beside ``path``, then rename it into place.

    Readers never see a half-written cache file, and concurrent writers never share a temporary name.
    """
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False)
    try:
        with handle:
            save(handle)
        Path(handle.name).replace(path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def read_bounded(source, name: str, max_bytes: int, *, missing: str, empty: str) -> bytes:
    """The bytes of ``source`` (bytes or a file path), reading at most ``max_bytes + 1`` so that an oversized
    file is refused without being read whole. ``missing`` and ``empty`` are the messages for a path that is
    not a file and for an empty input."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(missing)
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{name!r} is larger than {max_bytes // 1024 ** 2} MiB")
    if not data:
        raise InputError(empty)
    return data
