"""The Alembic migrations build exactly the schema the models describe (on SQLite, and PostgreSQL if set)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shoal.store.db import Database
from shoal.store.models import Base


def urls(tmp_path: Path) -> list[str]:
    out = [f"sqlite:///{tmp_path / 'm.db'}"]
    if os.environ.get("SHOAL_TEST_POSTGRES_URL"):
        out.append(os.environ["SHOAL_TEST_POSTGRES_URL"])
    return out


def test_migrations_match_the_models(tmp_path: Path) -> None:
    for url in urls(tmp_path):
        schema = None
        if url.startswith("postgresql"):
            # A private database, so other tests' tables do not count.
            schema = f"m{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f"create database {schema}"))
            admin.dispose()
            url = url.rsplit("/", 1)[0] + f"/{schema}"
        try:
            db = Database(url)
            db.migrate()
            with db.write_engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}),
                                        Base.metadata)
            db.dispose()
            assert diff == [], (url, diff)
        finally:
            if schema is not None:
                admin = sa.create_engine(os.environ["SHOAL_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(sa.text(f"drop database if exists {schema} with (force)"))
                admin.dispose()
