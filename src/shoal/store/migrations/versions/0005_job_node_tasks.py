"""Job preparation and release task runs, one row per job and node; when task directories expire.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_node_tasks",
        sa.Column("key", sa.String(1400), primary_key=True),
        sa.Column("job_key", sa.String(600), nullable=False, index=True),
        sa.Column("node_key", sa.String(700), nullable=False),
        sa.Column("pool_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("node_url", sa.String(1024), nullable=False),
        sa.Column("preparation", sa.JSON(), nullable=True),
        sa.Column("release", sa.JSON(), nullable=True),
    )

    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("files_expire_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_tasks_files_expire_at", ["files_expire_at"])


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_files_expire_at")
        batch.drop_column("files_expire_at")
    op.drop_table("job_node_tasks")
