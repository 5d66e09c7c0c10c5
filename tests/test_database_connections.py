"""Pooled PostgreSQL connections that the server dropped (a restart of PostgreSQL, an idle timeout, an operator's
``pg_terminate_backend``) are replaced before use, not handed to a transaction that would then fail."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from harness import scratch_database
from shoal.store import db as store_db
from shoal.store.db import Database


@pytest.fixture
def pg(database_url: str | None) -> Iterator[Database]:
    if database_url is None:
        pytest.skip("PostgreSQL only: SQLite has no server to drop connections")
    with scratch_database(database_url) as database:
        yield database


def drop_every_connection(database: Database) -> int:
    """Terminate every other session on the database, as a restart of PostgreSQL would."""
    admin = create_engine(database.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            name = database.url.rsplit("/", 1)[1]
            return len(list(c.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name "
                "AND pid <> pg_backend_pid()"), {"name": name})))
    finally:
        admin.dispose()


def test_connections_dropped_while_idle_in_the_pool_are_replaced_before_a_transaction_uses_them(
        pg: Database) -> None:
    held = [pg.engine.connect() for _ in range(4)]  # the pool holds several connections, as a busy server's does
    for c in held:
        c.execute(text("SELECT 1"))
        c.close()
    assert drop_every_connection(pg) >= 4
    time.sleep(store_db.PING_AFTER_IDLE + 0.2)
    for _ in range(8):  # every pooled connection is dead: each checkout finds one and replaces it
        with pg.read() as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
        with pg.write() as s:
            assert s.execute(text("SELECT 2")).scalar() == 2
