"""Batch pools and compute nodes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "pools",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("account_key", sa.String(512), nullable=False, index=True),
        sa.Column("pool_id", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_transition_time", ts, nullable=False),
        sa.Column("allocation_state", sa.String(16), nullable=False),
        sa.Column("allocation_state_transition_time", ts, nullable=False),
        sa.Column("target_dedicated", sa.Integer(), nullable=False),
        sa.Column("target_low_priority", sa.Integer(), nullable=False),
        sa.Column("resize_timeout_s", sa.Integer(), nullable=False),
        sa.Column("deallocation_option", sa.String(32), nullable=False),
        sa.Column("resize_started_at", ts, nullable=True),
        sa.Column("resize_errors", sa.JSON(), nullable=False),
        sa.Column("autoscale", sa.JSON(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_modified", ts, nullable=False),
        sa.Column("lock_token", sa.String(36), nullable=True),
        sa.Column("lock_expires_at", ts, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("key", sa.String(700), primary_key=True),
        sa.Column("pool_key", sa.String(600), nullable=False, index=True),
        sa.Column("node_id", sa.String(80), nullable=False),
        sa.Column("machine_id", sa.String(64), nullable=False, unique=True),
        sa.Column("is_dedicated", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False, index=True),
        sa.Column("scheduling_state", sa.String(16), nullable=False),
        sa.Column("state_transition_time", ts, nullable=False),
        sa.Column("allocation_time", ts, nullable=False),
        sa.Column("last_boot_time", ts, nullable=True),
        sa.Column("ip_address", sa.String(45), nullable=False),
        sa.Column("pending", sa.String(24), nullable=False),
        sa.Column("pending_option", sa.String(24), nullable=False),
        sa.Column("start_task_info", sa.JSON(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("endpoints", sa.JSON(), nullable=False),
        sa.Column("total_tasks_run", sa.Integer(), nullable=False),
        sa.Column("total_tasks_succeeded", sa.Integer(), nullable=False),
        sa.Column("running_tasks", sa.Integer(), nullable=False),
        sa.Column("running_slots", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
    op.drop_table("pools")
