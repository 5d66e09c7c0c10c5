"""Pool create/update entry points shared by both planes (they differ only in spelling and auth)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, etags
from shoal.core.apiversion import ApiVersion
from shoal.domain.batch import applications, image_rules, images, natpools, node_agents, pool_subnets, pools
from shoal.domain.compute.kinds import ComputeContext
from shoal.store import models

MUTABLE = ("startTask", "metadata", "applicationPackageReferences", "certificateReferences", "displayName",
           "targetNodeCommunicationMode")


@dataclass(frozen=True)
class Plane:
    """Who is asking: the management plane (ARM) or the data plane, and with which api-version."""

    name: str  # "arm" | "data"
    version: ApiVersion
    caller: Any = None  # the Entra ID principal (None for Shared Key)


def account_quota(account: models.Resource, name: str) -> int:
    return int(account.properties.get(name) or 10**9)


def create_pool(ctx: ComputeContext, s: Session, account: models.Resource, pool_id: str, spec: dict[str, Any],
                scale: pools.Scale, plane: Plane) -> models.Pool:
    pools.validate_spec(spec)
    node_agents.check_new_pool(str(spec["virtualMachineConfiguration"]["nodeAgentSKUId"]), ctx.catalog,
                               ctx.clock.now())
    ref = spec["virtualMachineConfiguration"]["imageReference"]
    content = images.resolve(ctx, s, ref)
    image_rules.check_image(s, ctx.catalog, account, spec, content, plane.caller,
                            mode=str(account.properties.get("poolAllocationMode") or "BatchService"))
    applications.check_pool_references(s, account, spec.get("applicationPackageReferences"))
    key = pools.pool_key(account.key, pool_id)
    image_rules.check_node_limits(s, ctx.limits or image_rules.ImageLimits(), account.key, key, spec, content,
                                  scale.target_dedicated, scale.target_low_priority, _nat_capacity(spec))
    pool = pools.create(s, ctx.clock, account.key, pool_id, spec, scale, content,
                        account_quota(account, "poolQuota"))
    pool_subnets.place(s, ctx.node_address_space, account, pool, own_network=ctx.own_networks)
    return pool


def resize_pool(ctx: ComputeContext, s: Session, pool: models.Pool, scale: pools.Scale) -> None:
    """A manual resize, within the node limits of the pool's image lineage."""
    image_rules.check_node_limits(s, ctx.limits or image_rules.ImageLimits(), pool.account_key, pool.key, pool.spec,
                                  pool.content or {}, scale.target_dedicated, scale.target_low_priority,
                                  _nat_capacity(pool.spec))
    pools.resize(pool, ctx.clock, scale)


def _nat_capacity(spec: dict[str, Any]) -> int | None:
    return natpools.node_capacity(spec)


def update_pool(ctx: ComputeContext, pool: models.Pool, changes: dict[str, Any], *, replace: bool) -> None:
    """PATCH (only given fields) or updateproperties (``replace``: every mutable field, missing ones cleared)."""
    immutable = [k for k in ("vmSize", "virtualMachineConfiguration") if k in changes
                 and changes[k] != pool.spec.get(k)]
    if immutable:
        raise errors.PropertyCannotBeUpdated(f"The property '{immutable[0]}' of an existing pool cannot be changed. "
                                             "Create a new pool instead.", values={"PropertyName": immutable[0]})
    spec = dict(pool.spec)
    if replace:
        for key in ("metadata", "applicationPackageReferences", "certificateReferences"):
            if key not in changes:
                raise pools.missing(key)
        for key in ("startTask", "targetNodeCommunicationMode"):
            if key not in changes:
                spec.pop(key, None)
    for key in MUTABLE:
        if key in changes:
            if changes[key] is None:
                spec.pop(key, None)
            else:
                spec[key] = changes[key]
    if spec.get("startTask") is not None and not spec["startTask"].get("commandLine"):
        raise pools.missing("startTask.commandLine")
    pool.spec = spec
    pools.touch(pool, ctx.clock)


def check_conditions(pool: models.Pool | None, if_match: str | None, if_none_match: str | None) -> None:
    etags.check_write(pool.etag if pool else None, if_match, if_none_match)
