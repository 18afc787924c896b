"""Label vocabularies and the label rule.

Object labels are free text (DAMON has 84) normalised to lower case; ``supporting`` is ground or
scene contact. Affordances are PIAD's 17 plus LEMON/3DIR's four extras (REFERENCE.md section 3).
Labels may hold only letters, digits, spaces and ``_-'``, which keeps them safe in HTML and file names.
"""
from __future__ import annotations

import re

from annotations.errors import PayloadError
# One definition of the affordance columns and label rules, shared with the engine (torch-free module).
from engine.contact.vocabulary import (AFFORDANCES, LEMON_EXTRA_AFFORDANCES, MAX_LABEL_LENGTH,  # noqa: F401
                                       PIAD_AFFORDANCES, SUPPORTING)

_LABEL = re.compile(r"[a-z0-9][a-z0-9 _'\-]*")


def normalise_label(text) -> str:
    """Lower-case, trimmed, single-spaced label; raises ``PayloadError`` for anything else."""
    label = " ".join(str(text).strip().lower().split())
    if not label or len(label) > MAX_LABEL_LENGTH or not _LABEL.fullmatch(label):
        raise PayloadError(f"label {str(text)[:80]!r} is not accepted: use 1-{MAX_LABEL_LENGTH} letters, digits, "
                           "spaces or _-' (e.g. 'chair', 'supporting')")
    return label


def normalise_labels(items, max_labels: int) -> tuple[str, ...]:
    """Unique labels in their first order; at least one, at most ``max_labels``."""
    labels = tuple(dict.fromkeys(normalise_label(item) for item in items))
    if not labels:
        raise PayloadError("a task needs at least one object label")
    if len(labels) > max_labels:
        raise PayloadError(f"a task may carry at most {max_labels} labels, got {len(labels)}")
    return labels


def normalise_affordance(text) -> str:
    label = normalise_label(text)
    if label not in AFFORDANCES:
        raise PayloadError(f"unknown affordance {label!r}; known: {', '.join(AFFORDANCES)}")
    return label
