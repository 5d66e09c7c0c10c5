"""The contract each ARM resource type implements, and the context rules need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import Field, field_validator
from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.core.clock import Clock
from shoal.core.ids import ResourceId
from shoal.schemas.arm import WireModel
from shoal.store import models


class ArmBody(WireModel):
    """The envelope every ARM resource PUT shares, built from a body its kind's wire model checked
    (``schemas/arm_compute.py``): ``properties`` are typed, normalised and hold only what the caller gave."""

    location: str | None = None
    tags: dict[str, str] | None = None
    sku: dict[str, Any] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    zones: list[str] | None = None
    plan: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None

    @field_validator("properties", mode="before")
    @classmethod
    def _absent_when_null(cls, value: Any) -> Any:
        return {} if value is None else value


@dataclass
class ComputeContext:
    clock: Clock
    regions: tuple[str, ...]
    catalog: Any  # shoal.runtime.marketplace.Catalog (data only)
    base_url: str
    limits: Any = None  # shoal.domain.batch.image_rules.ImageLimits (None: the defaults)
    core_quota: int = 10_000  # the subscription's Total Regional vCPUs (see shoal.domain.compute.usage)
    node_address_space: str = "10.224.0.0/12"  # ``--node-address-space`` (Microsoft.Network records map into it)
    own_networks: bool = True  # machines have networks of their own (not --node-network host, not the fallback)
    host_address: str | None = None  # machines share the host's network: its address (public IPs show it)


@dataclass
class PutPlan:
    properties: dict[str, Any]
    internal: dict[str, Any] = field(default_factory=dict)
    work: str | None = None  # operation kind the reconciler must complete; None = done now
    payload: dict[str, Any] = field(default_factory=dict)
    sku: dict[str, Any] | None = None


class ResourceKind(Protocol):
    type: str  # e.g. "Microsoft.Compute/snapshots"
    create_status: int  # the initial status the SDKs accept for a create (snapshots 202, images 201...)
    update_status: int

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan: ...

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan: ...

    def render_properties(self, row: models.Resource) -> dict[str, Any]: ...

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None: ...


def require_location(ctx: ComputeContext, body: ArmBody, *, default: str | None = None) -> str:
    loc = (body.location or default or "").replace(" ", "").lower()
    if not loc:
        raise errors.LocationRequired("The location property is required for this definition.")
    if loc not in ctx.regions:
        raise errors.LocationNotAvailableForResourceType(
            f"The provided location '{body.location}' is not available for resource type '...'. List of available "
            f"regions is '{','.join(ctx.regions)}'.")
    return loc


def invalid(message: str, target: str | None = None) -> errors.AzureError:
    return errors.InvalidParameter(message, target=target)


def ref_id(value: Any, what: str) -> str:
    """The ``id`` inside a ``{"id": ...}`` reference, or a 400 naming the property."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise invalid(f"The value of parameter {what} is invalid: a resource id is required.", what)
    return value
