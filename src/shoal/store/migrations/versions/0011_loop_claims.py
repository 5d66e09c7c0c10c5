"""Loop claims: the loops that run on one replica at a time (the task scheduler, autoscale, the machines loop)
hold a row here with a lock token and an expiry, like the claims on pools and operations, so that API replicas
sharing one PostgreSQL never run them twice and take them over when their holder dies.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loop_claims",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("lock_token", sa.String(36), nullable=True),
        sa.Column("lock_expires_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("loop_claims")
