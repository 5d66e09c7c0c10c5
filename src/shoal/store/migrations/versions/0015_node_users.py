"""User accounts made on compute nodes (``.../nodes/{node}/users``), kept until they expire.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_users",
        sa.Column("key", sa.String(800), primary_key=True),
        sa.Column("node_key", sa.String(700), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("expiry_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_node_users_node_key", "node_users", ["node_key"])
    op.create_index("ix_node_users_expiry_time", "node_users", ["expiry_time"])


def downgrade() -> None:
    op.drop_index("ix_node_users_expiry_time", "node_users")
    op.drop_index("ix_node_users_node_key", "node_users")
    op.drop_table("node_users")
