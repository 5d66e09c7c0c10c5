"""The shape every reconciler shares, and the threads that run them.

Reconcilers are level-triggered: each pass compares desired with observed state and acts. Requests only
record intent and :meth:`Runner.nudge` the loops so work starts at once instead of on the next tick.
Claiming is done with a lock token and an expiry on the row: a pass claims rows in one short transaction,
acts outside any transaction, and writes back only if its token still holds. That keeps SQLite writers
short and lets several replicas share one PostgreSQL later.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shoal.core.clock import Clock
    from shoal.store.db import Database

log = logging.getLogger(__name__)


class Reconciler(Protocol):
    name: str

    def run_once(self) -> bool:
        """One pass. Returns True when there may be more work right away."""
        ...


def release_claims(db: Database, model: Any, owner: str = "") -> None:
    """Drop the claims on ``model`` rows that ``owner`` (this server) held before it restarted, at start-up (see
    :meth:`Runner.start`), so that its interrupted work resumes at once instead of after the claims expire.

    Claims of other servers sharing the database are left to expire: they may be alive. Without an owner (one
    server per database, as SQLite allows) every claim is this server's own.
    """
    from sqlalchemy import update

    held = model.lock_token.like(f"{owner}-%") if owner else model.lock_token.is_not(None)
    with db.write() as s:
        s.execute(update(model).where(held).values(lock_token=None, lock_expires_at=None))


class LeaseLost(Exception):
    """The row's claim expired and another pass (or server) took it: the pass stops writing and ends."""


class Lease:
    """The claim every loop takes on the rows it works on: a token and an expiry on the row (``lock_token``,
    ``lock_expires_at``).

    A pass takes the row in one short transaction (a row whose live claim another pass holds is skipped), acts
    outside any transaction, and makes every write back through :meth:`write` (or checks with :meth:`holds`
    inside its own transaction): the write goes ahead only while the token still holds, and renews the expiry,
    so a long pass keeps its row and a pass whose claim lapsed never writes over the pass that took over.
    """

    def __init__(self, db: Database, clock: Clock, model: Any, ttl: timedelta = timedelta(seconds=120), *,
                 owner: str = "") -> None:
        """``owner``: this server's replica id (8 characters), the prefix of every token it takes."""
        self.db, self.clock, self.model, self.ttl, self.owner = db, clock, model, ttl, owner

    def new_token(self) -> str:
        """A token of this server: ``<owner>-<random>`` (36 characters, the column's size)."""
        return f"{self.owner[:8]}-{uuid.uuid4().hex}"[:36] if self.owner else str(uuid.uuid4())

    def take(self, key: str) -> str | None:
        """Claim one row: its token, or None when the row is gone or another live claim holds it."""
        with self.db.write() as s:
            row = s.get(self.model, key)
            return self.take_row(row) if row is not None else None

    def take_row(self, row: Any, token: str | None = None) -> str | None:
        """Claim a row loaded in the caller's write transaction (``token``: one shared by a batch of rows)."""
        now = self.clock.now()
        if row.lock_token and row.lock_expires_at and row.lock_expires_at > now:
            return None
        row.lock_token, row.lock_expires_at = token or self.new_token(), now + self.ttl
        return str(row.lock_token)

    def holds(self, row: Any, token: str, *, renew: bool = True) -> bool:
        """Whether ``token`` still holds the row (loaded in the caller's write transaction); renews it."""
        if row is None or row.lock_token != token:
            return False
        if renew:
            row.lock_expires_at = self.clock.now() + self.ttl
        return True

    @contextmanager
    def write(self, key: str, token: str) -> Iterator[Session]:
        """A write transaction that goes ahead only while the claim holds (:class:`LeaseLost` otherwise)."""
        with self.db.write() as s:
            if not self.holds(s.get(self.model, key), token):
                raise LeaseLost(f"{self.model.__name__} {key}: the claim was taken over")
            yield s

    def release(self, key: str, token: str) -> None:
        with self.db.write() as s:
            row = s.get(self.model, key)
            if row is not None and row.lock_token == token:
                row.lock_token, row.lock_expires_at = None, None

    def release_all(self) -> None:
        release_claims(self.db, self.model, self.owner)


class Runner:
    """Runs each reconciler in its own daemon thread; a nudge wakes a loop before its interval ends."""

    def __init__(self, reconcilers: list[Reconciler], interval: float) -> None:
        self.reconcilers = reconcilers
        self.interval = interval
        self._events = {r.name: threading.Event() for r in reconcilers}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for r in self.reconcilers:
            release = getattr(r, "release_claims", None)
            if callable(release):
                release()
        for r in self.reconcilers:
            t = threading.Thread(target=self._loop, args=(r,), name=f"reconciler-{r.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def nudge(self, name: str | None = None) -> None:
        for key, ev in self._events.items():
            if name is None or key == name:
                ev.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for ev in self._events.values():
            ev.set()
        for t in self._threads:
            t.join(timeout)

    def _loop(self, r: Reconciler) -> None:
        ev = self._events[r.name]
        while not self._stop.is_set():
            ev.clear()
            try:
                more = r.run_once()
            except Exception:  # a failing pass must not kill the loop; the next pass retries
                log.exception("reconciler %s pass failed", r.name)
                more = False
            if not more:
                ev.wait(self.interval)
