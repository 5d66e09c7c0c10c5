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

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import pools as pool_rules
from shoal.store import models

HOST_LOST = {"code": "NodeHostLost", "message": "The node host that ran this node was lost (it stopped answering). "
             "The node is replaced on another host; its running tasks are requeued.", "errorDetails": []}
_CHUNK = 500
_ROUNDS = 5  # compare-and-set rounds: a node another loop changed meanwhile is read again and retried


class StillChanging(RuntimeError):
    """Some lost node kept changing under another loop for every round: the whole write is rolled back and
    the next pass tries again (nothing is recorded as applied until every node is)."""


def apply(s: Session, clock: Clock, lost: dict[str, float], fence_seconds: float) -> list[str]:
    """``lost``: machine id -> seconds since its host was lost. Returns the keys of the pools whose nodes
    changed (their allocation should run now).

    The nodes change by compare-and-set statements, not ORM objects: while a host is being lost, the task loop
    is recording the ends of its tasks on the same rows, and a version conflict on any one of them must not
    hold up the whole write (it did, for seconds, on PostgreSQL)."""
    ids = sorted(lost)
    touched: set[str] = set()
    fenced: set[str] = set()
    for _ in range(_ROUNDS):
        behind = False
        for i in range(0, len(ids), _CHUNK):
            rows = s.execute(select(models.Node.key, models.Node.machine_id, models.Node.pool_key, models.Node.state)
                             .where(models.Node.machine_id.in_(ids[i:i + _CHUNK]), models.Node.pending != "remove")
                             ).all()
            by_state: dict[str, list[str]] = {}
            for key, machine_id, pool_key, state in rows:
                if state != "unusable" and node_rules.can_become(state, "unusable"):
                    by_state.setdefault(state, []).append(key)
                if lost[machine_id] >= fence_seconds:
                    fenced.add(pool_key)
            for state, keys in by_state.items():
                changed = set(node_rules.set_states(s, clock, keys, state, "unusable",
                                                    values={"errors": [HOST_LOST]}))
                behind = behind or len(changed) < len(keys)
                touched.update(pool_key for key, _, pool_key, _ in rows if key in changed)
            fence_keys = [key for key, machine_id, _, _ in rows if lost[machine_id] >= fence_seconds]
            if fence_keys:
                _leave(s, fence_keys)
        if not behind:
            break
    else:
        raise StillChanging(f"nodes of lost hosts changed under another loop in each of {_ROUNDS} rounds")
    for pool_key in sorted(fenced):
        pool = s.get(models.Pool, pool_key)
        if pool is None or pool.state == "deleting":
            continue
        if pool.allocation_state == pool_rules.STEADY:
            pool.resize_started_at = clock.now()
            pool.resize_errors = []
            pool_rules.set_allocation(pool, clock, pool_rules.RESIZING)
        touched.add(pool_key)
    return sorted(touched)


def _leave(s: Session, keys: list[str]) -> None:
    """The nodes leave their pool with their running tasks requeued (unless already leaving, or their pool is
    being deleted: that removes them)."""
    table = node_rules.NODES
    deleting = select(models.Pool.key).where(models.Pool.state == "deleting")
    s.execute(update(table).where(table.c.key.in_(keys), table.c.pending != "remove",
                                  table.c.pool_key.not_in(deleting))
              .values(pending="remove", pending_option="requeue", version=table.c.version + 1))
