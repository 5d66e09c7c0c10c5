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
_CHUNK = node_rules.BULK_CHUNK
_CAN_GO_UNUSABLE = node_rules.sources("unusable")


def apply(s: Session, clock: Clock, lost: dict[str, float], fence_seconds: float) -> list[str]:
    """``lost``: machine id -> seconds since its host was lost. Returns the keys of the pools whose nodes
    changed (their allocation should run now).

    Each change is one statement per chunk of machines whose condition is the compare-and-set (the states a
    node may leave for ``unusable``; a node not yet leaving the pool), so no row is read first: while a host is
    being lost, the task loop is recording the ends of its tasks on the same rows, and a row another
    transaction changed meanwhile is judged by its new state (the database re-checks the condition once that
    transaction ends), never skipped for its version. The write is this short because it runs while the lost
    host's machines die, which on a shared machine slows every process down."""
    table = node_rules.NODES
    ids = sorted(lost)
    now = clock.now()
    touched: set[str] = set()
    for chunk in _chunks(ids):
        touched.update(s.execute(
            update(table).where(table.c.machine_id.in_(chunk), table.c.pending != "remove",
                                table.c.state.in_(_CAN_GO_UNUSABLE))
            .values(state="unusable", state_transition_time=now, errors=[HOST_LOST], version=table.c.version + 1)
            .returning(table.c.pool_key)).scalars())
    fenced: set[str] = set()
    for chunk in _chunks([m for m in ids if lost[m] >= fence_seconds]):
        fenced.update(_leave(s, chunk))
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


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _leave(s: Session, machine_ids: list[str]) -> set[str]:
    """The nodes leave their pool with their running tasks requeued (unless already leaving, or their pool is
    being deleted: that removes them). Their pools."""
    table = node_rules.NODES
    deleting = select(models.Pool.key).where(models.Pool.state == "deleting")
    return set(s.execute(update(table).where(table.c.machine_id.in_(machine_ids), table.c.pending != "remove",
                                             table.c.pool_key.not_in(deleting))
                         .values(pending="remove", pending_option="requeue", version=table.c.version + 1)
                         .returning(table.c.pool_key)).scalars())
