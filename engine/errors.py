"""The two errors the engine raises for problems a user can fix.

The studio shows both as ``gr.Error``; CLIs print them without a traceback.
"""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input. The message says what was wrong and what is accepted."""


class MissingAssetError(FileNotFoundError):
    """A licensed or downloaded file is absent. Names the file and where to put it."""

    def __init__(self, what: str, expected: Path | str, hint: str = ""):
        self.what = what
        self.expected = Path(expected)
        message = f"{what} not found: expected at {self.expected}"
        super().__init__(f"{message}. {hint}".strip() if hint else message)
