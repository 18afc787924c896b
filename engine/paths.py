"""Default locations. Every one can be overridden by an argument or environment variable."""
from __future__ import annotations

import os
from pathlib import Path

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
