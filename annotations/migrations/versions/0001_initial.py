"""Initial schema: images, objects, batches, annotators, predictions, tasks, layers, assignments, submissions.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def layer_columns():
    return [sa.Column("label", sa.String(100), nullable=False),
            sa.Column("encoding", sa.String(8), nullable=False),
            sa.Column("data", sa.LargeBinary(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("num_bytes", sa.Integer(), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("source", sa.String(500)),
        sa.Column("licence", sa.String(200)),
        sa.Column("created_at", sa.DateTime(), nullable=False))
    op.create_table(
        "objects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("class_name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("num_points", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False))
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("num_tasks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False))
    op.create_table(
        "annotators",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("external_id", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("qualification", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("role IN ('annotator', 'admin')", name="ck_annotator_role"),
        sa.CheckConstraint("qualification IN ('pending', 'qualified', 'disqualified')",
                           name="ck_annotator_qualification"))
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("topology", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False))
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("batch_id", sa.Integer(), sa.ForeignKey("batches.id")),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("topology", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("object_id", sa.Integer(), sa.ForeignKey("objects.id")),
        sa.Column("prediction_id", sa.Integer(), sa.ForeignKey("predictions.id")),
        sa.Column("redundancy", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("is_gold", sa.Boolean(), nullable=False),
        sa.Column("filled", sa.Integer(), nullable=False),
        sa.Column("provenance", sa.JSON()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('human_contact', 'object_affordance')", name="ck_task_kind"),
        sa.CheckConstraint("redundancy >= 1", name="ck_task_redundancy"),
        sa.CheckConstraint("filled >= 0", name="ck_task_filled"))
    op.create_index("ix_tasks_open", "tasks", ["is_gold", "priority", "id"])
    op.create_table(
        "prediction_layers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("prediction_id", sa.Integer(), sa.ForeignKey("predictions.id", ondelete="CASCADE"), nullable=False),
        *layer_columns(),
        sa.UniqueConstraint("prediction_id", "label"))
    op.create_table(
        "gold_layers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        *layer_columns(),
        sa.UniqueConstraint("task_id", "label"))
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("annotator_id", sa.Integer(), sa.ForeignKey("annotators.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flag_reason", sa.String(64)),
        sa.Column("assigned_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("seconds_spent", sa.Float()),
        sa.UniqueConstraint("task_id", "annotator_id"),
        sa.CheckConstraint("status IN ('assigned', 'submitted', 'skipped', 'flagged', 'expired')",
                           name="ck_assignment_status"))
    op.create_index("ix_assignments_stale", "assignments", ["status", "assigned_at"])
    op.create_index("ix_assignments_annotator", "assignments", ["annotator_id", "status"])
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("submission_key", sa.String(128), nullable=False, unique=True),
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("assignments.id"), nullable=False, unique=True),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("annotator_id", sa.Integer(), sa.ForeignKey("annotators.id"), nullable=False),
        sa.Column("prediction_id", sa.Integer(), sa.ForeignKey("predictions.id")),
        sa.Column("seconds_spent", sa.Float(), nullable=False),
        sa.Column("client_info", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False))
    op.create_index("ix_submissions_task_id", "submissions", ["task_id"])
    op.create_index("ix_submissions_annotator_id", "submissions", ["annotator_id"])
    op.create_table(
        "submission_layers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("submission_id", sa.Integer(), sa.ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False),
        *layer_columns(),
        sa.UniqueConstraint("submission_id", "label"))


def downgrade() -> None:
    for table in ("submission_layers", "submissions", "assignments", "gold_layers", "prediction_layers", "tasks",
                  "predictions", "annotators", "batches", "objects", "images"):
        op.drop_table(table)
