"""Pools of ``UserSubscription`` accounts live in the user's subscription: each gets a resource group managed by
Batch (``batch-{account}-{pool}``, ``managedBy`` the pool) holding a virtual machine scale set whose capacity is
the pool's target, as Azure shows them; their nodes count against the subscription's regional vCPU quota
(:mod:`shoal.domain.compute.usage`). Pools of ``BatchService`` accounts have neither.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, object_session

from shoal.core import ids
from shoal.core.clock import Clock
from shoal.core.ids import ResourceId
from shoal.domain import resource_groups, resources
from shoal.store import models

SCALE_SETS = ("virtualMachineScaleSets",)


def _account(s: Session, pool: models.Pool) -> models.Resource | None:
    account = s.get(models.Resource, pool.account_key)
    if account is None or account.properties.get("poolAllocationMode") != "UserSubscription":
        return None
    return account


def group_name(account: models.Resource, pool_id: str) -> str:
    return f"batch-{account.name}-{pool_id}".lower()[:90]


def _scale_set(account: models.Resource, pool_id: str) -> ResourceId:
    return ResourceId(account.subscription_id, group_name(account, pool_id), "Microsoft.Compute", SCALE_SETS,
                      (pool_id,))


def on_create(s: Session, clock: Clock, pool: models.Pool) -> None:
    account = _account(s, pool)
    if account is None:
        return
    location = account.location or ""
    resource_groups.create_or_update(
        s, clock, account.subscription_id, group_name(account, pool.pool_id),
        resource_groups.GroupSpec(location, {"BatchAccountName": account.name, "BatchPoolName": pool.pool_id},
                                  f"{account.id}/pools/{pool.pool_id}"), (location,))
    rid = _scale_set(account, pool.pool_id)
    if resources.find(s, rid) is None:
        resources.create_row(s, clock, rid, location=account.location, provisioning_state="Succeeded",
                             properties={"provisioningState": "Succeeded", "orchestrationMode": "Uniform",
                                         "batchPool": f"{account.id}/pools/{pool.pool_id}"},
                             sku=_sku(pool), tags={"BatchAccountName": account.name, "BatchPoolName": pool.pool_id})


def on_resize(clock: Clock, pool: models.Pool) -> None:
    s = object_session(pool)
    account = _account(s, pool) if s is not None else None
    if s is None or account is None:
        return
    row = resources.find(s, _scale_set(account, pool.pool_id))
    if row is not None:
        row.sku = _sku(pool)
        resources.touch(row, clock)


def on_delete(pool: models.Pool) -> None:
    s = object_session(pool)
    account = _account(s, pool) if s is not None else None
    if s is None or account is None:
        return
    rid = _scale_set(account, pool.pool_id)
    row = resources.find(s, rid)
    if row is not None:
        s.delete(row)
    group = s.get(models.ResourceGroup, ids.key(ids.resource_group_id(account.subscription_id,
                                                                       group_name(account, pool.pool_id))))
    if group is not None:
        s.delete(group)


def _sku(pool: models.Pool) -> dict[str, object]:
    return {"name": str(pool.spec.get("vmSize") or ""), "tier": "Standard",
            "capacity": pool.target_dedicated + pool.target_low_priority}
