"""Pool metric samples for autoscale formulas (one row per pool and sample time).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pool_samples",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("pool_key", sa.String(700), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_pool_samples_pool_time", "pool_samples", ["pool_key", "taken_at"])


def downgrade() -> None:
    op.drop_index("ix_pool_samples_pool_time", "pool_samples")
    op.drop_table("pool_samples")
