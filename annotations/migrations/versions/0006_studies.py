"""Perceptual A/B studies: studies, their items and stimuli, participants, trials and responses.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"  # the one line to change when another migration lands before this one
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("method_a", sa.String(200), nullable=False),
        sa.Column("method_b", sa.String(200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("link_secret", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("state IN ('open', 'paused', 'closed')", name="ck_study_state"))
    op.create_table(
        "study_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("is_catch", sa.Boolean(), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.UniqueConstraint("study_id", "name"))
    op.create_index("ix_study_items_study_id", "study_items", ["study_id"])
    op.create_table(
        "study_stimuli",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("study_items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("media", sa.String(8), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("num_bytes", sa.Integer(), nullable=False),
        sa.UniqueConstraint("item_id", "role"),
        sa.CheckConstraint("role IN ('a', 'b', 'reference')", name="ck_stimulus_role"),
        sa.CheckConstraint("media IN ('image', 'video', 'glb')", name="ck_stimulus_media"))
    op.create_table(
        "study_participants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("session", sa.String(128), nullable=False),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("study_id", "external_id"))
    op.create_table(
        "study_trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("participant_id", sa.Integer(), sa.ForeignKey("study_participants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("study_items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("swapped", sa.Boolean(), nullable=False),
        sa.Column("shown_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("participant_id", "item_id"),
        sa.UniqueConstraint("participant_id", "position"))
    op.create_table(
        "study_responses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("study_trials.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("participant_id", sa.Integer(), sa.ForeignKey("study_participants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("choice", sa.String(8), nullable=False),
        sa.Column("likert_left", sa.Integer(), nullable=True),
        sa.Column("likert_right", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("client_seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("choice IN ('left', 'right', 'timeout')", name="ck_response_choice"))
    op.create_index("ix_study_responses_participant", "study_responses", ["participant_id"])


def downgrade() -> None:
    op.drop_index("ix_study_responses_participant", table_name="study_responses")
    op.drop_table("study_responses")
    op.drop_table("study_trials")
    op.drop_table("study_participants")
    op.drop_table("study_stimuli")
    op.drop_index("ix_study_items_study_id", table_name="study_items")
    op.drop_table("study_items")
    op.drop_table("studies")
