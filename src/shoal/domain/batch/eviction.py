"""Spot / low-priority eviction, as Azure does it: an operator's rehearsal of capacity being taken back.

``shoal faults evict --pool P [--count N | --fraction F]`` (or a random eviction rate per pool, in the faults
file) evicts some of a pool's low-priority nodes:

1. at once (:func:`evict`): each node goes ``preempted`` and its running tasks are requeued (their
   ``requeueCount`` moves on; a requeue is not a retry, so ``retryCount`` does not);
2. the pool loop stops the node's machine (so the tasks' processes die) and keeps the node listed as
   ``preempted``: it still counts in the pool's low-priority nodes and in ``$PreemptedNodeCount``;
3. once capacity returns (:func:`recovered`: the operator's delay, ``spotRecoverySeconds`` in the faults file,
   a few seconds by default) the node boots again: ``starting``, then ``idle``.

Dedicated nodes are never evicted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.core.clock import Clock
from shoal.domain.batch import deallocation
from shoal.domain.batch import nodes as node_rules
from shoal.store import models

EVICTABLE = ("idle", "running", "offline", "starting", "waitingforstarttask", "starttaskfailed", "unusable")
EVICT = "evict"          # pending: the node was evicted, its machine is still to be stopped
PREEMPTED = "preempted"  # pending: its machine is stopped; it waits for capacity to return


def find_pools(s: Session, pool_id: str, account: str | None = None) -> list[models.Pool]:
    """The pools with this id (in the named account, if given: its name or key)."""
    rows = s.scalars(select(models.Pool).where(models.Pool.key.like(f"%/{pool_id.lower()}")))
    found = [p for p in rows if p.pool_id.lower() == pool_id.lower()]
    if account:
        found = [p for p in found if p.account_key.lower().rsplit("/", 1)[-1] == account.lower()
                 or p.account_key.lower() == account.lower()]
    return found


def evict(s: Session, clock: Clock, pool: models.Pool, *, count: int | None = None, fraction: float | None = None,
          rng: random.Random | None = None) -> list[str]:
    """Evict ``count`` of the pool's low-priority nodes (or ``fraction`` of them, rounded, at least one when the
    fraction is above zero). Returns the evicted nodes' ids."""
    if (count is None) == (fraction is None):
        raise errors.InvalidPropertyValue("Give either a count or a fraction of the pool's low-priority nodes.")
    if (count is not None and count < 0) or (fraction is not None and not 0 <= fraction <= 1):
        raise errors.InvalidPropertyValue("The count must be 0 or more, the fraction between 0 and 1.")
    spot = [n for n in node_rules.list_nodes(s, pool.key) if not n.is_dedicated]
    candidates = [n for n in spot if n.state in EVICTABLE and not n.pending]
    wanted = count if count is not None else max(1 if fraction else 0, round((fraction or 0) * len(spot)))
    chosen = (rng or random.Random()).sample(candidates, min(wanted, len(candidates)))
    now = clock.now()
    for node in chosen:
        node_rules.set_state(node, clock, "preempted", now)
        node.pending, node.pending_option = EVICT, "requeue"
        node.errors = []
    s.flush()  # the nodes' own changes first: releasing their tasks writes the nodes' counts in bulk
    deallocation.release_tasks(s, clock, [n.key for n in chosen], "requeue")
    return [n.node_id for n in chosen]


def stopped(s: Session, keys: Sequence[str]) -> None:
    """The evicted nodes' machines are stopped: they wait for capacity."""
    for key in keys:
        node = s.get(models.Node, key)
        if node is not None and node.state == "preempted" and node.pending == EVICT:
            node.pending = PREEMPTED


def recovered(s: Session, keys: Sequence[str], now: datetime, delay: timedelta) -> list[str]:
    """The preempted nodes (of ``keys``) whose capacity has returned: preempted for ``delay`` at least."""
    if not keys:
        return []
    rows = s.execute(select(models.Node.key, models.Node.state_transition_time).where(
        models.Node.key.in_(list(keys)), models.Node.state == "preempted", models.Node.pending == PREEMPTED)).all()
    return [key for key, at in rows if at is not None and now - _aware(at, now) >= delay]


def _aware(at: datetime, now: datetime) -> datetime:
    return at.replace(tzinfo=now.tzinfo) if at.tzinfo is None and now.tzinfo is not None else at
