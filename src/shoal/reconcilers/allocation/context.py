"""What every stage of the pool allocator works with: the database, the clock, the host agent, and the wiring
that ``services.py`` sets after construction (the URL nodes reach Shoal at, the nudges)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.domain.host import HostAgent
from shoal.reconcilers.base import Lease
from shoal.reconcilers.faults import Faults, FaultSource
from shoal.store.db import Database


@dataclass
class Context:
    db: Database
    clock: Clock
    agent: HostAgent
    base_url: str  # Shoal's origin as clients reach it (where inbound NAT endpoints say they listen)
    node_base_url: str  # Shoal's origin as nodes reach it (their gateway, with networks of their own)
    address_space: str  # where pools get their subnets and nodes their addresses
    faults: FaultSource | None = None
    nudge: Callable[[], None] | None = None  # wakes the loops that act on nodes coming up (allocation, tasks)
    nudge_tasks: Callable[[], None] | None = None  # wakes the scheduler (nodes came up while a pass goes on)
    lease: Lease | None = None  # the claim on pool rows
    claim: tuple[str, str] | None = None  # (pool key, token) of the pass going on

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write of the pass: it goes ahead only while the pass's claim on its pool holds, and renews it
        (``LeaseLost`` ends the pass otherwise). Outside a pass (start tasks finishing later) a plain write."""
        if self.claim is None or self.lease is None:
            with self.db.write() as s:
                yield s
            return
        with self.lease.write(*self.claim) as s:
            yield s

    def wake(self) -> None:
        if callable(self.nudge):
            self.nudge()

    def wake_tasks(self) -> None:
        if callable(self.nudge_tasks):
            self.nudge_tasks()

    def faults_now(self) -> Faults:
        """The injected faults in force (read fresh: provisioning decisions depend on them)."""
        return self.faults.current(fresh=True) if self.faults is not None else Faults()

    def slow(self) -> bool:
        """Injected slow provisioning: allocate one node per pass, so stop-resize and timeouts can cut in."""
        return self.faults is not None and self.faults_now().node_provision_delay > 0
