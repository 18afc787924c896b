"""Quality control over the store: gold accuracy per annotator, agreement per task, aggregation.

Human contact is compared as boolean masks over (label, vertex); object affordance as its values
binarised at 0.5 (``qc.binarise``). Aggregation is the per-vertex majority (``qc.majority_vote``),
optionally weighted by each annotator's gold accuracy; soft object values are averaged.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from itertools import groupby
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from annotations import codec, models, qc
from annotations.store import Store, utcnow
from annotations.workflow import points_count
from engine.body.topology import num_vertices


@dataclass(frozen=True)
class TaskAnnotations:
    """All submissions of one task. ``layers``: (A, L, V) bool for human contact, (A, L, N) float32 for objects."""

    task_id: int
    kind: str
    topology: str
    labels: tuple[str, ...]
    annotator_ids: tuple[int, ...]  # (A,)
    layers: np.ndarray

    def masks(self) -> np.ndarray:
        """(A, L*V) bool: every label's contact, side by side, as one mask per annotator."""
        flat = self.layers.reshape(len(self.annotator_ids), -1)
        return flat if flat.dtype == bool else qc.binarise(flat)


@dataclass(frozen=True)
class AnnotatorQuality:
    annotator_id: int
    external_id: str
    qualification: str
    submissions: int
    gold_submissions: int
    gold_accuracy: float  # mean vertex IoU against gold answers; nan without gold submissions
    median_seconds: float  # nan without submissions


@dataclass(frozen=True)
class TaskQuality:
    task_id: int
    submissions: int
    flags: int
    agreement: qc.Agreement  # nan fields with fewer than two submissions


@dataclass(frozen=True)
class QualityReport:
    annotators: tuple[AnnotatorQuality, ...]
    tasks: tuple[TaskQuality, ...]
    total_submissions: int


def count_for(task: models.TaskRow) -> int:
    return num_vertices(task.topology) if task.kind == "human_contact" else points_count(task.topology)


def decode_layer(task: models.TaskRow, encoding: str, data: bytes) -> np.ndarray:
    """One label as a (V,) bool mask (human contact) or (N,) float32 values (object)."""
    array = codec.decode(encoding, data)
    return codec.ids_to_mask(array, count_for(task)) if encoding == "ids" else array


def load_task_annotations(store: Store, only_qualified: bool = False,
                          task_ids: list[int] | None = None) -> dict[int, TaskAnnotations]:
    """Every task's submissions (or only ``task_ids``'), decoded, in one pass over the layers table."""
    sub, layer = models.SubmissionRow, models.SubmissionLayerRow
    query = (select(sub.task_id, sub.annotator_id, sub.id, layer.label, layer.encoding, layer.data)
             .join(layer, layer.submission_id == sub.id).order_by(sub.task_id, sub.id))
    if task_ids is not None:
        query = query.where(sub.task_id.in_([int(task_id) for task_id in task_ids]))
    if only_qualified:
        query = query.join(models.AnnotatorRow, models.AnnotatorRow.id == sub.annotator_id) \
                     .where(models.AnnotatorRow.qualification == "qualified")
    with store.session() as session:
        tasks = {row.id: row for row in session.scalars(select(models.TaskRow))}
        return {task_id: stack_task(tasks[task_id], list(rows))
                for task_id, rows in groupby(session.execute(query), key=lambda row: row[0])}


def stack_task(task: models.TaskRow, rows: list) -> TaskAnnotations:
    """Fill one (A, L, V) array from a task's layer rows (ordered by submission)."""
    labels = tuple(task.labels)
    submissions = list(dict.fromkeys((row[2], row[1]) for row in rows))  # (submission id, annotator id)
    order = {submission_id: index for index, (submission_id, _) in enumerate(submissions)}
    is_ids = rows[0][4] == "ids"
    layers = np.zeros((len(submissions), len(labels), count_for(task)), dtype=bool if is_ids else np.float32)
    for _, _, submission_id, label, encoding, data in rows:
        if encoding == "ids":
            layers[order[submission_id], labels.index(label), codec.decode_ids(data)] = True
        else:
            layers[order[submission_id], labels.index(label)] = codec.decode_values(data)
    return TaskAnnotations(task_id=task.id, kind=task.kind, topology=task.topology, labels=labels,
                           annotator_ids=tuple(annotator for _, annotator in submissions), layers=layers)


def gold_answers(store: Store) -> dict[int, np.ndarray]:
    """task id -> (L, V) bool or (L, N) float32 reference answer, for gold tasks that have one."""
    with store.session() as session:
        tasks = {row.id: row for row in session.scalars(select(models.TaskRow).where(models.TaskRow.is_gold))}
        found: dict[int, dict] = defaultdict(dict)
        for row in session.scalars(select(models.GoldLayerRow)):
            found[row.task_id][row.label] = decode_layer(tasks[row.task_id], row.encoding, row.data)
    return {task_id: np.stack([layers[label] for label in tasks[task_id].labels])
            for task_id, layers in found.items() if task_id in tasks}


def gold_accuracy(annotations: dict[int, TaskAnnotations], gold: dict[int, np.ndarray]) -> dict[int, list[float]]:
    """annotator id -> IoU of each of their gold submissions (mean over the task's labels)."""
    scores: dict[int, list[float]] = defaultdict(list)
    for task_id, reference in gold.items():
        if task_id not in annotations:
            continue
        entry = annotations[task_id]
        binary_reference = reference if reference.dtype == bool else qc.binarise(reference)
        for index, annotator_id in enumerate(entry.annotator_ids):
            mine = entry.layers[index] if entry.layers.dtype == bool else qc.binarise(entry.layers[index])
            scores[annotator_id].append(float(np.mean([qc.vertex_iou(mine[k], binary_reference[k])
                                                       for k in range(len(entry.labels))])))
    return scores


def quality_report(store: Store) -> QualityReport:
    annotations = load_task_annotations(store)
    scores = gold_accuracy(annotations, gold_answers(store))
    with store.session() as session:
        flags = dict(session.execute(select(models.AssignmentRow.task_id, func.count())
                                     .where(models.AssignmentRow.status == "flagged")
                                     .group_by(models.AssignmentRow.task_id)).all())
        people = session.scalars(select(models.AnnotatorRow).order_by(models.AnnotatorRow.id)).all()
        seconds: dict[int, list[float]] = defaultdict(list)
        for annotator_id, spent in session.execute(select(models.SubmissionRow.annotator_id,
                                                          models.SubmissionRow.seconds_spent)):
            seconds[annotator_id].append(spent)
        task_ids = sorted(set(annotations) | set(flags))
    tasks = tuple(TaskQuality(task_id=task_id, submissions=len(annotations[task_id].annotator_ids)
                              if task_id in annotations else 0, flags=flags.get(task_id, 0),
                              agreement=qc.agreement(annotations[task_id].masks()) if task_id in annotations
                              else qc.Agreement(0, float("nan"), float("nan")))
                  for task_id in task_ids)
    annotators = tuple(AnnotatorQuality(
        annotator_id=person.id, external_id=person.external_id, qualification=person.qualification,
        submissions=len(seconds[person.id]), gold_submissions=len(scores[person.id]),
        gold_accuracy=float(np.mean(scores[person.id])) if scores[person.id] else float("nan"),
        median_seconds=float(np.median(seconds[person.id])) if seconds[person.id] else float("nan"))
        for person in people)
    return QualityReport(annotators=annotators, tasks=tasks, total_submissions=sum(len(v) for v in seconds.values()))


def annotator_weights(report: QualityReport) -> dict[int, float]:
    """Gold accuracy per annotator; those without gold get the mean of the known ones (1.0 if none)."""
    known = {a.annotator_id: a.gold_accuracy for a in report.annotators if a.gold_submissions}
    fallback = float(np.mean(list(known.values()))) if known else 1.0
    return {a.annotator_id: known.get(a.annotator_id, fallback) for a in report.annotators}


def aggregate(entry: TaskAnnotations, weights: dict[int, float] | None = None) -> np.ndarray:
    """One label per task: (L, V) bool majority for human contact, (L, N) float32 mean for objects."""
    w = None if weights is None else np.array([weights[a] for a in entry.annotator_ids], dtype=np.float64)
    if w is not None and w.sum() <= 0:
        w = None  # every voter scored 0 on gold: fall back to an unweighted vote rather than nothing
    if entry.layers.dtype == bool:
        return np.stack([qc.majority_vote(entry.layers[:, k], w) for k in range(len(entry.labels))])
    return np.stack([qc.weighted_mean(entry.layers[:, k], w) for k in range(len(entry.labels))]).astype(np.float32)


def throughput(store: Store, bucket_seconds: int = 60, buckets: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Submissions per bucket over the last ``buckets * bucket_seconds``: (B,) bucket starts, (B,) counts.

    Bucket starts are seconds before now (negative, oldest first); the newest bucket ends now.
    """
    if not 1 <= bucket_seconds <= 86_400 or not 1 <= buckets <= 10_000:
        raise ValueError("bucket_seconds must be in [1, 86400] and buckets in [1, 10000]")
    now = utcnow()
    since = now - timedelta(seconds=bucket_seconds * buckets)
    with store.session() as session:
        times = session.scalars(select(models.SubmissionRow.created_at)
                                .where(models.SubmissionRow.created_at >= since)).all()
    ages = np.array([(now - created).total_seconds() for created in times], dtype=np.float64)
    index = np.clip(buckets - 1 - (ages // bucket_seconds).astype(int), 0, buckets - 1)
    counts = np.bincount(index, minlength=buckets)
    starts = -bucket_seconds * np.arange(buckets, 0, -1)
    return starts, counts
