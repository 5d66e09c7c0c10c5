"""Batch accounts (``Microsoft.Batch/batchAccounts``): endpoint, keys, allocation mode, quotas."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.clock import Clock
from shoal.core.ids import ResourceId
from shoal.domain import operations, resource_groups, resources
from shoal.domain.batch import pools
from shoal.store import models

TYPE = "Microsoft.Batch/batchAccounts"
_NAME = re.compile(r"^[a-z0-9]{3,24}$")
DEFAULT_QUOTAS = {"dedicatedCoreQuota": 20000, "lowPriorityCoreQuota": 20000, "poolQuota": 100,
                  "activeJobAndJobScheduleQuota": 300}
AUTH_MODES = ("SharedKey", "AAD", "TaskAuthenticationToken")


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


def endpoint(base_url: str, name: str) -> str:
    """Path-style data-plane address, without a scheme (az prefixes https://)."""
    return f"{base_url.split('://', 1)[1]}/batch/{name}"


# Built once (every Batch request looks its account up; building a statement costs more than running it here).
_BY_NAME = select(models.Resource).where(models.Resource.type_key == TYPE.lower(),
                                         models.Resource.name == bindparam("name")).limit(1)


def find_by_name(s: Session, name: str) -> models.Resource | None:
    """Account names are global (they are DNS names in Azure; path segments here)."""
    return s.scalars(_BY_NAME, {"name": name.lower()}).first()


def create_or_update(s: Session, clock: Clock, rid: ResourceId, body: dict[str, Any], regions: tuple[str, ...],
                     base_url: str) -> tuple[models.Resource, bool]:
    resource_groups.require_usable(s, rid.subscription, rid.resource_group or "")
    name = rid.name
    if not _NAME.match(name):
        raise errors.AccountNameInvalid(
            f"Account name '{name}' is invalid: use 3-24 lower-case letters and digits.", target="accountName")
    location = str(body.get("location") or "").replace(" ", "").lower()
    if location not in regions:
        raise errors.LocationNotAvailableForResourceType(
            f"The location '{body.get('location')}' is not a region of this cloud ({', '.join(regions)}).")
    props = dict(body.get("properties") or {})
    mode = str(props.get("poolAllocationMode") or "BatchService")
    if mode.lower() not in ("batchservice", "usersubscription"):
        raise errors.InvalidParameter("poolAllocationMode must be BatchService or UserSubscription.",
                                      target="properties.poolAllocationMode")
    mode = "BatchService" if mode.lower() == "batchservice" else "UserSubscription"
    modes = props.get("allowedAuthenticationModes")
    if modes is not None and (not isinstance(modes, list) or any(m not in AUTH_MODES for m in modes)):
        raise errors.InvalidParameter(f"allowedAuthenticationModes must be a list of {', '.join(AUTH_MODES)}.",
                                      target="properties.allowedAuthenticationModes")
    existing = resources.find(s, rid)
    if existing is None:
        other = find_by_name(s, name)
        if other is not None:
            raise errors.AccountNameAlreadyExists(f"The account name '{name}' is already in use. Batch account names "
                                                  "are unique across the cloud: choose another.")
    wire = {
        "accountEndpoint": endpoint(base_url, name), "poolAllocationMode": mode,
        "publicNetworkAccess": props.get("publicNetworkAccess", "Enabled"),
        "allowedAuthenticationModes": modes if modes is not None else list(AUTH_MODES),
        "dedicatedCoreQuotaPerVMFamilyEnforced": False, "dedicatedCoreQuotaPerVMFamily": [],
        "encryption": props.get("encryption") or {"keySource": "Microsoft.Batch"},
    }
    if mode == "UserSubscription":
        if not props.get("keyVaultReference"):
            raise errors.InvalidParameter("UserSubscription accounts need properties.keyVaultReference "
                                          "({id, url}).", target="properties.keyVaultReference")
        wire["keyVaultReference"] = props["keyVaultReference"]
        wire["allowedAuthenticationModes"] = [m for m in wire["allowedAuthenticationModes"] if m != "SharedKey"] \
            if modes is None else modes
    else:
        wire.update(DEFAULT_QUOTAS)
    if props.get("autoStorage"):
        wire["autoStorage"] = props["autoStorage"]
    if existing is not None:
        if existing.properties.get("poolAllocationMode") != mode:
            raise errors.OperationNotAllowed("The pool allocation mode of an account cannot be changed.")
        existing.properties = {**existing.properties, **{k: v for k, v in wire.items() if k in props}}
        if body.get("tags") is not None:
            existing.tags = body["tags"]
        resources.touch(existing, clock)
        return existing, False
    wire["activeJobAndJobScheduleQuota"] = DEFAULT_QUOTAS["activeJobAndJobScheduleQuota"]
    wire["poolQuota"] = DEFAULT_QUOTAS["poolQuota"]
    row = resources.create_row(s, clock, ResourceId(rid.subscription, rid.resource_group, rid.namespace, rid.types,
                                                    (name,)), location=location, properties=wire,
                               internal={"keys": {"primary": new_key(), "secondary": new_key()}},
                               tags=body.get("tags"), provisioning_state="Succeeded")
    return row, True


def render(row: models.Resource) -> dict[str, Any]:
    body: dict[str, Any] = {"id": row.id, "name": row.name, "type": TYPE, "location": row.location,
                            "identity": {"type": "None"},
                            "properties": {**row.properties, "provisioningState": row.provisioning_state}}
    if row.tags:
        body["tags"] = row.tags
    return body


def keys(row: models.Resource) -> dict[str, str]:
    if row.properties.get("poolAllocationMode") == "UserSubscription" or "SharedKey" not in (
            row.properties.get("allowedAuthenticationModes") or []):
        raise errors.OperationNotAllowed(
            f"Shared Key access is disabled for account '{row.name}' (its pool allocation mode is "
            f"{row.properties.get('poolAllocationMode')} or SharedKey is not an allowed authentication mode). "
            "Use Microsoft Entra ID authentication.")
    return {"accountName": row.name, "primary": row.internal["keys"]["primary"],
            "secondary": row.internal["keys"]["secondary"]}


def regenerate(clock: Clock, row: models.Resource, key_name: str) -> dict[str, str]:
    which = key_name.lower()
    if which not in ("primary", "secondary"):
        raise errors.InvalidParameter("keyName must be Primary or Secondary.", target="keyName")
    keys(row)
    row.internal = {**row.internal, "keys": {**row.internal["keys"], which: new_key()}}
    resources.touch(row, clock)
    return keys(row)


def begin_delete(s: Session, clock: Clock, rid: ResourceId) -> models.Operation | None:
    row = resources.find(s, rid)
    if row is None or row.type_key != TYPE.lower():
        return None
    active = operations.find_active(s, "batchAccounts.delete", str(rid))
    if active is not None:
        return active
    row.provisioning_state = "Deleting"
    return operations.start(s, clock, subscription_id=rid.subscription, location=row.location or "",
                            namespace="Microsoft.Batch", kind="batchAccounts.delete", target_id=str(rid))


def release(s: Session, clock: Clock, key: str) -> bool:
    """Empty an account being deleted (by itself or with its resource group): start deleting its pools (the
    allocator removes their nodes, then the pools) and, once no pool is left, delete its jobs with their tasks
    and job preparation/release records. True when only the account's resource row is left; idempotent, so
    callers call it again until then."""
    remaining = list(s.scalars(select(models.Pool).where(models.Pool.account_key == key)))
    for pool in remaining:
        pools.begin_delete(pool, clock)
    if remaining:
        return False
    unsynced = {"synchronize_session": False}
    jobs = select(models.Job.key).where(models.Job.account_key == key)
    s.execute(delete(models.Task).where(models.Task.job_key.in_(jobs)), execution_options=unsynced)
    s.execute(delete(models.JobNodeTask).where(models.JobNodeTask.job_key.in_(jobs)), execution_options=unsynced)
    s.execute(delete(models.Job).where(models.Job.account_key == key), execution_options=unsynced)
    return True


def account_key(account_id: str) -> str:
    return ids.key(account_id)
