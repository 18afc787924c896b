"""The store: one SQLAlchemy engine, one session per operation, frozen domain objects out.

Default database: SQLite at ``var/annotations.db`` (WAL, foreign keys on, busy timeout). Any
SQLAlchemy URL works through ``--db`` or ``$STUDIO_DB``; PostgreSQL is tested in CI. The schema is
managed by alembic only: opening a store upgrades it to the newest migration.

SQLite write sessions start with ``BEGIN IMMEDIATE`` so that two writers never both read a task as
open and then both fill it; PostgreSQL write paths lock the rows they change (``FOR UPDATE``).
The annotator hot path (``workflow.next_task`` / ``submit``) runs SQLAlchemy Core statements compiled once
on a pooled DBAPI connection (``Store.raw_transaction``; on PostgreSQL mostly one autocommitted statement
each); everything else uses ORM sessions (``Store.session``).
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from sqlalchemy import bindparam, create_engine, event, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from annotations import codec, models
from annotations.domain import Annotator, Image, Prediction, Task, frozen_layers
from annotations.errors import UnknownAnnotatorError, UnknownTaskError
from annotations.files import ImageLimits
from annotations.rawsql import RawStatement, RawTransaction
from engine.errors import InputError
from engine.paths import var_dir

SQLITE_BUSY_TIMEOUT_MS = 30_000
PREDICTION_CACHE_SIZE = 512  # decoded predictions kept per store (rows are written once, never changed)
TASK_SHAPE_CACHE_SIZE = 65536


class StaleConnection(Exception):
    """The hot path's database connection was dead; the operation did not happen and may be retried."""


class TaskShape(NamedTuple):
    """What a submission is checked against; fixed when the task is made."""

    kind: str
    topology: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class StoreConfig:
    """Workflow settings.

    gold_rate: share of tasks served from the gold pool (every round(1/gold_rate)-th task).
    assignment_timeout_s: an assignment not finished within this time frees its slot.
    unverified_timeout_s: the same for annotators without a signed link or login (None: the same timeout).
    max_labels: most object labels one task may carry.
    image_limits: size and pixel limits for imported images.
    """

    gold_rate: float = 0.1
    assignment_timeout_s: float = 1800.0
    unverified_timeout_s: float | None = None
    max_labels: int = 16
    image_limits: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self):
        if not 0.0 <= self.gold_rate <= 1.0:
            raise InputError(f"gold_rate must be in [0, 1], got {self.gold_rate}")
        if self.assignment_timeout_s <= 0:
            raise InputError(f"assignment_timeout_s must be positive, got {self.assignment_timeout_s}")
        if self.unverified_timeout_s is not None and self.unverified_timeout_s <= 0:
            raise InputError(f"unverified_timeout_s must be positive, got {self.unverified_timeout_s}")


def default_url() -> str:
    return os.environ.get("STUDIO_DB") or f"sqlite:///{var_dir() / 'annotations.db'}"


def reset_postgres_schema(url: str) -> str | None:
    """Drop and recreate schema ``public`` of a throw-away PostgreSQL database (tests and benchmarks only:
    everything in it is gone). Returns why PostgreSQL at ``url`` cannot be used, or None."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
        engine.dispose()
    except (SQLAlchemyError, OSError) as error:
        return f"PostgreSQL at {url.split('@')[-1]} is unreachable: {error}"
    return None


def utcnow() -> datetime:
    """Naive UTC (the columns are timezone-less on every backend), to the microsecond."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_memory_sqlite(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:")


def _configure_sqlite(engine: Engine, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def set_pragmas(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, pre_ping: bool = True, autocommit: bool = False) -> Engine:
    if _is_memory_sqlite(url):
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, memory=True)
    elif url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
                               pool_size=20, max_overflow=20)
        _configure_sqlite(engine, memory=False)
    else:
        # The autocommit (hot path) pool prepares each statement on first use: its few statements run
        # thousands of times, and PostgreSQL plans the hot path's CTEs in milliseconds.
        hot = {"isolation_level": "AUTOCOMMIT", "connect_args": {"prepare_threshold": 0}} if autocommit else {}
        engine = create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=pre_ping, **hot)
    return engine


class Store:
    """The annotation store. ``Store(url)`` opens (and migrates) a database; all methods are thread-safe."""

    def __init__(self, url: str | None = None, *, data_dir: Path | str | None = None,
                 config: StoreConfig | None = None, migrate: bool = True):
        self.url = url or default_url()
        self.config = config or StoreConfig()
        self.data_dir = Path(data_dir) if data_dir else var_dir() / "annotations"
        if self.url.startswith("sqlite:///") and not _is_memory_sqlite(self.url):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name
        # One shared connection serves an in-memory database, so its sessions must take turns. SQLite
        # has one writer at a time anyway: queueing this process's writers on a lock hands the write
        # lock over at once, where SQLite's busy handler would sleep and poll.
        self._memory_lock = threading.RLock() if _is_memory_sqlite(self.url) else None
        self._write_lock = threading.Lock() if self.dialect == "sqlite" and not self._memory_lock else None
        self.last_expiry_check = float("-inf")  # monotonic time of the last sweep for stale assignments
        self._binds = {write: self.engine.execution_options(sqlite_begin="IMMEDIATE" if write else "DEFERRED")
                       for write in (True, False)}
        # The hot path's own pool on a server database: no ping per checkout (a round trip each time); a
        # connection found dead is invalidated and the operation retried (``raw_transaction``). Its
        # connections autocommit, so that one statement is one round trip; transactions say BEGIN.
        self._hot_engine = (self.engine if self.dialect == "sqlite"
                            else make_engine(self.url, pre_ping=False, autocommit=True))
        self._raw_statements: dict[int, RawStatement] = {}
        self._predictions: OrderedDict[int, Prediction] = OrderedDict()
        self._predictions_lock = threading.Lock()  # guards both caches
        self._shapes: OrderedDict[int, TaskShape] = OrderedDict()
        if migrate:
            self.migrate()

    def migrate(self, revision: str = "head") -> None:
        from annotations.migrations import upgrade

        with self.engine.begin() as connection:
            upgrade(connection, revision)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One session per operation: commit on success, roll back on any error."""
        lock = self._memory_lock or (self._write_lock if write else None) or nullcontext()
        with lock, Session(bind=self._binds[write], expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Connection]:
        """One Core connection in one transaction (the hot path): commit on success, roll back on any error."""
        lock = self._memory_lock or (self._write_lock if write else None) or nullcontext()
        with lock, self._binds[write].begin() as connection:
            yield connection

    @contextmanager
    def raw_transaction(self, write: bool = False, single: bool = False) -> Iterator[RawTransaction]:
        """One transaction on a pooled DBAPI connection (the hot path, ``annotations.rawsql``): ``BEGIN
        IMMEDIATE`` for a SQLite writer, commit on success, roll back on any error. A connection the
        driver reports as dead is dropped from the pool and ``StaleConnection`` raised (retry the operation).

        ``single`` (server databases only): the caller runs ONE statement, which is its own transaction
        (autocommit: no BEGIN and COMMIT round trips); it must not run a second one."""
        if single and self.dialect == "sqlite":
            raise ValueError("single-statement transactions are for server databases (SQLite says BEGIN IMMEDIATE)")
        lock = self._memory_lock or (self._write_lock if write else None) or nullcontext()
        with lock:
            connection = self._hot_engine.raw_connection()
            cursor = None
            try:
                cursor = connection.cursor()
                if self.dialect == "sqlite":
                    cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                elif not single:
                    cursor.execute("BEGIN")  # the pool's connections autocommit
                yield RawTransaction(cursor)
                connection.commit()
            except BaseException as error:
                dead = isinstance(error, self._hot_engine.dialect.loaded_dbapi.Error) and \
                    self._hot_engine.dialect.is_disconnect(error, connection.dbapi_connection, cursor)
                if dead:
                    connection.invalidate(error)
                    raise StaleConnection("the database connection was lost; try again") from error
                connection.rollback()
                raise
            finally:
                if cursor is not None and connection.is_valid:
                    cursor.close()
                connection.close()  # back to the pool

    def raw(self, statement) -> RawStatement:
        """``statement`` compiled once for this store's dialect (cached by the statement object)."""
        compiled = self._raw_statements.get(id(statement))
        if compiled is None or compiled.source is not statement:
            compiled = RawStatement(statement, self.engine.dialect)
            compiled.source = statement
            self._raw_statements[id(statement)] = compiled
        return compiled

    @functools.cached_property
    def retryable_errors(self) -> tuple[type[BaseException], ...]:
        """What the hot path retries: a raced unique constraint (the driver's or SQLAlchemy's), a dead pooled
        connection, and the errors PostgreSQL asks clients to retry (deadlock, serialization failure); the
        transaction rolled back."""
        from sqlalchemy.exc import IntegrityError

        dbapi = self._hot_engine.dialect.loaded_dbapi
        errors = getattr(dbapi, "errors", None)
        transient = tuple(getattr(errors, name) for name in ("DeadlockDetected", "SerializationFailure")
                          if hasattr(errors, name))
        return (dbapi.IntegrityError, IntegrityError, StaleConnection, *transient)

    def lock_for_update(self, statement):
        """``SELECT ... FOR UPDATE`` where the backend has row locks (SQLite writers are already serialised)."""
        return statement if self.dialect == "sqlite" else statement.with_for_update()

    def close(self) -> None:
        self.engine.dispose()
        if self._hot_engine is not self.engine:
            self._hot_engine.dispose()

    # ---- annotators -------------------------------------------------------------------------
    def ensure_annotator(self, external_id: str, role: str = "annotator") -> Annotator:
        """The annotator with this login / crowd worker id, created on first sight."""
        external_id = check_external_id(external_id)
        if role not in models.ROLES:
            raise InputError(f"role must be one of {models.ROLES}, got {role!r}")
        with self.session(write=True) as session:
            row = session.scalar(select(models.AnnotatorRow).where(models.AnnotatorRow.external_id == external_id))
            if row is None:
                row = models.AnnotatorRow(external_id=external_id, role=role, qualification="pending",
                                          created_at=utcnow())
                session.add(row)
                session.flush()
            return annotator_from_row(row)

    def annotator(self, annotator_id: int) -> Annotator:
        with self.session() as session:
            row = session.get(models.AnnotatorRow, annotator_id)
            if row is None:
                raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
            return annotator_from_row(row)

    def mark_verified(self, annotator_id: int) -> Annotator:
        """Record that this worker id came with a valid signed link (or a login)."""
        return self._update_annotator(annotator_id, verified=True)

    def bind_session(self, annotator_id: int, session_digest: str) -> Annotator:
        """Tie a worker id to one browser session (the SHA-256 of its session cookie)."""
        return self._update_annotator(annotator_id, bound_session=session_digest)

    def _update_annotator(self, annotator_id: int, **values) -> Annotator:
        with self.session(write=True) as session:
            row = session.get(models.AnnotatorRow, annotator_id)
            if row is None:
                raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
            for key, value in values.items():
                setattr(row, key, value)
            return annotator_from_row(row)

    def set_qualification(self, annotator_id: int, qualification: str) -> Annotator:
        if qualification not in models.QUALIFICATIONS:
            raise InputError(f"qualification must be one of {models.QUALIFICATIONS}, got {qualification!r}")
        with self.session(write=True) as session:
            row = session.get(models.AnnotatorRow, annotator_id)
            if row is None:
                raise UnknownAnnotatorError(f"no annotator with id {annotator_id}")
            row.qualification = qualification
            return annotator_from_row(row)

    # ---- tasks ------------------------------------------------------------------------------
    def task(self, task_id: int) -> Task:
        with self.session() as session:
            return self.task_from_row(session, task_row_or_error(session, task_id))

    def demo_task_ids(self) -> list[int]:
        """Tasks made from the public demo that no crowd annotator is served (newest first)."""
        with self.session() as session:
            return list(session.scalars(select(models.TaskRow.id).where(models.TaskRow.pool == "demo")
                                        .order_by(models.TaskRow.id.desc())))

    def promote_task(self, task_id: int) -> Task:
        """Move a demo task into the crowd pool (an admin's decision); next_task may then serve it."""
        with self.session(write=True) as session:
            row = task_row_or_error(session, task_id)
            row.pool = "crowd"
            session.flush()
            return self.task_from_row(session, row)

    def task_ids(self) -> list[int]:
        with self.session() as session:
            return list(session.scalars(select(models.TaskRow.id).order_by(models.TaskRow.id)))

    def gold_answer(self, task_id: int) -> dict:
        """label -> reference payload of a gold task (empty when the task has none)."""
        with self.session() as session:
            rows = session.scalars(select(models.GoldLayerRow).where(models.GoldLayerRow.task_id == task_id))
            return {row.label: codec.decode(row.encoding, row.data) for row in rows}

    def task_from_row(self, session: Session, row: models.TaskRow) -> Task:
        image = session.get(models.ImageRow, row.image_id)
        obj = session.get(models.ObjectRow, row.object_id) if row.object_id else None
        prediction = self.prediction_from_id(session, row.prediction_id) if row.prediction_id else None
        return Task(id=row.id, kind=row.kind, topology=row.topology, labels=tuple(row.labels),
                    image=self.image_from_row(image), object_id=row.object_id,
                    object_class=obj.class_name if obj else None, prediction=prediction,
                    redundancy=row.redundancy, priority=row.priority, is_gold=row.is_gold, batch_id=row.batch_id,
                    pool=row.pool)

    def image_from_row(self, row: models.ImageRow) -> Image:
        return Image(id=row.id, sha256=row.sha256, path=self.data_dir / row.path, format=row.format,
                     width=row.width, height=row.height, original_name=row.original_name,
                     source=row.source, licence=row.licence)

    def prediction_from_id(self, session: Session | Connection | None, prediction_id: int) -> Prediction:
        """The decoded prediction, from the store's cache after the first read (predictions never change).

        ``session`` None: read it in a transaction of its own (the hot path, after its own commit)."""
        with self._predictions_lock:
            cached = self._predictions.get(prediction_id)
            if cached is not None:
                self._predictions.move_to_end(prediction_id)
                return cached
        if session is None:
            with self.transaction() as connection:
                return self.prediction_from_id(connection, prediction_id)
        table, layer = models.PredictionRow.__table__, models.PredictionLayerRow.__table__
        row = session.execute(select(table).where(table.c.id == prediction_id)).one()
        layers = session.execute(select(layer.c.label, layer.c.encoding, layer.c.data)
                                 .where(layer.c.prediction_id == prediction_id)).all()
        prediction = Prediction(id=row.id, model_name=row.model_name, model_version=row.model_version,
                                parameters=dict(row.parameters), topology=row.topology,
                                layers=frozen_layers({label: codec.decode(encoding, data)
                                                      for label, encoding, data in layers}))
        with self._predictions_lock:
            self._predictions[prediction_id] = prediction
            while len(self._predictions) > PREDICTION_CACHE_SIZE:
                self._predictions.popitem(last=False)
        return prediction

    def task_shape(self, task_id: int) -> TaskShape | None:
        """(kind, topology, labels) of a task, cached (they never change); None for an unknown task."""
        with self._predictions_lock:
            shape = self._shapes.get(task_id)
        if shape is not None:
            return shape
        table = models.TaskRow.__table__
        with self.transaction() as connection:
            row = connection.execute(select(table.c.kind, table.c.topology, table.c.labels)
                                     .where(table.c.id == task_id)).first()
        if row is None:
            return None
        shape = TaskShape(row.kind, row.topology, tuple(row.labels))
        self.remember_shape(task_id, shape)
        return shape

    def remember_shape(self, task_id: int, shape: TaskShape) -> None:
        with self._predictions_lock:
            if task_id in self._shapes:
                return
            self._shapes[task_id] = shape
            while len(self._shapes) > TASK_SHAPE_CACHE_SIZE:
                self._shapes.popitem(last=False)

    def task_by_id(self, connection: Connection, task_id: int) -> Task:
        """The task with its image, object class and prediction in one statement (Core; the hot path)."""
        return self.task_from_details(connection, connection.execute(TASK_DETAILS, {"task": task_id}).one())

    def task_from_details(self, connection: Connection | None, row) -> Task:
        """A ``Task`` from a row of ``TASK_SELECT`` (its prediction from the cache, else read on ``connection``
        or, when None, in a read transaction of its own)."""
        prediction = self.prediction_from_id(connection, row.prediction_id) if row.prediction_id else None
        labels = tuple(row.labels)
        self.remember_shape(row.id, TaskShape(row.kind, row.topology, labels))  # its submission is checked next
        return Task(id=row.id, kind=row.kind, topology=row.topology, labels=labels,
                    image=Image(id=row.image_id, sha256=row.sha256, path=self.data_dir / row.path, format=row.format,
                                width=row.width, height=row.height, original_name=row.original_name,
                                source=row.source, licence=row.licence),
                    object_id=row.object_id, object_class=row.class_name, prediction=prediction,
                    redundancy=row.redundancy, priority=row.priority, is_gold=row.is_gold, batch_id=row.batch_id,
                    pool=row.pool)

    def object_points(self, object_id: int):
        """(N, 3) float32 points of an affordance object (mesh vertices or point cloud)."""
        return self.object_geometry(object_id)[0]

    def object_geometry(self, object_id: int):
        """(N, 3) float32 points and (F, 3) int64 faces (None for a point cloud) of an affordance object."""
        with self.session() as session:
            row = session.get(models.ObjectRow, object_id)
            if row is None:
                raise InputError(f"no object with id {object_id}")
            path = self.data_dir / row.path
        with np.load(path, allow_pickle=False) as data:
            return data["points"], (data["faces"] if "faces" in data.files else None)


def _task_select():
    task, image, obj = models.TaskRow.__table__, models.ImageRow.__table__, models.ObjectRow.__table__
    return (select(task.c.id, task.c.kind, task.c.topology, task.c.labels, task.c.object_id, task.c.prediction_id,
                   task.c.redundancy, task.c.priority, task.c.is_gold, task.c.batch_id, task.c.pool,
                   image.c.id.label("image_id"), image.c.sha256, image.c.path, image.c.format, image.c.width,
                   image.c.height, image.c.original_name, image.c.source, image.c.licence, obj.c.class_name)
            .select_from(task.join(image, image.c.id == task.c.image_id).outerjoin(obj, obj.c.id == task.c.object_id)))


# Built once (the hot path only binds values): a task with its image and object class, for Store.task_from_details.
TASK_SELECT = _task_select()
TASK_DETAILS = TASK_SELECT.where(models.TaskRow.__table__.c.id == bindparam("task"))


def check_external_id(external_id: str) -> str:
    text = str(external_id).strip()
    if not text or len(text) > 128 or not text.isprintable():
        raise InputError("an annotator id must be 1-128 printable characters")
    return text


def annotator_from_row(row: models.AnnotatorRow) -> Annotator:
    return Annotator(id=row.id, external_id=row.external_id, role=row.role, qualification=row.qualification,
                     verified=bool(row.verified), bound_session=row.bound_session)


MAX_ID = 2**31 - 1  # ids are 32-bit on every backend; a larger one is simply unknown (never an overflow)


def valid_id(value) -> bool:
    """Whether ``value`` can be a row id at all (anything else is simply unknown)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def task_row_or_error(session: Session, task_id: int) -> models.TaskRow:
    row = session.get(models.TaskRow, task_id) if valid_id(task_id) else None
    if row is None:
        raise unknown_task_error(task_id)
    return row


def unknown_task_error(task_id) -> UnknownTaskError:
    shown = repr(task_id)
    return UnknownTaskError(f"no task with id {shown if len(shown) <= 24 else shown[:21] + '...'}")
