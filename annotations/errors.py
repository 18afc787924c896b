"""Typed errors of the annotation store. All are ``InputError``s: the caller sent something wrong.

The studio shows them as ``gr.Error``; the CLI prints them without a traceback. Nothing is written
to the store when one is raised.
"""
from __future__ import annotations

from engine.errors import InputError


class UnknownTaskError(InputError):
    """The task id does not exist."""


class UnknownAnnotatorError(InputError):
    """The annotator id does not exist."""


class NotAssignedError(InputError):
    """The annotator has no open assignment for this task (or it was already finished)."""


class PayloadError(InputError):
    """A submission payload is malformed: unknown label, out-of-range vertex id, wrong length, too large."""


class UnsafeArchiveError(InputError):
    """An upload archive tries path traversal, holds links, or would decompress too far."""


class ImageRejected(InputError):
    """An image is unreadable, of an unsupported format, or outside the size limits."""


class ProblemsRejected(InputError):
    """Input with bad parts: ``problems`` lists every one (the message shows the first 20); nothing was made."""

    headline = "rejected, nothing made"

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = "\n".join(f"  - {problem}" for problem in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{self.headline} ({len(self.problems)} problem(s)):\n{shown}{more}")


class BatchRejected(ProblemsRejected):
    """A batch import found bad rows. ``problems`` lists every one; nothing was imported."""

    headline = "batch rejected, nothing imported"
