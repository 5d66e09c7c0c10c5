"""The subtasks of multi-instance tasks (their latest attempt's SubtaskInformation, with the nodes they hold).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("subtasks", sa.JSON(), nullable=True))  # no table copy on SQLite


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("subtasks")
