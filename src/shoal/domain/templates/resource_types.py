"""How a deployment creates, reads back (for ``reference()``) and deletes (``Complete`` mode) each resource type.

A deployment goes through the same domain use cases as a direct ARM PUT of the resource, so validation and the
resource's own long-running operation are the same. ``HANDLERS`` is the one table, by lower-cased type: a
resource provider adds its types with :func:`register` (Microsoft.Compute's and Microsoft.Network's are
registered below: virtual networks and their subnets, network security groups and their security rules, public IP
addresses, network interfaces). A type without an entry fails that resource of the deployment with
``InvalidResourceType``, naming the type.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.ids import ResourceId
from shoal.domain import operations, resources
from shoal.domain.compute import service
from shoal.domain.compute.kinds import ArmBody, ComputeContext, ResourceKind
from shoal.domain.compute.registry import KINDS
from shoal.domain.networking import records
from shoal.schemas import arm_bodies, arm_compute
from shoal.store import models


class TypeHandler(Protocol):
    def put(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: dict[str, Any]) -> str | None:
        """Create or update the resource from its ARM body; the id of the operation still to complete, or None
        when it is done already. Raises the resource's own ``AzureError`` when the body is refused."""
        ...

    def read(self, s: Session, rid: ResourceId) -> dict[str, Any] | None:
        """The resource's ARM body (``id``, ``name``, ``type``, ``location``, ``properties``...), None if absent."""
        ...

    def delete(self, ctx: ComputeContext, s: Session, rid: ResourceId) -> str | None:
        """Start deleting; the id of the operation still to complete, or None when it is gone."""
        ...


HANDLERS: dict[str, TypeHandler] = {}


def register(resource_type: str, handler: TypeHandler) -> None:
    HANDLERS[resource_type.lower()] = handler


def handler_for(resource_type: str) -> TypeHandler | None:
    return HANDLERS.get(resource_type.lower())


def generic_read(s: Session, rid: ResourceId) -> dict[str, Any] | None:
    """A resource's stored ARM view, for types whose handler has nothing better."""
    row = resources.find(s, rid)
    if row is None:
        return None
    return {**resources.generic_body(row), "properties": {**row.properties,
                                                          "provisioningState": row.provisioning_state}}


def pending_operation(op: models.Operation) -> str | None:
    return op.id if op.status == operations.IN_PROGRESS else None


class ComputeHandler:
    """A Microsoft.Compute kind, through ``domain/compute/service.py`` as its ARM routes use it."""

    def __init__(self, collection: str, kind: ResourceKind) -> None:
        self.collection, self.kind = collection, kind

    def put(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: dict[str, Any]) -> str | None:
        checked = arm_bodies.normalised(body, arm_compute.BODIES[self.collection])
        try:
            arm_body = ArmBody.model_validate(checked)
        except ValidationError as exc:
            raise arm_bodies.refusal(exc, "InvalidRequestContent") from exc
        return pending_operation(service.put(ctx, s, self.kind, rid, arm_body).operation)

    def read(self, s: Session, rid: ResourceId) -> dict[str, Any] | None:
        row = resources.find(s, rid)
        if row is None or row.type_key != self.kind.type.lower():
            return None
        body: dict[str, Any] = resources.generic_body(row)
        body["properties"] = self.kind.render_properties(row)
        return body

    def delete(self, ctx: ComputeContext, s: Session, rid: ResourceId) -> str | None:
        op = service.delete(ctx, s, self.kind, rid)
        return None if op is None else pending_operation(op)


for _collection, _kind in KINDS.items():
    register(_kind.type, ComputeHandler(_collection, _kind))


def network_context(ctx: ComputeContext) -> records.NetworkContext:
    return records.NetworkContext(ctx.clock, ctx.regions, ctx.node_address_space, ctx.host_address)


class NetworkHandler:
    """A Microsoft.Network record kind, through ``domain/networking/records.py`` as its ARM routes use it: a
    write completes at once (the host's side follows in the ``vmnet`` loop)."""

    def __init__(self, kind: Any) -> None:
        self.kind = kind

    def put(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: dict[str, Any]) -> str | None:
        records.put(network_context(ctx), s, self.kind, rid, body)
        return None

    def read(self, s: Session, rid: ResourceId) -> dict[str, Any] | None:
        row = resources.find(s, rid)
        if row is None or row.type_key != self.kind.type.lower():
            return None
        return records.render(self.kind, row)

    def delete(self, ctx: ComputeContext, s: Session, rid: ResourceId) -> str | None:
        records.delete(network_context(ctx), s, self.kind, rid)
        return None


class NetworkChildHandler:
    """Subnets of a virtual network and security rules of a group: kept inline in the parent's record, written
    through it (``records.put_child``), as the child routes do."""

    def __init__(self, kind: Any, field: str) -> None:
        self.kind, self.field = kind, field

    @staticmethod
    def _parent(rid: ResourceId) -> ResourceId:
        parent = rid.parent()
        if parent is None:
            raise errors.InvalidResourceId(f"The resource id '{rid}' names no parent resource.")
        return parent

    def put(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: dict[str, Any]) -> str | None:
        records.put_child(network_context(ctx), s, self.kind, self._parent(rid), self.field, rid.name, body)
        return None

    def read(self, s: Session, rid: ResourceId) -> dict[str, Any] | None:
        try:
            return records.get_child(s, self.kind, self._parent(rid), self.field, rid.name)
        except errors.AzureError:
            return None

    def delete(self, ctx: ComputeContext, s: Session, rid: ResourceId) -> str | None:
        records.delete_child(network_context(ctx), s, self.kind, self._parent(rid), self.field, rid.name)
        return None


for _network_kind in records.KINDS.values():
    register(_network_kind.type, NetworkHandler(_network_kind))
for _collection, (_field, _) in records.CHILDREN.items():
    register(f"{records.KINDS[_collection].type}/{_field}", NetworkChildHandler(records.KINDS[_collection], _field))


def parse_id(text: str) -> ResourceId:
    return ids.parse(text)


def refused(resource_type: str) -> errors.AzureError:
    namespace = resource_type.split("/", 1)[0]
    return errors.InvalidResourceType(
        f"The resource type '{resource_type}' can't be deployed by Shoal: it serves {namespace} types "
        f"{', '.join(sorted(k for k in HANDLERS if k.startswith(namespace.lower() + '/'))) or '(none)'}. "
        "Remove the resource from the template or create it another way.")
