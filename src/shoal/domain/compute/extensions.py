"""VM extensions: recorded on the VM and on its OS disk's lineage (images made from it remember them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.ids import ResourceId
from shoal.domain import resources
from shoal.domain.compute import content as ct
from shoal.domain.compute.kinds import ArmBody, ComputeContext, PutPlan, invalid
from shoal.store import models


class ExtensionKind:
    type = "Microsoft.Compute/virtualMachines/extensions"
    create_status = 201
    update_status = 200

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        vm_rid = rid.parent()
        assert vm_rid is not None
        vm = resources.get(s, vm_rid)
        p = body.properties
        for key in ("publisher", "type", "typeHandlerVersion"):
            if not p.get(key):
                raise invalid(f"Required parameter '{key}' is missing (null).", f"properties.{key}")
        if vm.internal.get("generalized"):
            raise errors.OperationNotAllowed(f"Extensions cannot be installed on generalized VM '{vm.name}'.")
        record = f"{p['publisher']}.{p['type']}"
        vm.internal = {**vm.internal, "extensions": sorted({*vm.internal.get("extensions", []), record})}
        os_disk = resources.find(s, ids.parse(vm.internal["osDisk"]))
        if os_disk is not None:
            os_disk.internal = {**os_disk.internal, "lineage": ct.derive(os_disk.internal.get("lineage"),
                                                                         extensions=[record])}
        props = {k: v for k, v in p.items() if k != "protectedSettings"}
        return PutPlan(props, {"record": record}, "finish")

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        props = {**row.properties, **{k: v for k, v in body.properties.items() if k != "protectedSettings"}}
        return PutPlan(props, dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        return {**row.properties, "provisioningState": row.provisioning_state}

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        # Removing an extension does not clean the OS disk: the lineage keeps it (as Azure's guidance assumes).
        return "delete"
