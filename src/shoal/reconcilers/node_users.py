"""The node users loop: expired node user accounts leave their nodes, and nodes with users run their sshd.

Expiry goes by the service's clock (``shoal faults set --clock-offset`` moves it): a user whose ``expiryTime``
has passed is removed from its node (processes, account, home, sudo rule) and forgotten; users of nodes that are
gone are forgotten. A node that rebooted (its ``lastBootTime`` moved) gets its sshd started again, as its init
system would; so does every node with users when the server starts. With ``--node-network host`` each sshd
listens on its node's own port of the host (``domain/host_ssh.py``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from shoal.core.clock import Clock
from shoal.domain.batch import node_users
from shoal.domain.host import HostAgent
from shoal.reconcilers.base import LoopClaim
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)


class NodeUserLoop:
    name = "nodeusers"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, claim: LoopClaim | None = None, *,
                 host_address: str | None = None) -> None:
        self.db, self.clock, self.agent, self.claim = db, clock, agent, claim
        self.host_address = host_address  # set when machines share the host's network: sshd on a port of its own
        self.sshd_since: dict[str, datetime | None] = {}  # node key -> the boot whose sshd this loop started

    def release_claims(self) -> None:
        if self.claim is not None:
            self.claim.release_claims()

    def run_once(self) -> bool:
        if self.claim is not None and not self.claim.hold():
            self.sshd_since.clear()
            return False
        if not node_users.can_run(self.agent):
            return False
        more = self.expire()
        self.start_sshd()
        return more

    def expire(self) -> bool:
        with self.db.read() as s:
            due = node_users.expired(s, self.clock.now())
        gone: list[str] = []
        for key, name, machine_id in due:
            if machine_id is not None:
                try:
                    result = node_users.run(self.agent, machine_id, node_users.delete_script(name))
                    if int(result.get("exitCode", -1)) != 0:
                        log.warning("node user %s: removal failed: %s", key, node_users.output(result, "stderr"))
                except Exception:
                    log.warning("node user %s: removal failed (the node may be gone)", key, exc_info=True)
            gone.append(key)
        if gone:
            with self.db.write() as s:
                node_users.forget(s, gone)
        return len(due) >= 100

    def start_sshd(self) -> None:
        with self.db.read() as s:
            wanted = node_users.nodes_with_users(s)
        keys = {k for k, _, _, _ in wanted}
        for key in [k for k in self.sshd_since if k not in keys]:
            del self.sshd_since[key]
        for key, machine_id, booted, port in wanted:
            if key in self.sshd_since and self.sshd_since[key] == booted:
                continue
            try:
                port = self._sshd_port(key, port)
                result = node_users.run(self.agent, machine_id, node_users.sshd_script(port))
                if int(result.get("exitCode", -1)) != 0:
                    log.warning("node %s: sshd did not start: %s", key, node_users.output(result, "stderr"))
            except Exception:
                log.warning("node %s: sshd did not start", key, exc_info=True)
            self.sshd_since[key] = booted

    def _sshd_port(self, node_key: str, recorded: int | None) -> int | None:
        """The node's port on the host when machines share its network (chosen now if the node's users were
        made before it had one); None: port 22 of the node's own network."""
        if self.host_address is None:
            return None
        if recorded is not None:
            return recorded
        with self.db.write() as s:
            node = s.get(models.Node, node_key)
            return node_users.sshd_port(s, node, self.agent, self.host_address) if node is not None else None
