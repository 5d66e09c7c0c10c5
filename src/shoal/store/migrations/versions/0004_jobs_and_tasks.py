"""Batch jobs and tasks.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("account_key", sa.String(512), nullable=False, index=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("pool_id", sa.String(64), nullable=False, index=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("previous_state", sa.String(16), nullable=True),
        sa.Column("state_transition_time", ts, nullable=False),
        sa.Column("previous_state_transition_time", ts, nullable=True),
        sa.Column("execution_info", sa.JSON(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_modified", ts, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("key", sa.String(700), primary_key=True),
        sa.Column("job_key", sa.String(600), nullable=False, index=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, index=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("result", sa.String(16), nullable=True),
        sa.Column("previous_state", sa.String(16), nullable=True),
        sa.Column("state_transition_time", ts, nullable=False),
        sa.Column("previous_state_transition_time", ts, nullable=True),
        sa.Column("execution_info", sa.JSON(), nullable=False),
        sa.Column("node_key", sa.String(700), nullable=True, index=True),
        sa.Column("node_info", sa.JSON(), nullable=True),
        sa.Column("attempt", sa.String(36), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_modified", ts, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_tasks_job_state", "tasks", ["job_key", "state"])


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("jobs")
