"""SQLAlchemy 2.0 tables of the store. Only ``annotations.store`` and the migrations touch these rows.

Per-vertex and per-point payloads are stored as little-endian binary blobs (see ``codec``): a
contact layer on SMPL-H is a few hundred uint32 vertex ids, which keeps 100k submissions cheap to
export. The schema is created and changed only by alembic migrations (``annotations/migrations``).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        String, Text, UniqueConstraint, false, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TASK_KINDS = ("human_contact", "object_affordance")
ROLES = ("annotator", "admin")
QUALIFICATIONS = ("pending", "qualified", "disqualified")
ASSIGNMENT_STATES = ("assigned", "submitted", "skipped", "flagged", "expired")
POOLS = ("crowd", "demo")  # migration 0005: demo-made tasks are served to nobody but their maker
RETIRED_POOL = "retired"  # retired by the admin (annotations.task_admin): served to nobody, submissions kept
LAYER_ENCODINGS = ("ids", "values")  # uint32 vertex ids, or float32 per vertex/point


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(255))  # relative to the store's data dir
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    num_bytes: Mapped[int] = mapped_column(Integer)
    original_name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(500))
    licence: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ObjectRow(Base):
    """An object mesh or point cloud for affordance tasks, stored as an npz under the data dir."""

    __tablename__ = "objects"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    class_name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))  # "mesh" | "points"
    num_points: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class BatchRow(Base):
    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    num_tasks: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class AnnotatorRow(Base):
    __tablename__ = "annotators"
    __table_args__ = (CheckConstraint(f"role IN {ROLES}", name="ck_annotator_role"),
                      CheckConstraint(f"qualification IN {QUALIFICATIONS}", name="ck_annotator_qualification"))
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)  # login name or crowd worker id
    role: Mapped[str] = mapped_column(String(16))
    qualification: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # Migration 0005: a signed link or a login proved this id; the one browser session a demo id belongs to.
    verified: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    bound_session: Mapped[str | None] = mapped_column(String(64))


class PredictionRow(Base):
    __tablename__ = "predictions"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(100))
    parameters: Mapped[dict] = mapped_column(JSON)
    topology: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (CheckConstraint(f"kind IN {TASK_KINDS}", name="ck_task_kind"),
                      CheckConstraint("redundancy >= 1", name="ck_task_redundancy"),
                      CheckConstraint("filled >= 0", name="ck_task_filled"),
                      # Partial indexes (migration 0003): next_task walks open tasks in serving order.
                      Index("ix_tasks_open", "is_gold", text("priority DESC"), "id",
                            sqlite_where=text("filled < redundancy"), postgresql_where=text("filled < redundancy")),
                      Index("ix_tasks_gold", text("priority DESC"), "id",
                            sqlite_where=text("is_gold = 1"), postgresql_where=text("is_gold")))
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    kind: Mapped[str] = mapped_column(String(32))
    topology: Mapped[str] = mapped_column(String(64))  # body topology id, or "points-<N>" for objects
    labels: Mapped[list] = mapped_column(JSON)  # object labels (human) or [affordance] (object)
    object_id: Mapped[int | None] = mapped_column(ForeignKey("objects.id"))
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"))
    redundancy: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    is_gold: Mapped[bool] = mapped_column(Boolean)
    filled: Mapped[int] = mapped_column(Integer)  # assignments holding a slot (assigned or submitted)
    provenance: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    pool: Mapped[str] = mapped_column(String(8), index=True, server_default="crowd", default="crowd")  # 0005


class LayerColumns:
    """One label's payload: ``ids`` (uint32 vertex ids) or ``values`` (float32 per vertex/point)."""

    label: Mapped[str] = mapped_column(String(100))
    encoding: Mapped[str] = mapped_column(String(8))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PredictionLayerRow(LayerColumns, Base):
    __tablename__ = "prediction_layers"
    __table_args__ = (UniqueConstraint("prediction_id", "label"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"))


class GoldLayerRow(LayerColumns, Base):
    __tablename__ = "gold_layers"
    __table_args__ = (UniqueConstraint("task_id", "label"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))


class AssignmentRow(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("task_id", "annotator_id"),  # never the same task twice to one person
                      CheckConstraint(f"status IN {ASSIGNMENT_STATES}", name="ck_assignment_status"),
                      Index("ix_assignments_stale", "status", "assigned_at"),
                      Index("ix_assignments_annotator", "annotator_id", "status"))
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    status: Mapped[str] = mapped_column(String(16))
    flag_reason: Mapped[str | None] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    seconds_spent: Mapped[float | None] = mapped_column(Float)


class SubmissionRow(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(primary_key=True)
    submission_key: Mapped[str] = mapped_column(String(128), unique=True)  # client-supplied idempotency key
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"))  # what it started from
    seconds_spent: Mapped[float] = mapped_column(Float)
    client_info: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SubmissionLayerRow(LayerColumns, Base):
    __tablename__ = "submission_layers"
    __table_args__ = (UniqueConstraint("submission_id", "label"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))


class ExportRow(Base):
    """Added by migration 0002: the manifest of every training-data export."""

    __tablename__ = "exports"
    id: Mapped[int] = mapped_column(primary_key=True)
    filters: Mapped[dict] = mapped_column(JSON)
    counts: Mapped[dict] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)


RUN_KINDS = ("contact", "affordance", "hoi", "genzi")


class RunRow(Base):
    """Added by migration 0004: one result a tab produced (see ``annotations.runs``)."""

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(f"kind IN {RUN_KINDS}", name="ck_run_kind"),
                      Index("ix_runs_kind_created", "kind", "created_at"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex: unguessable, safe in a path
    kind: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(200))
    group_key: Mapped[str | None] = mapped_column(String(128), index=True)  # runs made from the same input
    owner: Mapped[str | None] = mapped_column(String(128))  # who made it (session or login), never shown
    inputs: Mapped[dict] = mapped_column(JSON)  # every input's source, e.g. {"contacts": "painted"}
    outputs: Mapped[dict] = mapped_column(JSON)  # file name -> size in bytes, under runs/<id>/
    summary: Mapped[dict] = mapped_column(JSON)  # figures worth listing (losses, IoU, metrics)
    created_at: Mapped[datetime] = mapped_column(DateTime)


STUDY_STATES = ("open", "paused", "closed")
STIMULUS_ROLES = ("a", "b", "reference")
STIMULUS_MEDIA = ("image", "video", "glb")
STUDY_CHOICES = ("left", "right", "timeout")


class StudyRow(Base):
    """Added by migration 0006: a perceptual A/B study (see ``annotations.studies``)."""

    __tablename__ = "studies"
    __table_args__ = (CheckConstraint(f"state IN {STUDY_STATES}", name="ck_study_state"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)  # the participant page is /study/<slug>
    title: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(8))
    method_a: Mapped[str] = mapped_column(String(200))  # never shown to a participant
    method_b: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict] = mapped_column(JSON)  # StudyConfig fields (question, Likert, trials, checks, texts)
    seed: Mapped[int] = mapped_column(Integer)  # every participant's plan derives from it and their id
    link_secret: Mapped[str] = mapped_column(String(64))  # HMAC key of signed recruitment links
    created_at: Mapped[datetime] = mapped_column(DateTime)


class StudyItemRow(Base):
    __tablename__ = "study_items"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    is_catch: Mapped[bool] = mapped_column(Boolean)  # an attention check: side "a" is right, "b" is broken
    source: Mapped[dict] = mapped_column(JSON)  # where the pair came from (run ids, file names); admin only


class StudyStimulusRow(Base):
    __tablename__ = "study_stimuli"
    __table_args__ = (UniqueConstraint("item_id", "role"),
                      CheckConstraint(f"role IN {STIMULUS_ROLES}", name="ck_stimulus_role"),
                      CheckConstraint(f"media IN {STIMULUS_MEDIA}", name="ck_stimulus_media"))
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("study_items.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    media: Mapped[str] = mapped_column(String(8))
    content_type: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255))  # relative to the store's data dir
    num_bytes: Mapped[int] = mapped_column(Integer)


class StudyParticipantRow(Base):
    __tablename__ = "study_participants"
    __table_args__ = (UniqueConstraint("study_id", "external_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(128))  # Prolific / MTurk participant id (?pid=)
    session: Mapped[str] = mapped_column(String(128))  # the platform's session id (?session=)
    token: Mapped[str] = mapped_column(String(64), unique=True)  # bearer token of the participant page
    seed: Mapped[int] = mapped_column(Integer)  # this participant's plan (order, swaps) derives from it
    created_at: Mapped[datetime] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)


class StudyTrialRow(Base):
    __tablename__ = "study_trials"
    __table_args__ = (UniqueConstraint("participant_id", "item_id"),  # one response per item per participant
                      UniqueConstraint("participant_id", "position"))
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # opaque, random: names the trial in every URL
    participant_id: Mapped[int] = mapped_column(ForeignKey("study_participants.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("study_items.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    swapped: Mapped[bool] = mapped_column(Boolean)  # True: method A is shown on the right
    shown_at: Mapped[datetime | None] = mapped_column(DateTime)  # first served (the server's clock)


class StudyResponseRow(Base):
    __tablename__ = "study_responses"
    __table_args__ = (CheckConstraint(f"choice IN {STUDY_CHOICES}", name="ck_response_choice"),
                      Index("ix_study_responses_participant", "participant_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("study_trials.id", ondelete="CASCADE"), unique=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("study_participants.id", ondelete="CASCADE"))
    choice: Mapped[str] = mapped_column(String(8))  # the side picked as shown: left | right (top | bottom)
    likert_left: Mapped[int | None] = mapped_column(Integer)
    likert_right: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)  # from first shown to answer, the server's clock
    client_seconds: Mapped[float | None] = mapped_column(Float)  # what the page measured
    created_at: Mapped[datetime] = mapped_column(DateTime)
