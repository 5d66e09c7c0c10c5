"""Alembic environment: migrations run on the engine Shoal hands over (never from an ini file)."""

from __future__ import annotations

from alembic import context

from shoal.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
