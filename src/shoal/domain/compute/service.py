"""Create/update/delete of any Compute resource kind: records intent, leaves the work to the reconciler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, etags
from shoal.core.ids import ResourceId
from shoal.domain import operations, resource_groups, resources
from shoal.domain.compute.kinds import ArmBody, ComputeContext, ResourceKind
from shoal.store import models

NAMESPACE = "Microsoft.Compute"


def op_kind(kind: ResourceKind, work: str) -> str:
    return f"{kind.type}:{work}"


@dataclass
class Accepted:
    row: models.Resource
    created: bool
    operation: models.Operation


def put(ctx: ComputeContext, s: Session, kind: ResourceKind, rid: ResourceId, body: ArmBody,
        if_match: str | None = None, if_none_match: str | None = None) -> Accepted:
    resource_groups.require_usable(s, rid.subscription, rid.resource_group or "")
    row = resources.find(s, rid)
    etags.check_write(row.etag if row else None, if_match, if_none_match)
    if row is not None and row.provisioning_state in ("Creating", "Deleting", "Updating"):
        raise errors.OperationNotAllowed(
            f"The resource '{rid}' is being {row.provisioning_state.lower().rstrip('ing')}ed: wait for the running "
            "operation to finish, then retry.")
    created = row is None
    if row is None:
        plan = kind.plan_create(ctx, s, rid, body)
        row = resources.create_row(s, ctx.clock, rid, location=(body.location or "").replace(" ", "").lower() or None,
                                   properties=plan.properties, internal=plan.internal, tags=body.tags,
                                   sku=plan.sku, provisioning_state="Creating")
    else:
        plan = kind.plan_update(ctx, s, row, body)
        row.properties = plan.properties
        row.internal = plan.internal
        if body.tags is not None:
            row.tags = body.tags
        resources.touch(row, ctx.clock)
    work = plan.work if plan.work not in (None, "finish") else None
    op = operations.start(s, ctx.clock, subscription_id=rid.subscription, location=row.location or ctx.regions[0],
                          namespace=NAMESPACE, kind=op_kind(kind, work or "finish"), target_id=str(rid),
                          payload=plan.payload)
    if work is None:
        row.provisioning_state = "Succeeded"
        operations.finish(op, ctx.clock.now())
    else:
        row.provisioning_state = "Creating" if created else "Updating"
    return Accepted(row, created, op)


def patch_tags(ctx: ComputeContext, s: Session, rid: ResourceId, body: dict[str, Any]) -> models.Resource:
    row = resources.get(s, rid)
    if isinstance(body.get("tags"), dict):
        row.tags = body["tags"]
        resources.touch(row, ctx.clock)
    return row


def delete(ctx: ComputeContext, s: Session, kind: ResourceKind, rid: ResourceId) -> models.Operation | None:
    """Start deleting; None when the resource does not exist (ARM answers 204)."""
    row = resources.find(s, rid)
    if row is None or row.type_key != kind.type.lower():
        return None
    active = operations.find_active(s, op_kind(kind, "delete"), str(rid))
    if active is not None:
        return active
    if row.provisioning_state in ("Creating", "Updating"):
        raise errors.OperationNotAllowed(
            f"The resource '{rid}' is still being created; delete it once that has finished.")
    work = kind.plan_delete(ctx, s, row) or "delete"
    row.provisioning_state = "Deleting"
    return operations.start(s, ctx.clock, subscription_id=rid.subscription, location=row.location or ctx.regions[0],
                            namespace=NAMESPACE, kind=op_kind(kind, work), target_id=str(rid))
