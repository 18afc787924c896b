"""Runs: every result a studio tab produced (HOI fits, GenZI bodies, contact predictions), with its inputs'
sources and its files, so that it can be downloaded again or used as a perceptual-study stimulus.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("group_key", sa.String(128), nullable=True),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('contact', 'affordance', 'hoi', 'genzi')", name="ck_run_kind"))
    op.create_index("ix_runs_group_key", "runs", ["group_key"])
    op.create_index("ix_runs_kind_created", "runs", ["kind", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_kind_created", table_name="runs")
    op.drop_index("ix_runs_group_key", table_name="runs")
    op.drop_table("runs")
