"""The annotator workflow: next task, submit, skip, flag.

Rules:
- A task holds ``redundancy`` slots. A slot is taken by an assignment that is open or submitted;
  skipping, flagging or letting it expire (``StoreConfig.assignment_timeout_s``) frees it.
- Nobody gets the same task twice (a unique constraint backs this up).
- Every round(1/gold_rate)-th task of an annotator comes from the gold pool when one is left.
  Gold tasks have no slot limit: every annotator is measured on them.
- Higher priority first, then the oldest task. Only the crowd pool is served: tasks made from the public
  demo (pool "demo") stay with the visitor who made them until an admin promotes them.
- Unverified annotators (no signed link, no login) lose open assignments after
  ``StoreConfig.unverified_timeout_s`` when that is set; demo-pool assignments never expire.
- An annotator who reloads gets their open assignment back instead of a new one.
- ``submit`` is idempotent by the client's submission key: a repeated key returns the first receipt.
"""
from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from typing import Mapping

import numpy as np
from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annotations import codec, models
from annotations.domain import Assignment, SubmissionReceipt
from annotations.errors import NotAssignedError, PayloadError, UnknownAnnotatorError
from annotations.store import Store, task_row_or_error, utcnow
from engine.body.topology import num_vertices

FLAG_REASONS = ("image_unusable", "no_contact_visible")
MAX_CLIENT_INFO_BYTES = 4096
MAX_SECONDS = 24 * 3600.0
_RETRIES = 3
EXPIRY_CHECK_S = 5.0


def next_task(store: Store, annotator_id: int) -> Assignment | None:
    """Assign the next task to this annotator (or hand back their open one); None when nothing is left."""
    for attempt in range(_RETRIES):
        try:
            return _next_task_once(store, annotator_id)
        except IntegrityError:  # the same annotator claimed the same task from two tabs at once
            if attempt == _RETRIES - 1:
                raise
    return None


def assign_task(store: Store, annotator_id: int, task_id: int) -> Assignment:
    """Hand one particular task to this annotator (the studio's "Correct this"); it takes a slot.

    Raises ``NotAssignedError`` when the annotator already had this task or its slots are full.
    """
    with store.session(write=True) as session:
        annotator_row_or_error(session, annotator_id)
        task = session.scalar(store.lock_for_update(select(models.TaskRow).where(models.TaskRow.id == int(task_id))))
        if task is None:
            task_row_or_error(session, task_id)
        if session.scalar(select(models.AssignmentRow.id).where(models.AssignmentRow.task_id == task.id,
                                                                models.AssignmentRow.annotator_id == annotator_id)):
            raise NotAssignedError(f"task {task.id} was already given to this annotator")
        if not task.is_gold and task.filled >= task.redundancy:
            raise NotAssignedError(f"task {task.id} has all {task.redundancy} of its slots taken")
        row = _assign(session, task.id, annotator_id)
        claimed = (row.id, row.status, row.assigned_at)
        domain_task = store.task_from_row(session, task)
    return Assignment(id=claimed[0], task=domain_task, annotator_id=annotator_id, status=claimed[1],
                      assigned_at=claimed[2])


def _next_task_once(store: Store, annotator_id: int) -> Assignment | None:
    with store.session(write=True) as session:
        annotator_row_or_error(session, annotator_id)
        expire_stale_assignments(store, session)
        row = _open_assignment(session, annotator_id) or _claim(store, session, annotator_id)
        if row is None:
            return None
        claimed = (row.id, row.task_id, row.status, row.assigned_at)
    with store.session() as session:  # reading the task's details needs no write lock
        task = store.task_from_row(session, session.get(models.TaskRow, claimed[1]))
    return Assignment(id=claimed[0], task=task, annotator_id=annotator_id, status=claimed[2], assigned_at=claimed[3])


def open_assignment(store: Store, annotator_id: int) -> Assignment | None:
    """This annotator's open assignment, if any; never claims a new task (demo visitors get only theirs)."""
    with store.session() as session:
        row = _open_assignment(session, annotator_id)
        if row is None:
            return None
        task = store.task_from_row(session, session.get(models.TaskRow, row.task_id))
        return Assignment(id=row.id, task=task, annotator_id=annotator_id, status=row.status,
                          assigned_at=row.assigned_at)


def holds_task(store: Store, annotator_ids, task_id: int) -> bool:
    """Whether any of these annotators was given this task (open or finished)."""
    ids = [int(item) for item in annotator_ids]
    if not ids:
        return False
    with store.session() as session:
        return session.scalar(select(models.AssignmentRow.id).where(models.AssignmentRow.task_id == int(task_id),
                                                                    models.AssignmentRow.annotator_id.in_(ids))
                              .limit(1)) is not None


def _open_assignment(session: Session, annotator_id: int) -> models.AssignmentRow | None:
    return session.scalar(select(models.AssignmentRow)
                          .where(models.AssignmentRow.annotator_id == annotator_id,
                                 models.AssignmentRow.status == "assigned")
                          .order_by(models.AssignmentRow.id).limit(1))


def _claim(store: Store, session: Session, annotator_id: int) -> models.AssignmentRow | None:
    pools = (True, False) if _gold_turn(session, annotator_id, store.config.gold_rate) else (False, True)
    for gold in pools:
        task = session.scalar(_open_task_query(store, annotator_id, gold))
        if task is not None:
            return _assign(session, task.id, annotator_id)
    return None


def _gold_turn(session: Session, annotator_id: int, rate: float) -> bool:
    """True for the tasks where the running gold share crosses the next whole number."""
    served = session.scalar(select(func.count()).where(models.AssignmentRow.annotator_id == annotator_id))
    return math.floor((served + 1) * rate + 1e-9) > math.floor(served * rate + 1e-9)


def _open_task_query(store: Store, annotator_id: int, gold: bool):
    task = models.TaskRow
    already = exists().where(models.AssignmentRow.task_id == task.id,
                             models.AssignmentRow.annotator_id == annotator_id)
    query = select(task).where(task.is_gold == gold, task.pool == "crowd", ~already)
    if not gold:
        query = query.where(task.filled < task.redundancy)
    query = query.order_by(task.priority.desc(), task.id).limit(1)
    return query if store.dialect == "sqlite" else query.with_for_update(skip_locked=True)


def _assign(session: Session, task_id: int, annotator_id: int) -> models.AssignmentRow:
    row = models.AssignmentRow(task_id=task_id, annotator_id=annotator_id, status="assigned", assigned_at=utcnow())
    session.add(row)
    _change_filled(session, task_id, +1)
    session.flush()
    return row


def _change_filled(session: Session, task_id: int, delta: int) -> None:
    table = models.TaskRow.__table__  # a Core UPDATE: no ORM flush or identity-map sync on the hot path
    session.connection().execute(update(table).where(table.c.id == task_id).values(filled=table.c.filled + delta))


def expire_stale_assignments(store: Store, session: Session) -> int:
    """Free the slots of assignments left open longer than the timeout. Returns how many expired.

    Runs at most once per ``EXPIRY_CHECK_S`` per store (or per tenth of the timeout, when shorter).
    """
    config = store.config
    shortest = min(config.assignment_timeout_s, config.unverified_timeout_s or config.assignment_timeout_s)
    now = time.monotonic()
    if now - store.last_expiry_check < min(EXPIRY_CHECK_S, shortest / 10):
        return 0
    store.last_expiry_check = now
    assignment, task, annotator = models.AssignmentRow, models.TaskRow, models.AnnotatorRow
    cutoff = utcnow() - timedelta(seconds=config.assignment_timeout_s)
    stale_rule = assignment.assigned_at < cutoff
    if config.unverified_timeout_s is not None:
        unverified = select(annotator.id).where(annotator.verified == False)  # noqa: E712 (SQL, not Python)
        quick_cutoff = utcnow() - timedelta(seconds=config.unverified_timeout_s)
        stale_rule = stale_rule | ((assignment.assigned_at < quick_cutoff) & assignment.annotator_id.in_(unverified))
    demo = select(task.id).where(task.pool == "demo")
    stale = session.scalars(store.lock_for_update(
        select(assignment).where(assignment.status == "assigned", stale_rule, ~assignment.task_id.in_(demo)))).all()
    for row in stale:
        row.status = "expired"
        _change_filled(session, row.task_id, -1)
    return len(stale)


def submit(store: Store, annotator_id: int, task_id: int, layers: Mapping, submission_key: str, *,
           seconds_spent: float | None = None, client_info: Mapping | None = None,
           topology: str | None = None) -> SubmissionReceipt:
    """Store one annotation. ``layers``: label -> vertex ids (human contact) or per-point values (object).

    Labels of the task that are absent count as "no contact". ``topology``, when the client sends it,
    must be the task's. Raises ``PayloadError`` for a malformed payload and ``NotAssignedError`` when
    the annotator holds no open assignment for the task.
    """
    key = _check_key(submission_key)
    info = _check_client_info(client_info)
    for attempt in range(_RETRIES):
        try:
            return _submit_once(store, annotator_id, task_id, layers, key, seconds_spent, info, topology)
        except IntegrityError:  # the same key raced in from a second request: the first one won
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _submit_once(store, annotator_id, task_id, layers, key, seconds_spent, info, topology) -> SubmissionReceipt:
    with store.session(write=True) as session:
        earlier = session.scalar(select(models.SubmissionRow).where(models.SubmissionRow.submission_key == key))
        if earlier is not None:
            return _receipt_for_repeat(earlier, annotator_id, task_id)
        annotator_row_or_error(session, annotator_id)
        task = task_row_or_error(session, task_id)
        if topology is not None and topology != task.topology:
            raise PayloadError(f"the annotation was made on {topology!r} but task {task.id} uses {task.topology!r}")
        encoded = encode_layers(task, layers)
        assignment = _claimable_assignment(store, session, task, annotator_id)
        now = utcnow()
        spent = _check_seconds(seconds_spent, default=(now - assignment.assigned_at).total_seconds())
        row = models.SubmissionRow(submission_key=key, assignment_id=assignment.id, task_id=task.id,
                                   annotator_id=annotator_id, prediction_id=task.prediction_id,
                                   seconds_spent=spent, client_info=info, created_at=now)
        session.add(row)
        session.flush()
        session.add_all(models.SubmissionLayerRow(submission_id=row.id, label=label, encoding=encoding, data=data)
                        for label, (encoding, data) in encoded.items())
        assignment.status, assignment.finished_at, assignment.seconds_spent = "submitted", now, spent
        session.flush()
        return SubmissionReceipt(submission_id=row.id, submission_key=key, task_id=task.id,
                                 annotator_id=annotator_id, created_at=now, duplicate=False)


def _receipt_for_repeat(row: models.SubmissionRow, annotator_id: int, task_id: int) -> SubmissionReceipt:
    if row.annotator_id != annotator_id or row.task_id != int(task_id):
        raise PayloadError("this submission key was already used for another task or annotator; use a fresh key")
    return SubmissionReceipt(submission_id=row.id, submission_key=row.submission_key, task_id=row.task_id,
                             annotator_id=row.annotator_id, created_at=row.created_at, duplicate=True)


def _claimable_assignment(store: Store, session: Session, task: models.TaskRow,
                          annotator_id: int) -> models.AssignmentRow:
    row = session.scalar(store.lock_for_update(
        select(models.AssignmentRow).where(models.AssignmentRow.task_id == task.id,
                                           models.AssignmentRow.annotator_id == annotator_id)))
    if row is None:
        raise NotAssignedError(f"task {task.id} is not assigned to this annotator; ask for the next task first")
    if row.status == "expired":
        _reclaim_expired(store, session, task, row)
    elif row.status != "assigned":
        raise NotAssignedError(f"task {task.id} was already {row.status} by this annotator")
    return row


def _reclaim_expired(store: Store, session: Session, task: models.TaskRow, row: models.AssignmentRow) -> None:
    locked = session.scalar(store.lock_for_update(select(models.TaskRow).where(models.TaskRow.id == task.id)))
    session.refresh(locked)
    if not locked.is_gold and locked.filled >= locked.redundancy:
        raise NotAssignedError(f"your assignment of task {task.id} expired and others have filled it")
    row.status = "assigned"
    _change_filled(session, task.id, +1)


def skip(store: Store, annotator_id: int, task_id: int) -> None:
    """Give the task back; its slot goes to someone else."""
    _finish_without_submission(store, annotator_id, task_id, "skipped", None)


def flag(store: Store, annotator_id: int, task_id: int, reason: str) -> None:
    """Report a task as unusable (``FLAG_REASONS``). Exports can exclude flagged tasks."""
    if reason not in FLAG_REASONS:
        raise PayloadError(f"flag reason must be one of {FLAG_REASONS}, got {reason!r}")
    _finish_without_submission(store, annotator_id, task_id, "flagged", reason)


def _finish_without_submission(store: Store, annotator_id: int, task_id: int, status: str,
                               reason: str | None) -> None:
    with store.session(write=True) as session:
        annotator_row_or_error(session, annotator_id)
        task = task_row_or_error(session, task_id)
        row = _claimable_assignment(store, session, task, annotator_id)
        row.status, row.flag_reason, row.finished_at = status, reason, utcnow()
        _change_filled(session, task.id, -1)


# ---- payload validation ------------------------------------------------------------------------
def encode_layers(task: models.TaskRow, layers: Mapping) -> dict[str, tuple[str, bytes]]:
    """Validate a submission against its task and encode it: label -> (encoding, bytes)."""
    return encode_payload(task.kind, task.topology, tuple(task.labels), layers, f"the payload for task {task.id}")


def encode_payload(kind: str, topology: str, labels: tuple[str, ...], layers: Mapping,
                   what: str) -> dict[str, tuple[str, bytes]]:
    """Every label's annotation, checked and encoded; absent labels mean no contact (human contact).

    Human contact: vertex ids -> ("ids", uint32 bytes). Object affordance: one value per point ->
    ("values", float32 bytes). Used for submissions and for gold answers alike.
    """
    if not isinstance(layers, Mapping):
        raise PayloadError(f"{what} must map each object label to its annotation")
    check_known_labels(layers, labels, what)
    if kind == "human_contact":
        count = num_vertices(topology)
        return {label: ("ids", codec.encode_ids(check_ids(layers.get(label, ()), count, topology, label)))
                for label in labels}
    count = points_count(topology)
    return {label: ("values", codec.encode_values(check_point_values(layers.get(label), count, label)))
            for label in labels}


def check_known_labels(layers: Mapping, labels: tuple[str, ...], what: str) -> None:
    unknown = sorted(str(label) for label in layers if label not in labels)
    if unknown:
        raise PayloadError(f"{what} has unknown label(s) {unknown}; the labels are {list(labels)}")


def check_ids(ids, count: int, topology: str, label: str) -> np.ndarray:
    """(K,) unique sorted int64 vertex ids, each in 0..count-1."""
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise PayloadError(f"label {label!r}: vertex ids must be a list of integers")
    if len(ids) > count:
        raise PayloadError(f"label {label!r}: {len(ids)} vertex ids, but {topology} has only {count} vertices")
    try:
        array = np.asarray(ids)
    except (ValueError, TypeError, OverflowError):  # ragged lists, huge numbers
        raise PayloadError(f"label {label!r}: vertex ids must be a flat list of integers") from None
    if array.size and (array.ndim != 1 or array.dtype.kind not in "iu"):
        raise PayloadError(f"label {label!r}: vertex ids must be a flat list of integers")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= count):
        raise PayloadError(f"label {label!r}: vertex ids must be in 0..{count - 1} for {topology}; "
                           f"got range [{array.min()}, {array.max()}]")
    return np.unique(array)


def check_point_values(values, count: int, label: str) -> np.ndarray:
    """(N,) float values in [0, 1], one per object point."""
    if values is None:
        raise PayloadError(f"label {label!r}: per-point values are required ({count} numbers in [0, 1])")
    array = np.asarray(values, dtype=np.float64) if hasattr(values, "__len__") else np.empty(0)
    if array.shape != (count,):
        raise PayloadError(f"label {label!r}: expected {count} per-point values, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
        raise PayloadError(f"label {label!r}: per-point values must be finite and in [0, 1]")
    return array


def points_count(topology: str) -> int:
    return int(topology.removeprefix("points-"))


def annotator_row_or_error(session: Session, annotator_id: int) -> models.AnnotatorRow:
    row = session.get(models.AnnotatorRow, annotator_id)
    if row is None:
        raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
    return row


def _check_key(key) -> str:
    if not isinstance(key, str) or not 8 <= len(key) <= 128 or not key.isprintable():
        raise PayloadError("submission_key must be a printable string of 8-128 characters (e.g. a UUID)")
    return key


def _check_client_info(info) -> dict:
    info = dict(info or {})
    try:
        text = json.dumps(info, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise PayloadError(f"client_info must be plain JSON: {error}") from None
    if len(text.encode()) > MAX_CLIENT_INFO_BYTES:
        raise PayloadError(f"client_info is larger than {MAX_CLIENT_INFO_BYTES} bytes")
    return json.loads(text)


def _check_seconds(seconds, default: float) -> float:
    if seconds is None:
        return max(0.0, min(default, MAX_SECONDS))
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise PayloadError(f"seconds_spent must be a number, got {seconds!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise PayloadError(f"seconds_spent must be in 0..{MAX_SECONDS:.0f}, got {seconds!r}")
    return value
