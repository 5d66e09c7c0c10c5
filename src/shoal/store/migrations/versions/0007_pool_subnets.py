"""Each pool's private subnet (machines have networks of their own).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("subnet", sa.String(18), nullable=True))
        batch.create_index("ix_pools_subnet", ["subnet"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_index("ix_pools_subnet")
        batch.drop_column("subnet")
