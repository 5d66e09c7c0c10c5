"""Node time by pool and VM size, kept as nodes leave (pool usage metrics).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_key", sa.String(512), nullable=False),
        sa.Column("pool_id", sa.String(64), nullable=False),
        sa.Column("vm_size", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_node_usage_account_key", "node_usage", ["account_key"])
    op.create_index("ix_node_usage_ended_at", "node_usage", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_node_usage_ended_at", "node_usage")
    op.drop_index("ix_node_usage_account_key", "node_usage")
    op.drop_table("node_usage")
