"""Nodes that are gone, remembered until their logs expire (their task and start-task logs stay readable).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_nodes",
        sa.Column("key", sa.String(700), primary_key=True),
        sa.Column("pool_key", sa.String(600), nullable=False),
        sa.Column("node_id", sa.String(80), nullable=False),
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("logs_expire_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_retired_nodes_pool_key", "retired_nodes", ["pool_key"])
    op.create_index("ix_retired_nodes_logs_expire_at", "retired_nodes", ["logs_expire_at"])


def downgrade() -> None:
    op.drop_index("ix_retired_nodes_logs_expire_at", "retired_nodes")
    op.drop_index("ix_retired_nodes_pool_key", "retired_nodes")
    op.drop_table("retired_nodes")
