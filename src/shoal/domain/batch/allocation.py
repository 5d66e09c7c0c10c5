"""Pool allocation decisions (pure): given a pool and its nodes, what should happen next.

The reconciler loads the pool and its nodes, asks :func:`decide`, acts on the host outside any
transaction, and writes back. Deciding is a pure function so the rules are unit-tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

RESIZE_FAILED_MESSAGE = ("There was an error encountered while performing the last resize on the pool. Please try "
                         "resizing the pool again.")


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


@dataclass
class Decision:
    create_dedicated: int = 0
    create_low_priority: int = 0
    remove: list[str] = field(default_factory=list)  # node keys to take out of the pool (shrink)
    settle: bool = False  # the resize is over: go steady
    errors: list[dict[str, Any]] = field(default_factory=list)


# Nodes removed first when a pool shrinks: broken ones, then idle ones, then the least busy.
_REMOVAL_ORDER = {"unusable": 0, "starttaskfailed": 0, "offline": 1, "creating": 2, "starting": 2,
                  "waitingforstarttask": 2, "idle": 3, "running": 4}


def decide(pool: PoolView, nodes: list[NodeView], now: datetime, *, max_batch: int = 1000,
           blocked: dict[str, Any] | None = None, capacity: tuple[int, int] | None = None,
           quota_scope: str = "account") -> Decision:
    """``blocked``: a resize error that forbids growing (for example the image is gone), or None.
    ``capacity``: how many more (dedicated, low-priority) nodes the core quotas allow, or None; ``quota_scope``
    says whose quotas: the Batch account's, or (UserSubscription accounts) the subscription's."""
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
    return d


def allocation_failed(reason: str) -> dict[str, Any]:
    """The resize error Azure reports when the pool's image (or its source) no longer exists."""
    return {"code": "AllocationFailed", "message": RESIZE_FAILED_MESSAGE, "values": [{"name": "Reason",
                                                                                        "value": reason}]}
