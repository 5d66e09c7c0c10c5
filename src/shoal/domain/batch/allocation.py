"""Pool allocation decisions (pure): given a pool and its nodes, what should happen next.

The reconciler loads the pool and its nodes, asks :func:`decide`, acts on the host outside any
transaction, and writes back. Deciding is a pure function so the rules are unit-tested on their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

RESIZE_FAILED_MESSAGE = ("There was an error encountered while performing the last resize on the pool. Please try "
                         "resizing the pool again.")
NODES_PER_REPLICA = 300
"""Azure's guidance for pools from Compute Gallery images: at least one replica per 300 nodes."""
INSUFFICIENT_REPLICAS = "InsufficientReplicas"


@dataclass(frozen=True)
class PoolView:
    state: str
    allocation_state: str
    target_dedicated: int
    target_low_priority: int
    resize_started_at: datetime | None
    resize_timeout: timedelta


@dataclass(frozen=True)
class NodeView:
    key: str
    is_dedicated: bool
    state: str
    pending: str
    running_tasks: int = 0


@dataclass(frozen=True)
class ReplicaView:
    """The replicas, in the pool's region, of the gallery version a pool's nodes come from."""

    region: str
    ids: tuple[str, ...]  # the ready ones


@dataclass
class Decision:
    create_dedicated: int = 0
    create_low_priority: int = 0
    remove: list[str] = field(default_factory=list)  # node keys to take out of the pool (shrink)
    settle: bool = False  # the resize is over: go steady
    complete: bool = False  # the resize is over once the nodes this decision creates exist (or settle)
    errors: list[dict[str, Any]] = field(default_factory=list)


# Nodes removed first when a pool shrinks: broken ones, then idle ones, then the least busy.
_REMOVAL_ORDER = {"unusable": 0, "starttaskfailed": 0, "offline": 1, "creating": 2, "starting": 2,
                  "waitingforstarttask": 2, "idle": 3, "running": 4}


def decide(pool: PoolView, nodes: list[NodeView], now: datetime, *, max_batch: int = 1000,
           blocked: dict[str, Any] | None = None, capacity: tuple[int, int] | None = None,
           quota_scope: str = "account", replicas: ReplicaView | None = None,
           nodes_per_replica: int = NODES_PER_REPLICA, subnet_room: tuple[int, dict[str, Any]] | None = None
           ) -> Decision:
    """``blocked``: a resize error that forbids growing (for example the image is gone), or None.
    ``capacity``: how many more (dedicated, low-priority) nodes the core quotas allow, or None; ``quota_scope``
    says whose quotas: the Batch account's, or (UserSubscription accounts) the subscription's.
    ``replicas``: for a pool from a gallery version, its replicas in the pool's region; a resize that ends with
    fewer than one replica per ``nodes_per_replica`` target nodes also reports :func:`replica_warning`.
    ``subnet_room``: for a pool in a virtual network's subnet, (free addresses there, the resize error when none
    is left): Azure allocates what fits, then reports the error."""
    if subnet_room is not None:
        free, full = subnet_room
        if capacity is None:
            capacity = (free, free)
        capacity = (min(capacity[0], free), min(capacity[1], free))
        if free <= 0 and blocked is None:
            blocked = full
    d = _decide(pool, nodes, now, max_batch=max_batch, blocked=blocked, capacity=capacity,
                quota_scope=quota_scope)
    if subnet_room is not None:  # one pool of addresses for both kinds of node
        d.create_low_priority = min(d.create_low_priority, max(0, subnet_room[0] - d.create_dedicated))
    d.complete = d.complete or d.settle
    if d.complete and replicas is not None:
        warning = replica_warning(pool.target_dedicated + pool.target_low_priority, replicas, nodes_per_replica)
        if warning is not None:
            d.errors.append(warning)
    return d


def _decide(pool: PoolView, nodes: list[NodeView], now: datetime, *, max_batch: int,
            blocked: dict[str, Any] | None, capacity: tuple[int, int] | None, quota_scope: str) -> Decision:
    d = Decision()
    if pool.state == "deleting":
        d.remove = [n.key for n in nodes if n.pending != "remove"]
        return d
    if pool.allocation_state == "steady":
        return d
    active = [n for n in nodes if n.pending != "remove"]
    leaving = [n for n in nodes if n.pending == "remove"]
    dedicated = [n for n in active if n.is_dedicated]
    low = [n for n in active if not n.is_dedicated]
    if pool.allocation_state == "stopping":
        d.settle = not leaving
        if len(dedicated) != pool.target_dedicated or len(low) != pool.target_low_priority:
            d.errors.append({"code": "ResizeStopped", "message": "Desired number of dedicated nodes could not be "
                             "allocated as the resize operation was stopped by the user.", "values": []})
        return d
    deficit_d = pool.target_dedicated - len(dedicated)
    deficit_l = pool.target_low_priority - len(low)
    if (deficit_d > 0 or deficit_l > 0) and blocked is not None:
        d.settle = not leaving
        d.errors.append(blocked)
        return d
    timed_out = (pool.resize_started_at is not None and now - pool.resize_started_at > pool.resize_timeout)
    if timed_out and (deficit_d > 0 or deficit_l > 0):
        d.settle = not leaving
        d.errors.append({"code": "AllocationTimedOut", "message": "Desired number of dedicated nodes could not be "
                         "allocated as the resize timeout was reached.", "values": [
                             {"name": "DesiredDedicatedNodes", "value": str(pool.target_dedicated)},
                             {"name": "CurrentDedicatedNodes", "value": str(len(dedicated))}]})
        return d
    if capacity is not None and ((deficit_d > 0 and capacity[0] <= 0) or (deficit_l > 0 and capacity[1] <= 0)):
        d.settle = not leaving
        kind = "dedicated" if deficit_d > 0 and capacity[0] <= 0 else "low-priority"
        if quota_scope == "subscription":
            d.errors.append({"code": "SubscriptionCoreQuotaReached", "message": "The subscription has reached its "
                             "regional vCPU quota (Total Regional vCPUs), which its VMs and the nodes of "
                             "UserSubscription pools share: the pool could not grow to its target. Free cores in "
                             "the region or raise the quota.", "values": []})
            return d
        d.errors.append({"code": "AccountCoreQuotaReached", "message": f"The specified account has reached its "
                         f"{kind} core quota: the pool could not grow to its target. Raise the quota or use fewer or "
                         "smaller nodes.", "values": []})
        return d
    limit_d, limit_l = capacity if capacity is not None else (max_batch, max_batch)
    d.create_dedicated = max(0, min(deficit_d, max_batch, limit_d))
    d.create_low_priority = max(0, min(deficit_l, max_batch - d.create_dedicated, limit_l))
    for group, deficit in ((dedicated, deficit_d), (low, deficit_l)):
        if deficit < 0:
            ranked = sorted(group, key=lambda n: (_REMOVAL_ORDER.get(n.state, 5), n.running_tasks, n.key))
            d.remove.extend(n.key for n in ranked[:-deficit])
    d.settle = deficit_d <= 0 and deficit_l <= 0 and not leaving and not d.remove
    d.complete = not leaving and not d.remove and d.create_dedicated == max(0, deficit_d) and \
        d.create_low_priority == max(0, deficit_l)
    return d


def allocation_failed(reason: str) -> dict[str, Any]:
    """The resize error Azure reports when the pool's image (or its source) no longer exists."""
    return {"code": "AllocationFailed", "message": RESIZE_FAILED_MESSAGE, "values": [{"name": "Reason",
                                                                                        "value": reason}]}


def replica_warning(target_nodes: int, replicas: ReplicaView, nodes_per_replica: int = NODES_PER_REPLICA
                    ) -> dict[str, Any] | None:
    """The warning a resize reports when a gallery version has fewer than one replica in the pool's region per
    ``nodes_per_replica`` target nodes (None when there are enough). It is not a failure: the nodes are
    provisioned from the replicas there are, only more of them share each replica."""
    needed = math.ceil(target_nodes / max(1, nodes_per_replica))
    have = len(replicas.ids)
    if have >= needed:
        return None
    return {"code": INSUFFICIENT_REPLICAS,
            "message": f"The pool reached its target, but its gallery image version has {have} replica(s) in "
                       f"region '{replicas.region}' for {target_nodes} target nodes. Use at least one replica per "
                       f"{nodes_per_replica} nodes: raise the version's regionalReplicaCount in "
                       f"'{replicas.region}' to {needed} or more.",
            "values": [{"name": "Region", "value": replicas.region},
                       {"name": "ReplicaCount", "value": str(have)},
                       {"name": "TargetNodes", "value": str(target_nodes)},
                       {"name": "RecommendedReplicaCount", "value": str(needed)}]}


def spread(machine_ids: Sequence[str], replica_ids: Sequence[str]) -> dict[str, str]:
    """Which replica each node is provisioned from: round robin over the pool's nodes in their order (oldest
    first), so that every replica serves as many nodes as the others (empty when there is no replica)."""
    if not replica_ids:
        return {}
    return {machine_id: replica_ids[i % len(replica_ids)] for i, machine_id in enumerate(machine_ids)}
