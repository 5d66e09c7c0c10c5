"""The shape every reconciler shares, and the threads that run them.

Reconcilers are level-triggered: each pass compares desired with observed state and acts. Requests only
record intent and :meth:`Runner.nudge` the loops so work starts at once instead of on the next tick.
Claiming is done with a lock token and an expiry on the row (:class:`Lease`): a pass claims rows in one short
transaction, acts outside any transaction, and writes back only if its token still holds. That keeps SQLite
writers short and lets several replicas share one PostgreSQL: every loop claims what it acts on, so two servers
never act on one row, and the claims of a replica that died (kill -9) lapse after the lease time
(``--lease-seconds``), when another replica takes its work over.

- per row: the pool allocator (a pool per pass) and the operations loop (a batch of operations per pass);
- per loop (:class:`LoopClaim`, a row of ``loop_claims`` per loop): the loops whose pass acts on every row of
  their kind at once, and keeps state of its own between passes, run on one replica at a time: the task
  scheduler (the attempts it runs and waits for), autoscale (the metric samples and CPU deltas) and the machines
  loop (VMs' machines, strays, layer garbage). Every write of their passes goes through the claim
  (:class:`LeasedDatabase`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from shoal.store.db import Database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shoal.core.clock import Clock

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
        self._key_column = sa_inspect(model).primary_key[0]

    def new_token(self) -> str:
        """A token of this server: ``<owner>-<random>`` (36 characters, the column's size)."""
        return f"{self.owner[:8]}-{uuid.uuid4().hex}"[:36] if self.owner else str(uuid.uuid4())

    def take(self, key: str) -> str | None:
        """Claim one row: its token, or None when the row is gone or another live claim holds it."""
        with self.db.write() as s:
            row = s.get(self.model, key, with_for_update=True)
            return self.take_row(row) if row is not None else None

    def take_row(self, row: Any, token: str | None = None) -> str | None:
        """Claim a row loaded in the caller's write transaction (``token``: one shared by a batch of rows)."""
        now = self.clock.now()
        if row.lock_token and row.lock_expires_at and row.lock_expires_at > now:
            return None
        row.lock_token, row.lock_expires_at = token or self.new_token(), now + self.ttl
        return str(row.lock_token)

    @staticmethod
    def holds(row: Any, token: str) -> bool:
        """Whether ``token`` still holds the row (loaded in the caller's write transaction)."""
        return row is not None and row.lock_token == token

    @contextmanager
    def write(self, key: str, token: str) -> Iterator[Session]:
        """A write transaction that goes ahead only while the claim holds (:class:`LeaseLost` otherwise)."""
        with self.db.write() as s:
            # One statement checks the token and renews the claim, and holds the row's lock until the commit
            # (PostgreSQL): a takeover committing meanwhile waits for this transaction, or this one finds the token
            # gone; SQLite's write transactions are serialized anyway. It loads no row: loops write back many
            # times a second (booted nodes, ended tasks), and loading the claimed row each time was most of the
            # cost of a small write.
            renewed = s.execute(update(self.model).where(self._key_column == key, self.model.lock_token == token)
                                .values(lock_expires_at=self.clock.now() + self.ttl)
                                .execution_options(synchronize_session=False))
            if renewed.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(f"{self.model.__name__} {key}: the claim was taken over")
            yield s

    def release(self, key: str, token: str) -> None:
        with self.db.write() as s:
            row = s.get(self.model, key)
            if row is not None and row.lock_token == token:
                row.lock_token, row.lock_expires_at = None, None

    def release_all(self) -> None:
        release_claims(self.db, self.model, self.owner)


class LoopClaim:
    """The claim of a loop that runs on one replica at a time: a :class:`Lease` on the loop's row of
    ``loop_claims``.

    A pass starts with :meth:`hold` (takes the loop's row, or renews this server's claim) and does nothing unless
    it holds the loop; every write of the pass goes through :meth:`write` (:class:`LeaseLost` once the claim was
    taken over). When the holder dies its claim lapses after the lease time and another replica's next pass takes
    the loop over (and recovers what the dead one left in progress)."""

    def __init__(self, db: Database, clock: Clock, name: str, ttl: timedelta = timedelta(seconds=120),
                 owner: str = "") -> None:
        from shoal.store import models

        self.db, self.clock, self.name = db, clock, name
        self.lease = Lease(db, clock, models.LoopClaim, ttl, owner=owner)
        self.token: str | None = None
        self._renewed_at: Any = None  # (service clock) when this server last wrote its claim

    def hold(self) -> bool:
        """Whether this server holds the loop now (taking it when free or lapsed; renewing its own claim when
        a quarter of the lease time has passed since it was last written)."""
        now = self.clock.now()
        if self.token is not None:
            if self._renewed_at is not None and now - self._renewed_at < self.lease.ttl / 4:
                return True
            try:
                with self.write():
                    pass
                return True
            except LeaseLost:
                log.warning("loop %s: this server's claim lapsed and another server took the loop over", self.name)
        self.token = self._take()
        if self.token is not None:
            self._renewed_at = now
            log.info("loop %s: this server runs it now", self.name)
        return self.token is not None

    def _take(self) -> str | None:
        from shoal.store import models

        for _ in range(2):
            try:
                with self.db.write() as s:
                    row = s.get(models.LoopClaim, self.name, with_for_update=True)
                    if row is None:  # the loop's first run on this database
                        row = models.LoopClaim(name=self.name)
                        s.add(row)
                    return self.lease.take_row(row)
            except IntegrityError:  # another server made the row at the same moment: take it now
                continue
        return None

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction that goes ahead only while this server holds the loop (renewing its claim)."""
        if self.token is None:
            raise LeaseLost(f"loop {self.name}: not held by this server")
        try:
            with self.lease.write(self.name, self.token) as s:
                renewed = self.clock.now()
                yield s
        except LeaseLost:
            self.token, self._renewed_at = None, None
            raise
        self._renewed_at = renewed

    def lost(self) -> None:
        """The pass found its claim taken over (a write raised :class:`LeaseLost`)."""
        self.token, self._renewed_at = None, None

    def release(self) -> None:
        """Let the loop go (this server stops): another replica takes it at its next pass."""
        if self.token is not None:
            self.lease.release(self.name, self.token)
            self.token = None

    def release_claims(self) -> None:
        """At start-up: free this server's claim from before it restarted."""
        self.lease.release_all()


class LeasedDatabase(Database):
    """The database as a loop holding a :class:`LoopClaim` sees it: reads as usual, and every write transaction
    checks (and renews) the loop's claim first, raising :class:`LeaseLost` once another server took the loop over.
    It shares the engines of the database it wraps."""

    def __init__(self, db: Database, claim: LoopClaim) -> None:
        self.__dict__.update(db.__dict__)
        self.claim = claim

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self.claim.write() as s:
            yield s

    def dispose(self) -> None:
        """Nothing: the engines belong to the wrapped database."""


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

    def nudge(self, *names: str) -> None:
        """Wake the loops named (every loop when none is named) before their interval ends."""
        for key, ev in self._events.items():
            if not names or key in names:
                ev.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for ev in self._events.values():
            ev.set()
        for t in self._threads:
            t.join(timeout)
        for r in self.reconcilers:  # a clean stop hands the loops this server held to the other replicas at once
            claim = getattr(r, "claim", None)
            if isinstance(claim, LoopClaim):
                try:
                    claim.release()
                except Exception:
                    log.exception("could not release the claim on loop %s", claim.name)

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
