"""A subscription's regional compute usage against its quota: VMs, and the nodes of pools of Batch accounts in
``UserSubscription`` mode (their machines belong to the user's subscription, so they count there; pools of
``BatchService`` accounts count against the account's own core quotas instead).

``GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/usages`` shows it (``az vm list-usage``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.domain import resources
from shoal.domain.batch import vmsizes
from shoal.domain.compute import sources
from shoal.store import models

BATCH_ACCOUNTS = "Microsoft.Batch/batchAccounts"
DEFAULT_CORE_QUOTA = 10_000  # Total Regional vCPUs (configuration: shoal serve --subscription-core-quota)
VM_QUOTA = 25_000  # Azure's per-region limit on virtual machines


@dataclass(frozen=True)
class Usage:
    cores: int
    virtual_machines: int
    batch_nodes: int


def _cores(size: str | None) -> int:
    found = vmsizes.SIZES.get(str(size or "").lower())
    return found.cores if found else 0


def user_subscription_accounts(s: Session, subscription_id: str, location: str) -> list[models.Resource]:
    return [a for a in resources.list_of_type(s, subscription_id, BATCH_ACCOUNTS)
            if a.properties.get("poolAllocationMode") == "UserSubscription"
            and str(a.location or "").lower() == location.lower()]


def regional(s: Session, subscription_id: str, location: str, *, exclude_pool: str | None = None) -> Usage:
    """Cores used in a region by VMs and by the nodes of UserSubscription pools (optionally but one pool)."""
    cores = vms = nodes = 0
    for vm in resources.list_of_type(s, subscription_id, sources.VMS):
        if str(vm.location or "").lower() == location.lower():
            vms += 1
            cores += _cores((vm.properties.get("hardwareProfile") or {}).get("vmSize"))
    accounts = [a.key for a in user_subscription_accounts(s, subscription_id, location)]
    if accounts:
        for pool in s.scalars(select(models.Pool).where(models.Pool.account_key.in_(accounts))):
            if pool.key == exclude_pool:
                continue
            count = int(s.scalar(select(func.count()).select_from(models.Node).where(
                models.Node.pool_key == pool.key)) or 0)
            nodes += count
            cores += count * _cores(pool.spec.get("vmSize"))
    return Usage(cores, vms, nodes)


def check_room(s: Session, subscription_id: str, location: str, vm_size: str, core_quota: int) -> None:
    """A new VM must fit in the subscription's regional vCPU quota (Azure's error and wording)."""
    needed = _cores(vm_size)
    current = regional(s, subscription_id, location).cores
    if needed and current + needed > core_quota:
        raise errors.OperationNotAllowed(
            "Operation could not be completed as it results in exceeding approved Total Regional Cores quota. "
            f"Additional details - Location: {location}, Current Limit: {core_quota}, Current Usage: {current}, "
            f"Additional Required: {needed}, (Minimum) New Limit Required: {current + needed}. Delete VMs or "
            "UserSubscription pool nodes in the region, or raise the quota (shoal serve --subscription-core-quota).")


def render(usage: Usage, core_quota: int, vm_quota: int) -> list[dict[str, object]]:
    return [
        {"unit": "Count", "currentValue": usage.cores, "limit": core_quota,
         "name": {"value": "cores", "localizedValue": "Total Regional vCPUs"}},
        {"unit": "Count", "currentValue": usage.virtual_machines + usage.batch_nodes, "limit": vm_quota,
         "name": {"value": "virtualMachines", "localizedValue": "Virtual Machines"}},
    ]
