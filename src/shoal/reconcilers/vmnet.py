"""Keeps the host's forwarding of VMs' public IP addresses and its inbound filters (network security groups) in
line with the ``Microsoft.Network`` records (``domain/networking/machines.py`` compiles them).

Level-triggered: each pass compiles the whole policy from the store and publishes it when it differs from what
was last published (the first pass always publishes: the host's table starts empty). Network writes and VM
creation and deletion nudge it; otherwise it runs at the reconcile interval, which also retries a failed publish.
"""

from __future__ import annotations

import logging
from typing import Any

from shoal.core.clock import Clock
from shoal.domain.host import HostAgent
from shoal.domain.networking import machines
from shoal.reconcilers.base import LoopClaim
from shoal.store.db import Database

log = logging.getLogger(__name__)


class VmNetworkReconciler:
    name = "vmnet"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, claim: LoopClaim | None = None) -> None:
        """``claim``: the loop's claim, so that one replica publishes at a time (None: this process is the only
        one on the database, e.g. tests)."""
        self.db, self.clock, self.agent, self.claim = db, clock, agent, claim
        self.published: list[dict[str, Any]] | None = None

    def release_claims(self) -> None:
        if self.claim is not None:
            self.claim.release_claims()

    def run_once(self) -> bool:
        if self.claim is not None and not self.claim.hold():
            self.published = None  # another replica publishes; should this one take over, it starts afresh
            return False
        with self.db.read() as s:
            wanted = machines.host_policy(s)
        if wanted == self.published:
            return False
        try:
            self.agent.publish_vm_networks(wanted)
            self.published = wanted
        except Exception:
            log.exception("the VMs' public addresses and inbound filters could not be published (retried)")
        return False
