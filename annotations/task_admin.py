"""The admin's task bookkeeping: a filtered task list, priorities, retiring tasks or batches, promoting demo tasks.

A retired task moves to the "retired" pool (``models.RETIRED_POOL``): ``next_task`` serves only the crowd
pool, so nobody is handed it again; its submissions stay and still export. Open assignments on it may
still be submitted (an annotator is never cut off mid-stroke). Only demo-pool tasks can be promoted to
the crowd pool. Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import func, select, update

from annotations import models, qc
from annotations.review import load_task_annotations
from annotations.store import Store, task_row_or_error
from engine.errors import InputError

STATUSES = ("open", "complete", "retired", "demo")
MAX_LISTED = 500
PRIORITY_LIMIT = 10**6


@dataclass(frozen=True)
class TaskFilters:
    """Which tasks the list shows; None: any. ``min_kappa`` / ``max_kappa`` drop tasks without an agreement
    (fewer than two submissions). ``status``: one of ``STATUSES``."""

    batch_id: int | None = None
    status: str | None = None
    topology: str | None = None
    min_kappa: float | None = None
    max_kappa: float | None = None

    def __post_init__(self):
        if self.status is not None and self.status not in STATUSES:
            raise InputError(f"status must be one of {', '.join(STATUSES)}, got {str(self.status)[:40]!r}")
        for name in ("min_kappa", "max_kappa"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and -1 <= value <= 1):
                raise InputError(f"the agreement bounds are Fleiss' kappa values in [-1, 1], got {value}")


@dataclass(frozen=True)
class ListedTask:
    """One row of the task list. ``kappa`` is None with fewer than two submissions."""

    task_id: int
    batch_id: int | None
    batch_name: str
    kind: str
    labels: tuple[str, ...]
    topology: str
    pool: str
    status: str
    priority: int
    redundancy: int
    submissions: int
    flags: int
    kappa: float | None
    image_name: str


def task_status(pool: str, is_gold: bool, submissions: int, redundancy: int) -> str:
    if pool == models.RETIRED_POOL:
        return "retired"
    if pool == "demo":
        return "demo"
    return "complete" if not is_gold and submissions >= redundancy else "open"


def list_tasks(store: Store, filters: TaskFilters = TaskFilters(), limit: int = MAX_LISTED) -> list[ListedTask]:
    """The tasks passing ``filters``, newest first, at most ``limit``."""
    task, batch, image = models.TaskRow, models.BatchRow, models.ImageRow
    query = (select(task.id, task.batch_id, batch.name, task.kind, task.labels, task.topology, task.pool, task.priority,
                    task.redundancy, task.is_gold, image.original_name)
             .join(image, image.id == task.image_id).outerjoin(batch, batch.id == task.batch_id)
             .order_by(task.id.desc()))
    if filters.batch_id is not None:
        query = query.where(task.batch_id == filters.batch_id)
    if filters.topology is not None:
        query = query.where(task.topology == filters.topology)
    with store.session() as session:
        rows = session.execute(query).all()
        submissions = dict(session.execute(select(models.SubmissionRow.task_id, func.count())
                                           .group_by(models.SubmissionRow.task_id)).all())
        flags = dict(session.execute(select(models.AssignmentRow.task_id, func.count())
                                     .where(models.AssignmentRow.status == "flagged")
                                     .group_by(models.AssignmentRow.task_id)).all())
    listed = []
    for row in rows:
        count = submissions.get(row.id, 0)
        status = task_status(row.pool, row.is_gold, count, row.redundancy)
        if filters.status is not None and status != filters.status:
            continue
        listed.append(ListedTask(row.id, row.batch_id, row.name or "", row.kind, tuple(row.labels), row.topology,
                                 row.pool, status, row.priority, row.redundancy, count, flags.get(row.id, 0), None,
                                 row.original_name))
    wants_kappa = filters.min_kappa is not None or filters.max_kappa is not None
    scored = listed if wants_kappa else listed[:limit]
    kappas = agreement_of(store, [item.task_id for item in scored if item.submissions >= 2])
    chosen = []
    for item in scored:
        kappa = kappas.get(item.task_id)
        if wants_kappa and (kappa is None or filters.min_kappa is not None and kappa < filters.min_kappa
                            or filters.max_kappa is not None and kappa > filters.max_kappa):
            continue
        chosen.append(ListedTask(**{**item.__dict__, "kappa": kappa}))
        if len(chosen) >= limit:
            break
    return chosen


def agreement_of(store: Store, task_ids: list[int]) -> dict[int, float]:
    """Fleiss' kappa of each task (tasks whose kappa is undefined are left out)."""
    if not task_ids:
        return {}
    entries = load_task_annotations(store, task_ids=task_ids)
    kappas = {task_id: qc.agreement(entry.masks()).fleiss_kappa for task_id, entry in entries.items()}
    return {task_id: round(float(value), 4) for task_id, value in kappas.items() if math.isfinite(value)}


def batches(store: Store) -> list[tuple[int, str, int]]:
    """(id, name, tasks) of every batch, newest first."""
    with store.session() as session:
        return [tuple(row) for row in session.execute(select(models.BatchRow.id, models.BatchRow.name,
                                                             models.BatchRow.num_tasks)
                                                      .order_by(models.BatchRow.id.desc()))]


def topologies(store: Store) -> list[str]:
    with store.session() as session:
        return sorted(session.scalars(select(models.TaskRow.topology).distinct()))


def set_priority(store: Store, task_id: int, priority) -> int:
    """Change a task's priority (higher is served first); returns the new priority."""
    try:
        value = int(priority)
    except (TypeError, ValueError):
        raise InputError("the priority must be a whole number") from None
    if not -PRIORITY_LIMIT <= value <= PRIORITY_LIMIT:
        raise InputError(f"the priority must be in {-PRIORITY_LIMIT}..{PRIORITY_LIMIT}, got {value}")
    with store.session(write=True) as session:
        task_row_or_error(session, task_id).priority = value
    return value


def retire_task(store: Store, task_id: int) -> None:
    """Nobody is handed the task again (its submissions stay)."""
    with store.session(write=True) as session:
        task_row_or_error(session, task_id).pool = models.RETIRED_POOL


def retire_batch(store: Store, batch_id: int) -> int:
    """Retire every task of a batch; returns how many were still served (crowd pool) before."""
    with store.session(write=True) as session:
        if session.get(models.BatchRow, batch_id) is None:
            raise InputError(f"no batch with id {batch_id}")
        result = session.execute(update(models.TaskRow)
                                 .where(models.TaskRow.batch_id == batch_id, models.TaskRow.pool != models.RETIRED_POOL)
                                 .values(pool=models.RETIRED_POOL))
        return result.rowcount


def promote_demo_task(store: Store, task_id: int):
    """A demo-made task ("Correct this", "Paint instead") joins the crowd pool; only demo tasks can."""
    with store.session() as session:
        pool = task_row_or_error(session, task_id).pool
    if pool != "demo":
        raise InputError(f"task {task_id} is not a demo task (it is in the {pool} pool); only demo tasks are promoted")
    return store.promote_task(task_id)
