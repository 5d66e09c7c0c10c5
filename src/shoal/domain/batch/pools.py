"""Pool rules: creation, scale requests, resize/stop/remove transitions, deletion.

Requests only record intent (targets, allocation state, pending node removals); the pool allocation
reconciler creates and removes nodes. The allocation state changes only through :func:`set_allocation`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from shoal.core import errors, etags, ids, timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import managed, mounts, natpools, vmsizes
from shoal.store import models

_POOL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_RESIZE_TIMEOUT = timedelta(minutes=5)
DEFAULT_RESIZE_TIMEOUT = timedelta(minutes=15)
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")
STEADY, RESIZING, STOPPING = "steady", "resizing", "stopping"


def bad_value(prop: str, value: Any, why: str) -> errors.AzureError:
    return errors.InvalidPropertyValue(
        f"The value provided for one of the properties in the request body is invalid: {prop} ({why}).",
        values={"PropertyName": prop, "PropertyValue": str(value)[:200], "Reason": why})


def missing(prop: str) -> errors.AzureError:
    return errors.MissingRequiredProperty(f"A required property was not specified in the request body: {prop}.",
                                          values={"PropertyName": prop})


@dataclass
class Scale:
    target_dedicated: int = 0
    target_low_priority: int = 0
    resize_timeout: timedelta = DEFAULT_RESIZE_TIMEOUT
    deallocation_option: str = "requeue"
    auto_scale: dict[str, Any] | None = None


def _count(value: Any, prop: str) -> int:
    """Node counts arrive as numbers or, from az, as strings."""
    try:
        n = int(value)
    except (TypeError, ValueError) as exc:
        raise bad_value(prop, value, "an integer is required") from exc
    if n < 0 or str(value).strip() not in (str(n), f"{n}.0"):
        raise bad_value(prop, value, "a non-negative integer is required")
    return n


def parse_timeout(value: Any, prop: str = "resizeTimeout") -> timedelta:
    if value is None:
        return DEFAULT_RESIZE_TIMEOUT
    try:
        delta = timefmt.parse_duration(str(value))
    except timefmt.TimeFormatError as exc:
        raise bad_value(prop, value, "an ISO 8601 duration such as PT15M is required") from exc
    if delta < MIN_RESIZE_TIMEOUT:
        raise bad_value(prop, value, "the minimum resize timeout is 5 minutes (PT5M)")
    return delta


def parse_deallocation(value: Any, prop: str = "nodeDeallocationOption") -> str:
    if value is None:
        return "requeue"
    v = str(value).lower()
    if v not in DEALLOCATION_OPTIONS:
        raise bad_value(prop, value, f"one of {', '.join(DEALLOCATION_OPTIONS)} is required")
    return v


def scale_from_body(body: dict[str, Any], *, deallocation_key: str = "nodeDeallocationOption") -> Scale:
    return Scale(_count(body.get("targetDedicatedNodes", 0), "targetDedicatedNodes"),
                 _count(body.get("targetLowPriorityNodes", 0), "targetLowPriorityNodes"),
                 parse_timeout(body.get("resizeTimeout")), parse_deallocation(body.get(deallocation_key)))


def validate_spec(spec: dict[str, Any]) -> vmsizes.VmSize:
    if not spec.get("vmSize"):
        raise missing("vmSize")
    size = vmsizes.lookup(spec["vmSize"])
    vmc = spec.get("virtualMachineConfiguration")
    if not isinstance(vmc, dict):
        raise missing("virtualMachineConfiguration")
    if not isinstance(vmc.get("imageReference"), dict) or not vmc["imageReference"]:
        raise missing("virtualMachineConfiguration.imageReference")
    if not vmc.get("nodeAgentSKUId"):
        raise missing("virtualMachineConfiguration.nodeAgentSKUId")
    slots = spec.get("taskSlotsPerNode", 1)
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1 or slots > size.max_task_slots:
        raise bad_value("taskSlotsPerNode", slots, f"must be between 1 and {size.max_task_slots} for {size.name} "
                        "(4 x cores, at most 256)")
    policy = (spec.get("taskSchedulingPolicy") or {}).get("nodeFillType", "spread")
    if str(policy).lower() not in ("spread", "pack"):
        raise bad_value("taskSchedulingPolicy.nodeFillType", policy, "spread or pack")
    order = (spec.get("taskSchedulingPolicy") or {}).get("jobDefaultOrder", "none")
    if str(order).lower() not in ("none", "creationtime"):
        raise bad_value("taskSchedulingPolicy.jobDefaultOrder", order, "none or creationtime")
    start = spec.get("startTask")
    if start is not None and not (isinstance(start, dict) and start.get("commandLine")):
        raise missing("startTask.commandLine")
    natpools.validate(spec)
    mounts.validate(spec.get("mountConfiguration"))
    return size


def pool_key(account_key: str, pool_id: str) -> str:
    return f"{account_key}/{pool_id.lower()}"


def find(s: Session, account_key: str, pool_id: str) -> models.Pool | None:
    return s.get(models.Pool, pool_key(account_key, pool_id))


def get(s: Session, account_key: str, pool_id: str, *, for_update: bool = False) -> models.Pool:
    pool = find(s, account_key, pool_id)
    if pool is None:
        raise errors.PoolNotFound("The specified pool does not exist.")
    if for_update and pool.state == "deleting":
        raise errors.PoolBeingDeleted("The specified pool has been marked for deletion and is being reclaimed.")
    return pool


def list_pools(s: Session, account_key: str) -> list[models.Pool]:
    return list(s.scalars(select(models.Pool).where(models.Pool.account_key == account_key).order_by(
        models.Pool.key)))


def node_counts(s: Session, keys: list[str]) -> dict[str, tuple[int, int]]:
    """(dedicated, low-priority) nodes per pool, not counting nodes already leaving."""
    out = {k: (0, 0) for k in keys}
    rows = s.execute(select(models.Node.pool_key, models.Node.is_dedicated, func.count()).where(
        models.Node.pool_key.in_(keys), models.Node.pending != "remove").group_by(
        models.Node.pool_key, models.Node.is_dedicated)).all()
    for key, dedicated, n in rows:
        d, lp = out[key]
        out[key] = (d + n, lp) if dedicated else (d, lp + n)
    return out


def touch(pool: models.Pool, clock: Clock) -> None:
    pool.etag = etags.new_etag()
    pool.last_modified = clock.now()


def set_allocation(pool: models.Pool, clock: Clock, state: str) -> None:
    """The one place the allocation state changes (steady <-> resizing -> stopping -> steady)."""
    allowed = {STEADY: {RESIZING}, RESIZING: {STEADY, STOPPING, RESIZING}, STOPPING: {STEADY, STOPPING}}
    if state not in allowed[pool.allocation_state]:
        raise errors.OperationInvalidForCurrentState(
            f"Pool allocation state cannot go from {pool.allocation_state} to {state}.")
    if state != pool.allocation_state:
        pool.allocation_state = state
        pool.allocation_state_transition_time = clock.now()


def create(s: Session, clock: Clock, account_key: str, pool_id: str, spec: dict[str, Any], scale: Scale,
           content: dict[str, Any], pool_quota: int) -> models.Pool:
    if not _POOL_ID.match(pool_id or ""):
        raise bad_value("id", pool_id, "1-64 letters, digits, hyphens and underscores")
    if find(s, account_key, pool_id) is not None:
        raise errors.PoolExists("The specified pool already exists.")
    if len(list_pools(s, account_key)) >= pool_quota:
        raise errors.PoolQuotaReached(f"The account has reached its pool quota ({pool_quota}). Delete pools or raise "
                                      "the quota.")
    now = clock.now()
    resizing = scale.target_dedicated + scale.target_low_priority > 0
    pool = models.Pool(
        key=pool_key(account_key, pool_id), account_key=account_key, pool_id=pool_id, spec=spec, content=content,
        state="active", state_transition_time=now, allocation_state=RESIZING if resizing else STEADY,
        allocation_state_transition_time=now, target_dedicated=scale.target_dedicated,
        target_low_priority=scale.target_low_priority, resize_timeout_s=int(scale.resize_timeout.total_seconds()),
        deallocation_option=scale.deallocation_option, resize_started_at=now if resizing else None,
        resize_errors=[], autoscale=scale.auto_scale or {}, etag=etags.new_etag(), created_at=now,
        last_modified=now)
    s.add(pool)
    managed.on_create(s, clock, pool)
    return pool


def resize(pool: models.Pool, clock: Clock, scale: Scale, *, by_autoscale: bool = False) -> None:
    """New targets; ``by_autoscale`` for the pool's own formula (manual resizes of autoscale pools are refused)."""
    if pool.autoscale.get("enabled") and not by_autoscale:
        raise errors.PoolAutoScaleEnabled(
            "The pool has automatic scaling enabled: disable it before resizing manually.")
    if pool.allocation_state != STEADY:
        raise errors.PoolNotSteady(f"The pool is {pool.allocation_state}: a resize is allowed only when its "
                                   "allocation state is steady. Stop the current resize or wait for it to finish.")
    pool.target_dedicated, pool.target_low_priority = scale.target_dedicated, scale.target_low_priority
    pool.resize_timeout_s = int(scale.resize_timeout.total_seconds())
    pool.deallocation_option = scale.deallocation_option
    pool.resize_started_at = clock.now()
    pool.resize_errors = []
    set_allocation(pool, clock, RESIZING)
    touch(pool, clock)
    managed.on_resize(clock, pool)


def stop_resize(pool: models.Pool, clock: Clock) -> None:
    if pool.allocation_state == RESIZING:
        set_allocation(pool, clock, STOPPING)
        touch(pool, clock)


def remove_nodes(s: Session, pool: models.Pool, clock: Clock, node_ids: list[str], timeout: timedelta,
                 option: str) -> None:
    if pool.allocation_state != STEADY:
        raise errors.PoolNotSteady("Nodes can be removed only while the pool's allocation state is steady.")
    if not node_ids or len(node_ids) > 100:
        raise bad_value("nodeList", len(node_ids), "between 1 and 100 node ids are required")
    nodes = {n.node_id.lower(): n for n in s.scalars(select(models.Node).where(models.Node.pool_key == pool.key))}
    chosen = []
    for node_id in node_ids:
        node = nodes.get(str(node_id).lower())
        if node is None:
            raise errors.NodeNotFound(f"The node '{node_id}' is not part of the pool.", values={"NodeId": str(node_id)})
        chosen.append(node)
    for node in chosen:
        if node.pending != "remove":
            node.pending, node.pending_option = "remove", option
            if node.is_dedicated:
                pool.target_dedicated = max(0, pool.target_dedicated - 1)
            else:
                pool.target_low_priority = max(0, pool.target_low_priority - 1)
    pool.resize_timeout_s = int(timeout.total_seconds())
    pool.deallocation_option = option
    pool.resize_started_at = clock.now()
    pool.resize_errors = []
    set_allocation(pool, clock, RESIZING)
    touch(pool, clock)


def begin_delete(pool: models.Pool, clock: Clock) -> None:
    if pool.state != "deleting":
        pool.state = "deleting"
        pool.state_transition_time = clock.now()
        touch(pool, clock)
        managed.on_delete(pool)


def finish_delete(s: Session, pool: models.Pool) -> bool:
    """A deleting pool whose nodes are all gone is deleted; True when it was."""
    if pool.state != "deleting" or s.scalar(select(exists().where(models.Node.pool_key == pool.key))):
        return False
    s.delete(pool)
    return True


def end_resize(pool: models.Pool, clock: Clock, resize_errors: list[dict[str, Any]]) -> None:
    """A resize is over: the pool goes steady with the resize's errors (warnings included)."""
    pool.resize_errors = resize_errors
    set_allocation(pool, clock, STEADY)
    touch(pool, clock)


def new_node_id(clock: Clock) -> str:
    return f"tvm-{uuid.uuid4().int % 10**10}_{uuid.uuid4().int % 10**4}-{clock.now().strftime('%Y%m%dt%H%M%Sz')}"


def account_key_of(account_id: str) -> str:
    return ids.key(account_id)
