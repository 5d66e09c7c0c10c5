"""Pools in a virtual network's subnet: several pools may share a subnet, and each such pool has a public
address of its own for its inbound NAT endpoints.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_index("ix_pools_subnet")
        batch.create_index("ix_pools_subnet", ["subnet"], unique=False)
        batch.add_column(sa.Column("public_address", sa.String(15), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("public_address")
        batch.drop_index("ix_pools_subnet")
        batch.create_index("ix_pools_subnet", ["subnet"], unique=True)
