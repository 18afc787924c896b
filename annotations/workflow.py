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

``next_task`` and ``submit`` are the hot path: SQLAlchemy Core statements compiled once and run on the DBAPI
cursor (``Store.raw_transaction``, ``annotations.rawsql``), with the task's details read in the same statement
that picks it and its prediction decoded once per store. On PostgreSQL each is ONE autocommitted statement
(data-modifying CTEs: one round trip, no BEGIN / COMMIT); a submission that this statement does not store
(a resent key, an expired or finished assignment, an error) goes on to the step-by-step transaction, which
SQLite always runs (one transaction of four statements under ``BEGIN IMMEDIATE``).
"""
from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import numpy as np
from sqlalchemy import (JSON, DateTime, Float, Integer, LargeBinary, String, bindparam, cast, exists, extract, func,
                        insert, literal, or_, select, union_all, update)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annotations import codec, models
from annotations.domain import Assignment, SubmissionReceipt
from annotations.errors import NotAssignedError, PayloadError, UnknownAnnotatorError
from annotations.rawsql import RawTransaction
from annotations.store import (TASK_DETAILS, TASK_SELECT, Store, task_row_or_error, unknown_task_error,
                               utcnow, valid_id)
from engine.body.topology import num_vertices

FLAG_REASONS = ("image_unusable", "no_contact_visible")
# What the annotator reads for each reason; a typed reason is stored as "other: <text>" (within the 64-character
# column, so at most MAX_TYPED_REASON characters of text).
FLAG_REASON_WORDS = {"image_unusable": "The image is unusable (broken, blurred, no person or object)",
                     "no_contact_visible": "No contact is visible in the image"}
OTHER_REASON = "other: "
MAX_TYPED_REASON = 64 - len(OTHER_REASON)
MAX_CLIENT_INFO_BYTES = 4096
MAX_SECONDS = 24 * 3600.0
_RETRIES = 3
EXPIRY_CHECK_S = 5.0

# Core tables of the hot path.
ASSIGNMENTS, TASKS, ANNOTATORS = (models.AssignmentRow.__table__, models.TaskRow.__table__,
                                  models.AnnotatorRow.__table__)
SUBMISSIONS, SUBMISSION_LAYERS = models.SubmissionRow.__table__, models.SubmissionLayerRow.__table__


class HotStatements:
    """The hot path's statements, built once per dialect with bind parameters (no per-call construction).

    Written with SQLAlchemy Core; ``next_task`` and ``submit`` run them compiled on the DBAPI cursor
    (``Store.raw`` / ``annotations.rawsql``), the ORM paths run ``change_filled`` through SQLAlchemy.
    ``single_statement``: the backend runs ``claim_on`` and ``submit_at_once`` (PostgreSQL: data-modifying
    CTEs); otherwise next_task and submit run their steps one by one.

    Row locks on PostgreSQL are ``FOR UPDATE``, not ``FOR NO KEY UPDATE``: with the weaker lock (which lets
    a submission's foreign-key check, ``FOR KEY SHARE``, share the task's row), the concurrent-writers test
    deadlocked while locking an updated version of a task row, where ``SKIP LOCKED`` does not skip.
    """

    def __init__(self, dialect: str):
        a, t, subs = ASSIGNMENTS, TASKS, SUBMISSIONS
        row_locks = dialect != "sqlite"  # SQLite writers are serialised by BEGIN IMMEDIATE already
        self.single_statement = dialect == "postgresql"
        annotator = bindparam("annotator", type_=Integer)
        # The annotator exists, how many tasks it was served, its open assignment if any.
        served = select(func.count()).where(a.c.annotator_id == ANNOTATORS.c.id).scalar_subquery()
        open_id = (select(a.c.id).where(a.c.annotator_id == ANNOTATORS.c.id, a.c.status == "assigned")
                   .order_by(a.c.id).limit(1).scalar_subquery())
        self.annotator_head = select(ANNOTATORS.c.id, served.label("served"), open_id.label("open_id")).where(
            ANNOTATORS.c.id == annotator)
        self.assignment = select(a.c.id, a.c.task_id, a.c.status, a.c.assigned_at).where(a.c.id == bindparam("id_"))
        self.task_details = TASK_DETAILS
        self.row_locks = row_locks
        self.open_task = {gold: self._open_task(gold, row_locks) for gold in (True, False)}
        self.insert_assignment = insert(a).values(
            task_id=bindparam("task_id"), annotator_id=bindparam("annotator_id"), status="assigned",
            assigned_at=bindparam("assigned_at")).returning(a.c.id)
        self.change_filled = (update(t).where(t.c.id == bindparam("task"))
                              .values(filled=t.c.filled + bindparam("delta")))
        slots = select(t.c.filled, t.c.redundancy, t.c.is_gold).where(t.c.id == bindparam("task"))
        self.task_slots = slots.with_for_update() if row_locks else slots
        self.by_key = (select(subs.c.id, subs.c.submission_key, subs.c.task_id, subs.c.annotator_id, subs.c.created_at)
                       .where(subs.c.submission_key == bindparam("key")))
        # The task and this annotator's assignment of it (on PostgreSQL the assignment row is locked:
        # other annotators of the same task go on).
        earlier = select(subs.c.id).where(subs.c.submission_key == bindparam("key")).scalar_subquery()
        held = (select(t.c.id, t.c.kind, t.c.topology, t.c.labels, t.c.prediction_id,
                       a.c.id.label("assignment_id"), a.c.status, a.c.assigned_at, earlier.label("earlier"))
                .select_from(t.join(a, a.c.task_id == t.c.id))
                .where(t.c.id == bindparam("task"), a.c.annotator_id == annotator))
        self.held_assignment = held.with_for_update(of=a) if row_locks else held
        self.insert_submission = insert(subs).values(
            **{name: bindparam(name) for name in ("submission_key", "assignment_id", "task_id", "annotator_id",
                                                 "prediction_id", "seconds_spent", "client_info", "created_at")}
        ).returning(subs.c.id)
        self.insert_layers = insert(SUBMISSION_LAYERS).values(
            **{name: bindparam(name) for name in ("submission_id", "label", "encoding", "data")})
        self.mark_submitted = (update(a).where(a.c.id == bindparam("id_"))
                               .values(status="submitted", finished_at=bindparam("finished"),
                                       seconds_spent=bindparam("spent")))
        self.submit_at_once = self._submit_statement() if self.single_statement else None

    @functools.lru_cache(maxsize=64)
    def open_task_on(self, gold: bool, bodies: frozenset[str] | None):
        """``open_task`` limited to human-contact tasks on these body topologies (object tasks always pass)."""
        return self.open_task[gold] if bodies is None else self._open_task(gold, self.row_locks, bodies)

    @staticmethod
    def _open_task(gold: bool, row_locks: bool, bodies: frozenset[str] | None = None, query=TASK_SELECT):
        """The first task of ``query`` (default: its details) that this annotator may claim from the gold or
        the crowd pool, in serving order; on PostgreSQL its row is locked and locked rows are skipped."""
        task = TASKS
        already = select(ASSIGNMENTS.c.id).where(ASSIGNMENTS.c.task_id == task.c.id,
                                                 ASSIGNMENTS.c.annotator_id == bindparam("annotator", type_=Integer))
        # PostgreSQL: OFFSET 0 keeps the check a probe of the (task, annotator) unique index per candidate
        # task; as an anti-join the planner compares every open task with every assignment of the annotator.
        already = (already.offset(0) if row_locks else already).exists()
        query = query.where(task.c.is_gold == gold, task.c.pool == "crowd", ~already)
        if bodies is not None:
            query = query.where(or_(task.c.kind != "human_contact",
                                    *[task.c.topology == topology for topology in sorted(bodies)]))
        if not gold:
            query = query.where(task.c.filled < task.c.redundancy)
        query = query.order_by(task.c.priority.desc(), task.c.id).limit(1)
        return query.with_for_update(skip_locked=True, of=task) if row_locks else query

    @functools.lru_cache(maxsize=64)
    def claim_on(self, bodies: frozenset[str] | None):
        """next_task in ONE statement (PostgreSQL): the annotator's open assignment if any, else claim the
        first open task (gold first on a gold turn, the other pool when one is empty), insert its assignment
        and take its slot. One row: the task's ``TASK_SELECT`` columns + assignment_id, assigned_at; no row
        when nothing is left or the annotator is unknown. Binds: annotator, gold_rate, assigned_at."""
        a, t = ASSIGNMENTS, TASKS
        me = self.annotator_head.cte("me")
        # No open assignment (and the annotator exists): an uncorrelated EXISTS, checked once.
        free = exists(select(me.c.id).where(me.c.open_id.is_(None)))
        turn = select(_gold_turn(me.c.served, bindparam("gold_rate", type_=Float), func.floor)).scalar_subquery()
        gold, crowd = (self._open_task(pool_is_gold, True, bodies, select(t.c.id).where(free)).cte(name)
                       for pool_is_gold, name in ((True, "gold_pick"), (False, "crowd_pick")))
        # UNION ALL runs its branches in order and LIMIT 1 stops at the first row: a pool is only read
        # (and a row in it only locked) when the ones before it had nothing.
        pick = union_all(select(gold.c.id).where(turn), select(crowd.c.id), select(gold.c.id).where(~turn)) \
            .limit(1).cte("pick")
        now = bindparam("assigned_at", type_=DateTime)
        claimed = (insert(a).from_select(["task_id", "annotator_id", "status", "assigned_at"],
                                         select(pick.c.id, bindparam("annotator", type_=Integer), literal("assigned"),
                                                now))
                   .returning(a.c.id, a.c.task_id, a.c.assigned_at).cte("claimed"))
        take_slot = update(t).where(t.c.id == claimed.c.task_id).values(filled=t.c.filled + 1).cte("take_slot")
        held = union_all(select(a.c.id, a.c.task_id, a.c.assigned_at)
                         .where(a.c.id == select(me.c.open_id).scalar_subquery()),
                         select(claimed.c.id, claimed.c.task_id, claimed.c.assigned_at)).cte("held")
        return (TASK_SELECT.add_columns(held.c.id.label("assignment_id"), held.c.assigned_at)
                .where(t.c.id == held.c.task_id).add_cte(take_slot))

    @staticmethod
    def _submit_statement():
        """submit in ONE statement (PostgreSQL): when this annotator holds the task's assignment open and the
        key is new, insert the submission and its layers and mark the assignment submitted. One row (the
        submission id), or none when any of that does not hold (the step-by-step path then says why).
        Binds: task, annotator, key, now, spent (None: the time since the assignment, at most MAX_SECONDS),
        client_info, labels / encodings / datas (one entry per layer)."""
        a, t, subs = ASSIGNMENTS, TASKS, SUBMISSIONS
        key, now = bindparam("key", type_=String), bindparam("now", type_=DateTime)
        annotator = bindparam("annotator", type_=Integer)
        held = (select(a.c.id, a.c.task_id, t.c.prediction_id, a.c.assigned_at)
                .select_from(a.join(t, t.c.id == a.c.task_id))
                .where(a.c.task_id == bindparam("task", type_=Integer), a.c.annotator_id == annotator,
                       a.c.status == "assigned", ~exists().where(subs.c.submission_key == key))
                .with_for_update(of=a).cte("held"))
        since = cast(extract("epoch", now - held.c.assigned_at), Float)
        spent = func.coalesce(bindparam("spent", type_=Float), func.greatest(0.0, func.least(since, MAX_SECONDS)))
        stored = (insert(subs).from_select(
            ["submission_key", "assignment_id", "task_id", "annotator_id", "prediction_id", "seconds_spent",
             "client_info", "created_at"],
            select(key, held.c.id, held.c.task_id, annotator, held.c.prediction_id, spent,
                   bindparam("client_info", type_=JSON), now))
            .returning(subs.c.id, subs.c.assignment_id, subs.c.seconds_spent).cte("stored"))
        layers = insert(SUBMISSION_LAYERS).from_select(
            ["submission_id", "label", "encoding", "data"],
            select(stored.c.id, func.unnest(bindparam("labels", type_=ARRAY(String))),
                   func.unnest(bindparam("encodings", type_=ARRAY(String))),
                   func.unnest(bindparam("datas", type_=ARRAY(LargeBinary))))).cte("stored_layers")
        mark = (update(a).where(a.c.id == stored.c.assignment_id)
                .values(status="submitted", finished_at=now, seconds_spent=stored.c.seconds_spent).cte("marked"))
        return select(stored.c.id).add_cte(layers, mark)


@functools.lru_cache(maxsize=None)
def hot_statements(dialect: str) -> HotStatements:
    return HotStatements(dialect)


def _retrying(store: Store, operation):
    """Run ``operation`` again when a unique constraint raced (two tabs, one key), the pooled connection
    was dead or PostgreSQL asked for a retry (``Store.retryable_errors``); the last failure propagates."""
    retryable = store.retryable_errors
    for attempt in range(_RETRIES):
        try:
            return operation()
        except retryable:
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def next_task(store: Store, annotator_id: int, bodies=None) -> Assignment | None:
    """Assign the next task to this annotator (or hand back their open one); None when nothing is left.

    ``bodies``: the body topologies the caller can show (the studio: the installed bodies); a human-contact
    task on any other topology is never claimed (None: no limit). An open assignment is handed back as it is.
    """
    bodies = None if bodies is None else frozenset(str(topology) for topology in bodies)
    return _retrying(store, lambda: _next_task_once(store, annotator_id, bodies))


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


def _next_task_once(store: Store, annotator_id: int, bodies: frozenset[str] | None) -> Assignment | None:
    """One statement (PostgreSQL, ``HotStatements.claim_on``) or one write transaction of four (annotator,
    open task, insert assignment, take the slot); the stale-assignment sweep, when due, runs in its own
    transaction just before."""
    if not valid_id(annotator_id):
        raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
    if expiry_due(store):
        with store.transaction(write=True) as connection:
            expire_stale_assignments(store, connection)
    sql = hot_statements(store.dialect)
    if sql.single_statement:
        return _next_task_at_once(store, sql, annotator_id, bodies)
    with store.raw_transaction(write=True) as db:
        found = db.first(store.raw(sql.annotator_head), annotator=annotator_id)
        if found is None:
            raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
        if found.open_id is not None:
            assignment_id, task_id, status, assigned_at = db.first(store.raw(sql.assignment), id_=found.open_id)
            details = db.first(store.raw(sql.task_details), task=task_id)
        else:
            claimed = _claim(store, db, annotator_id, _gold_turn(found.served, store.config.gold_rate), bodies)
            if claimed is None:
                return None
            assignment_id, details, assigned_at = claimed
            status = "assigned"
    return Assignment(id=assignment_id, task=store.task_from_details(None, details), annotator_id=annotator_id,
                      status=status, assigned_at=assigned_at)


def _next_task_at_once(store: Store, sql: HotStatements, annotator_id: int,
                       bodies: frozenset[str] | None) -> Assignment | None:
    with store.raw_transaction(write=True, single=True) as db:
        row = db.first(store.raw(sql.claim_on(bodies)), annotator=annotator_id, gold_rate=store.config.gold_rate,
                       assigned_at=utcnow())
    if row is None:  # nothing left, or no such annotator
        with store.raw_transaction(single=True) as db:
            if db.first(store.raw(sql.annotator_head), annotator=annotator_id) is None:
                raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
        return None
    return Assignment(id=row.assignment_id, task=store.task_from_details(None, row), annotator_id=annotator_id,
                      status="assigned", assigned_at=row.assigned_at)


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


def _claim(store: Store, db: RawTransaction, annotator_id: int, gold_first: bool, bodies: frozenset[str] | None):
    """(assignment id, the task's ``TASK_SELECT`` row, assigned_at) of a newly claimed task, or None."""
    sql = hot_statements(store.dialect)
    for gold in ((True, False) if gold_first else (False, True)):
        details = db.first(store.raw(sql.open_task_on(gold, bodies)), annotator=annotator_id)
        if details is not None:
            now = utcnow()
            assignment_id = db.scalar(store.raw(sql.insert_assignment), task_id=details.id,
                                      annotator_id=annotator_id, assigned_at=now)
            db.execute(store.raw(sql.change_filled), task=details.id, delta=1)
            return assignment_id, details, now
    return None


def _gold_turn(served, rate, floor=math.floor):
    """True for the tasks where the running gold share crosses the next whole number (numbers, or SQL
    expressions with ``floor=func.floor``)."""
    return floor((served + 1) * rate + 1e-9) > floor(served * rate + 1e-9)


def _assign(session: Session, task_id: int, annotator_id: int) -> models.AssignmentRow:
    row = models.AssignmentRow(task_id=task_id, annotator_id=annotator_id, status="assigned", assigned_at=utcnow())
    session.add(row)
    _change_filled(session.connection(), task_id, +1)
    session.flush()
    return row


def _change_filled(connection: Connection, task_id: int, delta: int) -> None:
    connection.execute(hot_statements(connection.dialect.name).change_filled, {"task": task_id, "delta": delta})


def expiry_due(store: Store) -> bool:
    """Whether the stale-assignment sweep is due: at most once per ``EXPIRY_CHECK_S`` per store (or per
    tenth of the timeout, when shorter)."""
    config = store.config
    shortest = min(config.assignment_timeout_s, config.unverified_timeout_s or config.assignment_timeout_s)
    return time.monotonic() - store.last_expiry_check >= min(EXPIRY_CHECK_S, shortest / 10)


def expire_stale_assignments(store: Store, connection: Connection) -> int:
    """Free the slots of assignments left open longer than the timeout. Returns how many expired.

    Does nothing when the sweep is not due (``expiry_due``).
    """
    if not expiry_due(store):
        return 0
    store.last_expiry_check = time.monotonic()
    config = store.config
    assignment, task, annotator = ASSIGNMENTS, TASKS, ANNOTATORS
    cutoff = utcnow() - timedelta(seconds=config.assignment_timeout_s)
    stale_rule = assignment.c.assigned_at < cutoff
    if config.unverified_timeout_s is not None:
        unverified = select(annotator.c.id).where(annotator.c.verified == False)  # noqa: E712 (SQL, not Python)
        quick_cutoff = utcnow() - timedelta(seconds=config.unverified_timeout_s)
        stale_rule = stale_rule | ((assignment.c.assigned_at < quick_cutoff) & assignment.c.annotator_id.in_(unverified))
    demo = select(task.c.id).where(task.c.pool == "demo")
    stale = connection.execute(store.lock_for_update(
        select(assignment.c.id, assignment.c.task_id)
        .where(assignment.c.status == "assigned", stale_rule, ~assignment.c.task_id.in_(demo)))).all()
    for assignment_id, task_id in stale:
        connection.execute(update(assignment).where(assignment.c.id == assignment_id).values(status="expired"))
        _change_filled(connection, task_id, -1)
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
    return _retrying(store, lambda: _submit_once(store, annotator_id, task_id, layers, key, seconds_spent, info,
                                                 topology))


def _submit_once(store, annotator_id, task_id, layers, key, seconds_spent, info, topology) -> SubmissionReceipt:
    """One statement (PostgreSQL, ``HotStatements.submit_at_once``) in the usual case; otherwise (and
    always on SQLite) one write transaction: the held assignment (and an earlier use of the key) in one
    statement, then insert the submission, its layers, and mark the assignment submitted."""
    sql = hot_statements(store.dialect)
    encoded = _encode_ahead(store, task_id, layers, topology)
    if sql.single_statement and encoded is not None and valid_id(annotator_id):
        receipt = _submit_at_once(store, sql, annotator_id, task_id, encoded, key, seconds_spent, info)
        if receipt is not None:
            return receipt
    found = None
    with store.raw_transaction(write=True) as db:
        if valid_id(task_id) and valid_id(annotator_id):
            found = db.first(store.raw(sql.held_assignment), task=task_id, annotator=annotator_id, key=key)
        if found is None or found.earlier is not None:
            earlier = db.first(store.raw(sql.by_key), key=key)
            if earlier is not None:
                return _receipt_for_repeat(earlier, annotator_id, task_id)
        if found is not None:
            if encoded is None:  # the payload (or the topology) is wrong: the same checks again, with their message
                if topology is not None and topology != found.topology:
                    raise PayloadError(f"the annotation was made on {topology!r} but task {found.id} uses "
                                       f"{found.topology!r}")
                encoded = encode_payload(found.kind, found.topology, tuple(found.labels), layers,
                                         f"the payload for task {found.id}")
            if found.status == "expired":
                _reclaim_expired_raw(store, db, found.id)
            elif found.status != "assigned":
                raise NotAssignedError(f"task {found.id} was already {found.status} by this annotator")
            now = utcnow()
            spent = _check_seconds(seconds_spent, default=(now - found.assigned_at).total_seconds())
            submission_id = db.scalar(store.raw(sql.insert_submission), submission_key=key,
                                      assignment_id=found.assignment_id, task_id=found.id, annotator_id=annotator_id,
                                      prediction_id=found.prediction_id, seconds_spent=spent, client_info=info,
                                      created_at=now)
            db.execute_many(store.raw(sql.insert_layers), [
                {"submission_id": submission_id, "label": label, "encoding": encoding, "data": data}
                for label, (encoding, data) in encoded.items()])
            db.execute(store.raw(sql.mark_submitted), id_=found.assignment_id, finished=now, spent=spent)
            return SubmissionReceipt(submission_id=submission_id, submission_key=key, task_id=found.id,
                                     annotator_id=annotator_id, created_at=now, duplicate=False)
    with store.transaction() as connection:  # no assignment: say why, in the order the checks run
        _raise_not_assigned(connection, annotator_id, task_id, layers, topology)
    raise AssertionError("unreachable")


def _submit_at_once(store: Store, sql: HotStatements, annotator_id: int, task_id: int, encoded: dict, key: str,
                    seconds_spent, info: dict) -> SubmissionReceipt | None:
    """The receipt of a submission stored by one statement, or None when it was not stored (no open
    assignment, a used key, a bad ``seconds_spent``: the step-by-step path then answers)."""
    try:
        spent = None if seconds_spent is None else _check_seconds(seconds_spent, default=0.0)
    except PayloadError:
        return None  # reported by the step-by-step path, after the checks that come first
    now = utcnow()
    with store.raw_transaction(write=True, single=True) as db:
        submission_id = db.scalar(store.raw(sql.submit_at_once), task=task_id, annotator=annotator_id, key=key,
                                  now=now, spent=spent, client_info=info, labels=list(encoded),
                                  encodings=[encoding for encoding, _ in encoded.values()],
                                  datas=[data for _, data in encoded.values()])
    if submission_id is None:
        return None
    return SubmissionReceipt(submission_id=submission_id, submission_key=key, task_id=task_id,
                             annotator_id=annotator_id, created_at=now, duplicate=False)


def _encode_ahead(store: Store, task_id, layers, topology) -> dict | None:
    """The payload checked and encoded before the write transaction (it holds SQLite's write lock); None
    when the task is unknown or anything is off, so that the transaction reports it in the usual order."""
    shape = store.task_shape(task_id) if valid_id(task_id) else None
    if shape is None or (topology is not None and topology != shape.topology):
        return None
    try:
        return encode_payload(shape.kind, shape.topology, shape.labels, layers, f"the payload for task {task_id}")
    except PayloadError:
        return None


def _raise_not_assigned(connection: Connection, annotator_id, task_id, layers, topology) -> None:
    """The errors of a submission without an assignment, in the order the checks run: annotator, task,
    topology, payload, and then that the task is not assigned."""
    if not valid_id(annotator_id) or connection.scalar(select(ANNOTATORS.c.id).where(ANNOTATORS.c.id == annotator_id)) is None:
        raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
    task = connection.execute(select(TASKS.c.id, TASKS.c.kind, TASKS.c.topology, TASKS.c.labels)
                              .where(TASKS.c.id == task_id)).first() if valid_id(task_id) else None
    if task is None:
        raise unknown_task_error(task_id)
    if topology is not None and topology != task.topology:
        raise PayloadError(f"the annotation was made on {topology!r} but task {task.id} uses {task.topology!r}")
    encode_payload(task.kind, task.topology, tuple(task.labels), layers, f"the payload for task {task.id}")
    raise NotAssignedError(f"task {task.id} is not assigned to this annotator; ask for the next task first")


def _receipt_for_repeat(row, annotator_id: int, task_id: int) -> SubmissionReceipt:
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
        _reclaim_expired(store, session.connection(), task.id)
        row.status = "assigned"
    elif row.status != "assigned":
        raise NotAssignedError(f"task {task.id} was already {row.status} by this annotator")
    return row


def _reclaim_expired_raw(store: Store, db: RawTransaction, task_id: int) -> None:
    """``_reclaim_expired`` on the hot path's cursor."""
    sql = hot_statements(store.dialect)
    filled, redundancy, is_gold = db.first(store.raw(sql.task_slots), task=task_id)
    if not is_gold and filled >= redundancy:
        raise NotAssignedError(f"your assignment of task {task_id} expired and others have filled it")
    db.execute(store.raw(sql.change_filled), task=task_id, delta=1)


def _reclaim_expired(store: Store, connection: Connection, task_id: int) -> None:
    """Take a slot again for an expired assignment (its annotator came back), if one is free."""
    filled, redundancy, is_gold = connection.execute(store.lock_for_update(
        select(TASKS.c.filled, TASKS.c.redundancy, TASKS.c.is_gold).where(TASKS.c.id == task_id))).one()
    if not is_gold and filled >= redundancy:
        raise NotAssignedError(f"your assignment of task {task_id} expired and others have filled it")
    _change_filled(connection, task_id, +1)


def skip(store: Store, annotator_id: int, task_id: int) -> None:
    """Give the task back; its slot goes to someone else."""
    _finish_without_submission(store, annotator_id, task_id, "skipped", None)


def flag(store: Store, annotator_id: int, task_id: int, reason: str) -> None:
    """Report a task as unusable (``FLAG_REASONS``, or ``flag_reason("other", text)``). Exports can exclude
    flagged tasks."""
    if reason not in FLAG_REASONS and not (str(reason).startswith(OTHER_REASON)
                                           and str(reason) == flag_reason("other", str(reason)[len(OTHER_REASON):])):
        raise PayloadError(f"flag reason must be one of {FLAG_REASONS} or {OTHER_REASON!r} + your words, got "
                           f"{str(reason)[:80]!r}")
    _finish_without_submission(store, annotator_id, task_id, "flagged", reason)


def flag_reason(choice: str, typed: str = "") -> str:
    """The stored reason: one of ``FLAG_REASONS``, or "other" with the annotator's words (1 to
    ``MAX_TYPED_REASON`` printable characters, spaces collapsed)."""
    if choice in FLAG_REASONS:
        return choice
    if choice != "other":
        raise PayloadError(f"flag reason must be one of {FLAG_REASONS} or 'other', got {str(choice)[:40]!r}")
    text = " ".join(str(typed or "").split())
    if not text:
        raise PayloadError("type the reason for flagging this task")
    if len(text) > MAX_TYPED_REASON or not text.isprintable():
        raise PayloadError(f"the reason must be at most {MAX_TYPED_REASON} printable characters")
    return OTHER_REASON + text


def _finish_without_submission(store: Store, annotator_id: int, task_id: int, status: str,
                               reason: str | None) -> None:
    with store.session(write=True) as session:
        annotator_row_or_error(session, annotator_id)
        task = task_row_or_error(session, task_id)
        row = _claimable_assignment(store, session, task, annotator_id)
        row.status, row.flag_reason, row.finished_at = status, reason, utcnow()
        _change_filled(session.connection(), task.id, -1)


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
    array.sort()  # sorted, then duplicates dropped: np.unique costs several times more on a few hundred ids
    return array[np.concatenate(([True], array[1:] != array[:-1]))] if array.size > 1 else array


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


@dataclass(frozen=True)
class TaskHolder:
    """Who holds (or held) a task, as a painter ticket names them (``ticket_holder``)."""

    annotator_id: int
    external_id: str
    demo: bool  # a demo visitor (bound to one browser session): only its own demo tasks
    assignment_id: int  # the annotator's latest assignment of the task


_TICKET_HOLDER = select(
    ANNOTATORS.c.external_id, ANNOTATORS.c.bound_session,
    select(ASSIGNMENTS.c.id).where(ASSIGNMENTS.c.annotator_id == ANNOTATORS.c.id,
                                   ASSIGNMENTS.c.task_id == bindparam("task"))
    .order_by(ASSIGNMENTS.c.id.desc()).limit(1).scalar_subquery().label("assignment_id"),
).where(ANNOTATORS.c.id == bindparam("annotator"))


def ticket_holder(store: Store, annotator_id: int, task_id: int) -> TaskHolder | None:
    """The annotator and its latest assignment of the task, in one read; None when the annotator never had it."""
    if not valid_id(annotator_id) or not valid_id(task_id):
        return None
    with store.raw_transaction(single=store.dialect != "sqlite") as db:  # one statement: no BEGIN / COMMIT
        row = db.first(store.raw(_TICKET_HOLDER), annotator=annotator_id, task=task_id)
    if row is None or row.assignment_id is None:
        return None
    return TaskHolder(annotator_id, row.external_id, row.bound_session is not None, row.assignment_id)
