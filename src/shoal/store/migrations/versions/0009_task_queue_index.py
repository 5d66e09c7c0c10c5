"""The task queue in order: an index on (job_key, state, seq) replaces (job_key, state), so a scheduler pass
reads the first waiting tasks of a job without sorting all of them.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_queue", "tasks", ["job_key", "state", "seq"])
    op.drop_index("ix_tasks_job_state", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_job_state", "tasks", ["job_key", "state"])
    op.drop_index("ix_tasks_queue", table_name="tasks")
