"""Nodes of lost node hosts (a cluster's hosts on Ray): the loop that applies ``domain.batch.host_loss``.

The host agent says which machines are on hosts it lost and for how long (``lost_machines``; always empty on
the embedded single host, where this loop does nothing). Each pass writes the consequences in one transaction
and wakes the pool loop, which removes the nodes (requeueing their tasks) and boots their replacements.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shoal.core.clock import Clock
from shoal.domain.batch import host_loss
from shoal.domain.host import HostAgent
from shoal.store.db import Database

log = logging.getLogger(__name__)


class HostLossReconciler:
    name = "hosts"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, fence_seconds: float) -> None:
        self.db, self.clock, self.agent, self.fence_seconds = db, clock, agent, fence_seconds
        self.nudge: Callable[[], Any] | None = None
        self._seen: dict[str, bool] = {}  # machine id -> fenced, as last written

    def run_once(self) -> bool:
        lost = self.agent.lost_machines()
        fenced = {m: age >= self.fence_seconds for m, age in lost.items()}
        if fenced != self._seen:  # only a change (a newly lost machine, a fence time passed) needs a write
            started = time.monotonic()
            with self.db.write() as s:
                pools = host_loss.apply(s, self.clock, lost, self.fence_seconds)
            self._seen = fenced
            if pools:
                # When (the newest loss's age at the pass) and how long the write took: the two parts of the time
                # from a host's loss to its nodes being unusable that the control plane owns.
                log.warning("nodes of lost hosts: pools %s updated (%d machines lost, %d fenced; the pass began "
                            "%.2f s after the loss, the write took %.2f s)", ", ".join(pools), len(lost),
                            sum(fenced.values()), min(lost.values(), default=0.0), time.monotonic() - started)
                if callable(self.nudge):
                    self.nudge()
        return False
