"""Inbound NAT endpoints: the host forwards each node's endpoints (frontend port on the pool's public address)
to the node's backend port. The whole table is published at once, so nodes that left are withdrawn."""

from __future__ import annotations

import logging
from functools import cached_property

from sqlalchemy import select

from shoal.config import reachable_address
from shoal.reconcilers.allocation.context import Context
from shoal.store import models

log = logging.getLogger(__name__)


class Endpoints:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.unpublished = True  # the host's forwarding table starts empty

    @cached_property
    def public_address(self) -> tuple[str, str]:
        """(IP address, name) nodes' inbound endpoints report: the host clients reach Shoal at."""
        return reachable_address(self.ctx.base_url)

    def publish(self) -> None:
        """Forward every node's inbound NAT endpoints to it (the whole table: nodes that left are withdrawn)."""
        with self.ctx.db.read() as s:
            rows = s.execute(select(models.Node.ip_address, models.Node.endpoints).where(
                models.Node.endpoints.is_not(None))).all()
        wanted = [{"publicIPAddress": e["publicIPAddress"], "frontendPort": e["frontendPort"], "address": ip,
                   "backendPort": e["backendPort"]}
                  for ip, endpoints in rows for e in endpoints or []
                  if e.get("protocol", "tcp") == "tcp" and e.get("backendPort") is not None]
        try:
            self.ctx.agent.publish_endpoints(wanted)
            self.unpublished = False
        except Exception:
            log.exception("inbound NAT endpoints could not be published (retried next pass)")
