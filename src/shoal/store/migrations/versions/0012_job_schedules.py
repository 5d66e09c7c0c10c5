"""Job schedules (the jobs they make are ``<schedule id>:job-<n>``, so a job id may be up to 80 characters).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "job_schedules",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("account_key", sa.String(512), nullable=False, index=True),
        sa.Column("schedule_id", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("previous_state", sa.String(16), nullable=True),
        sa.Column("state_transition_time", ts, nullable=False),
        sa.Column("previous_state_transition_time", ts, nullable=True),
        sa.Column("next_run_at", ts, nullable=True),
        sa.Column("jobs_made", sa.Integer(), nullable=False),
        sa.Column("recent_job_id", sa.String(80), nullable=True),
        sa.Column("end_time", ts, nullable=True),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_modified", ts, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce lengths (and would copy the table)
        op.alter_column("jobs", "job_id", type_=sa.String(80), existing_type=sa.String(64), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "job_id", type_=sa.String(64), existing_type=sa.String(80), existing_nullable=False)
    op.drop_table("job_schedules")
