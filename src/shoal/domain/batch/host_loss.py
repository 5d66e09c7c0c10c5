"""What happens to the nodes of a node host that was lost (its Ray node died or was cut off), as Azure treats
the nodes of a failed VM host:

1. at once, the nodes go ``unusable`` with an error that says why (no new task goes to them);
2. once the host has had time to fence itself (``fence_seconds``: a host that lost the head stops its machines
   after that long), the nodes leave the pool with their running tasks requeued, and the pool resizes back to
   its target on the hosts that remain. Before that moment a task is never requeued, so it never runs twice at
   once.

A node already leaving the pool, or of a pool being deleted, is left to that.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import pools as pool_rules
from shoal.store import models

HOST_LOST = {"code": "NodeHostLost", "message": "The node host that ran this node was lost (it stopped answering). "
             "The node is replaced on another host; its running tasks are requeued.", "errorDetails": []}
_CHUNK = 500


def apply(s: Session, clock: Clock, lost: dict[str, float], fence_seconds: float) -> list[str]:
    """``lost``: machine id -> seconds since its host was lost. Returns the keys of the pools whose nodes
    changed (their allocation should run now)."""
    ids = sorted(lost)
    touched: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        for node in s.scalars(select(models.Node).where(models.Node.machine_id.in_(ids[i:i + _CHUNK]))):
            if node.pending == "remove":
                continue
            if node.state != "unusable" and node_rules.can_become(node.state, "unusable"):
                node_rules.set_state(node, clock, "unusable")
                node.errors = [HOST_LOST]
                touched.add(node.pool_key)
            if lost[node.machine_id] >= fence_seconds:
                pool = s.get(models.Pool, node.pool_key)
                if pool is None or pool.state == "deleting":
                    continue
                node.pending, node.pending_option = "remove", "requeue"
                if pool.allocation_state == pool_rules.STEADY:
                    pool.resize_started_at = clock.now()
                    pool.resize_errors = []
                    pool_rules.set_allocation(pool, clock, pool_rules.RESIZING)
                touched.add(node.pool_key)
    return sorted(touched)
