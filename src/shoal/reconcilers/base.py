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
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shoal.store.db import Database

log = logging.getLogger(__name__)


class Reconciler(Protocol):
    name: str

    def run_once(self) -> bool:
        """One pass. Returns True when there may be more work right away."""
        ...


def release_claims(db: Database, model: Any) -> None:
    """Drop every claim on ``model`` rows (used at start-up, see :meth:`Runner.start`).

    Claims carry an expiry so that a crashed worker's rows are taken over eventually. Shoal runs one server per
    database today (``shoal serve`` holds a lock on its state directory), so at start-up no other live worker
    can hold a claim and a crash is resumed at once instead of after the claim expires. Several replicas on one
    PostgreSQL will need heartbeats per replica instead.
    """
    from sqlalchemy import update

    with db.write() as s:
        s.execute(update(model).where(model.lock_token.is_not(None)).values(lock_token=None, lock_expires_at=None))


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
