"""Frozen domain objects handed out by the store. Never live ORM rows.

Per-label payloads are read-only numpy arrays keyed by label: vertex ids ``(K,) int64`` for human
contact, per-point values ``(N,) float32`` in [0, 1] for object affordance, and per-vertex
probabilities ``(V,) float32`` for predictions.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

BASELINE_PREFIX = "baseline:"


def frozen_layers(layers: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """A read-only mapping of read-only arrays, in label order."""
    out = {}
    for label in sorted(layers):
        array = np.array(layers[label])
        array.setflags(write=False)
        out[label] = array
    return MappingProxyType(out)


@dataclass(frozen=True)
class Annotator:
    id: int
    external_id: str
    role: str  # "annotator" | "admin"
    qualification: str  # "pending" | "qualified" | "disqualified"
    verified: bool = False  # came with a signed worker link or a login (migration 0005)
    bound_session: str | None = None  # SHA-256 of the one browser session a demo worker id belongs to


@dataclass(frozen=True)
class Image:
    id: int
    sha256: str
    path: Path  # absolute path of the stored file
    format: str
    width: int
    height: int
    original_name: str
    source: str | None
    licence: str | None


@dataclass(frozen=True)
class Prediction:
    """What seeded a task: a model's per-vertex (or per-point) values per label."""

    id: int
    model_name: str
    model_version: str
    parameters: Mapping
    topology: str
    layers: Mapping[str, np.ndarray]  # label -> (V,) float32

    @property
    def is_baseline(self) -> bool:
        return self.model_name.startswith(BASELINE_PREFIX)


@dataclass(frozen=True)
class Task:
    id: int
    kind: str  # "human_contact" | "object_affordance"
    topology: str  # body topology id, or "points-<N>" for an object task
    labels: tuple[str, ...]  # object labels (human_contact) or (affordance,) (object_affordance)
    image: Image
    object_id: int | None
    object_class: str | None
    prediction: Prediction | None
    redundancy: int
    priority: int
    is_gold: bool
    batch_id: int | None
    pool: str = "crowd"  # "crowd" or "demo" (held only by its maker until an admin promotes it)


@dataclass(frozen=True)
class Assignment:
    """A task handed to one annotator. ``status``: assigned | submitted | skipped | flagged | expired."""

    id: int
    task: Task
    annotator_id: int
    status: str
    assigned_at: datetime


@dataclass(frozen=True)
class SubmissionReceipt:
    """The acknowledgement of a submission. ``duplicate`` is True when the key had been seen before."""

    submission_id: int
    submission_key: str
    task_id: int
    annotator_id: int
    created_at: datetime
    duplicate: bool


@dataclass(frozen=True)
class Submission:
    id: int
    task_id: int
    annotator_id: int
    layers: Mapping[str, np.ndarray]  # label -> vertex ids (K,) int64, or per-point values (N,) float32
    prediction_id: int | None
    seconds_spent: float
    client_info: Mapping
    created_at: datetime


@dataclass(frozen=True)
class Run:
    """One result a studio tab produced. ``files`` maps each output file name to its absolute path.

    kind: "contact" | "affordance" | "hoi" | "genzi".
    method: what produced it, e.g. "interactvlm-hoi" or "baseline: silhouette only (no contacts)".
    group_key: runs made from the same input share it (a perceptual study pairs them by it).
    inputs: each input's source, e.g. {"body": "example", "contacts": "painted"}.
    summary: figures worth listing (final losses, IoU, metrics).
    """

    id: str
    kind: str
    method: str
    group_key: str | None
    inputs: Mapping
    files: Mapping[str, Path]
    summary: Mapping
    created_at: datetime

    @property
    def is_baseline(self) -> bool:
        return self.method.startswith(BASELINE_PREFIX)
