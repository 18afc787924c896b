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


@dataclass(frozen=True)
class Stimulus:
    """One file shown in a study. role: "a" | "b" | "reference"; media: "image" | "video" | "glb"."""

    id: int
    role: str
    media: str
    content_type: str
    sha256: str
    path: Path  # absolute path of the stored file
    num_bytes: int


@dataclass(frozen=True)
class StudyItem:
    """A pair to compare: ``stimuli`` maps role -> Stimulus. A catch item's "a" is right and its "b" is broken."""

    id: int
    name: str
    is_catch: bool
    media: str
    stimuli: Mapping[str, Stimulus]
    source: Mapping


@dataclass(frozen=True)
class Study:
    """A perceptual A/B study. ``config`` is an ``annotations.studies.StudyConfig``."""

    id: int
    slug: str
    title: str
    state: str  # "open" | "paused" | "closed"
    method_a: str
    method_b: str
    config: object
    seed: int
    num_items: int
    num_catch_items: int
    created_at: datetime


@dataclass(frozen=True)
class Participant:
    """One person in one study. ``token`` is the bearer secret of their page; ``seed`` made their plan."""

    id: int
    study_id: int
    external_id: str
    session: str
    token: str
    seed: int
    num_trials: int
    num_answered: int
    completed: bool


@dataclass(frozen=True)
class TrialView:
    """What the participant page may know of one trial: never the item's name, source or the methods' sides."""

    key: str
    position: int  # 1-based
    total: int
    media: str
    has_reference: bool


@dataclass(frozen=True)
class ResponseReceipt:
    """The acknowledgement of a response. ``duplicate``: the trial had been answered before (first answer kept)."""

    response_id: int
    trial_key: str
    choice: str  # "left" | "right" | "timeout" (as stored)
    seconds: float
    duplicate: bool
    completed: bool  # the participant has now answered every trial
    next_trial: TrialView | None = None  # what to show now (None once completed)


@dataclass(frozen=True)
class ResponseRecord:
    """One response with its trial un-swapped: what the analysis and the exports read.

    choice: the side picked as shown ("left" | "right" | "timeout"). chose_a: True/False, None for a timeout.
    likert_a / likert_b: ratings of method A's / B's side (None when not asked or not given).
    """

    participant: str
    participant_id: int
    item: str
    is_catch: bool
    position: int
    swapped: bool  # method A was on the right
    choice: str
    chose_a: bool | None
    likert_a: int | None
    likert_b: int | None
    seconds: float
    client_seconds: float | None
    created_at: datetime
