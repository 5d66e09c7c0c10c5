"""Resolving the resources a disk, snapshot, image or gallery version is made from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.ids import ResourceId
from shoal.domain import resources
from shoal.domain.compute import content as ct
from shoal.domain.compute.kinds import invalid
from shoal.store import models

DISKS = "Microsoft.Compute/disks"
SNAPSHOTS = "Microsoft.Compute/snapshots"
IMAGES = "Microsoft.Compute/images"
VMS = "Microsoft.Compute/virtualMachines"
GALLERIES = "Microsoft.Compute/galleries"
GALLERY_IMAGES = "Microsoft.Compute/galleries/images"
GALLERY_VERSIONS = "Microsoft.Compute/galleries/images/versions"


@dataclass(frozen=True)
class Source:
    row: models.Resource
    rid: ResourceId

    @property
    def type(self) -> str:
        return self.row.type


def resolve(s: Session, value: str, what: str, allowed: tuple[str, ...], *, subscription: str | None = None
            ) -> Source:
    """Parse ``value`` as a resource id of one of ``allowed`` types that exists and finished provisioning."""
    try:
        rid = ids.parse(value, what=what)
    except errors.InvalidResourceId as exc:
        raise invalid(exc.message, what) from exc
    if rid.type.lower() not in {a.lower() for a in allowed}:
        raise invalid(f"The value '{value}' of {what} refers to a resource of type '{rid.type}', but it must be "
                      f"one of: {', '.join(allowed)}.", what)
    row = resources.find(s, rid)
    if row is None:
        raise errors.NotFound(
            f"The source resource '{value}' given in {what} was not found. Create it first or check the id.",
            target=what)
    if row.provisioning_state not in ("Succeeded", "Updating"):
        raise errors.OperationNotAllowed(
            f"The source resource '{value}' given in {what} is in provisioning state '{row.provisioning_state}'. "
            "Wait until it has succeeded.", target=what)
    return Source(row, rid)


def content_of(src: Source) -> dict[str, Any]:
    """Base, layers and lineage of a disk or snapshot (a disk's unsaved upper is not included)."""
    return ct.disk_content(src.row.internal)


def image_content_of(src: Source) -> dict[str, Any]:
    """Full content (base, OS layers, data layers by LUN, lineage) of an image, gallery version or VM image."""
    internal = src.row.internal
    return {"base": internal.get("base"), "os": list(internal.get("os") or []),
            "data": {str(k): list(v) for k, v in (internal.get("data") or {}).items()},
            "lineage": internal.get("lineage"), "osType": internal.get("osType", "Linux")}
