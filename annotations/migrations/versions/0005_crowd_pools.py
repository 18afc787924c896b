"""Crowd safety: tasks made from the public demo live in their own pool, and annotators carry how they
proved who they are.

tasks.pool: "crowd" (served by next_task) or "demo" (held only by the visitor who made it, until an
    admin promotes it to "crowd").
annotators.verified: came with a signed worker link or a login; open assignments of unverified
    workers expire sooner, and an unsigned link can no longer act for a verified worker id.
annotators.bound_session: SHA-256 of the browser session that owns this (demo) worker id; only that
    browser may start a session as it.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("pool", sa.String(8), nullable=False, server_default="crowd"))
    op.create_index("ix_tasks_pool", "tasks", ["pool"])
    op.add_column("annotators", sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("annotators", sa.Column("bound_session", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("annotators") as table:
        table.drop_column("bound_session")
        table.drop_column("verified")
    op.drop_index("ix_tasks_pool", table_name="tasks")
    with op.batch_alter_table("tasks") as table:
        table.drop_column("pool")
