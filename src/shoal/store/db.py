"""Engine and sessions for SQLite (embedded default, WAL) and PostgreSQL.

Two kinds of transactions: :meth:`Database.read` (plain) and :meth:`Database.write`. On SQLite a write
transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of
failing with "database is locked" when a read lock would have to be upgraded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# A PostgreSQL connection idle for longer than this is pinged before use (the server may have restarted or
# dropped it meanwhile). One in steady use is not: a ping on every checkout was a round trip per transaction,
# and a connection the server drops while in use fails its transaction either way.
PING_AFTER_IDLE = 1.0  # seconds


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # Two engines on one file: writers begin IMMEDIATE, readers DEFERRED.
            self.engine = self._sqlite_engine(url, "DEFERRED")
            self.write_engine = self._sqlite_engine(url, "IMMEDIATE")
        else:
            # LIFO: the connection used last is handed out next, so connections in steady use stay warm (no ping)
            # and the rest idle out, instead of every pooled connection taking turns.
            self.engine = create_engine(url, pool_size=16, max_overflow=16, pool_use_lifo=True)
            _ping_idle_connections(self.engine, PING_AFTER_IDLE)
            self.write_engine = self.engine
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self.write_engine, expire_on_commit=False)

    @staticmethod
    def _sqlite_engine(url: str, begin_mode: str) -> Engine:
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=16, max_overflow=32
        )
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take over transaction control from pysqlite so BEGIN IMMEDIATE is possible.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(f"BEGIN {begin_mode}")

        return engine

    def migrate(self) -> None:
        """Apply Alembic migrations up to head (run on every start; a no-op when current)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.write_engine
        command.upgrade(cfg, "head")

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        # Closing (not rolling back) ends the transaction without expiring what was loaded, so rows
        # read here stay usable after the block.
        with self._read_sessions() as session:
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception."""
        with self._write_sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
        self.write_engine.dispose()


def _ping_idle_connections(engine: Engine, ping_after_idle: float) -> None:
    """Check a pooled connection that sat idle before handing it out; a dead one is replaced (the pool retries the
    checkout with a new connection when the check raises ``DisconnectionError``)."""

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("returned", 0.0) <= ping_after_idle:
            return
        try:
            with contextlib.closing(dbapi_conn.cursor()) as cur:
                cur.execute("SELECT 1")
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection was dead: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                dbapi_conn.rollback()  # the ping must not leave a transaction open

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["returned"] = time.monotonic()
