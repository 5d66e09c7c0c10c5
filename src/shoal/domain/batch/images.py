"""What a pool's nodes are made from: its image reference resolved to layers (and what must keep existing)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.domain import resources
from shoal.domain.batch import allocation
from shoal.domain.compute import galleries, marketplace, sources, vms
from shoal.domain.compute.kinds import ComputeContext
from shoal.store import models


def _bad(message: str, value: str) -> errors.AzureError:
    return errors.InvalidPropertyValue(message, values={"PropertyName": "imageReference", "PropertyValue": value})


def resolve(ctx: ComputeContext, s: Session, ref: dict[str, Any]) -> dict[str, Any]:
    """Content of a pool image: {"base","os","data","lineage","imageId","requires","nodeAgent"?}."""
    image_id = ref.get("virtualMachineImageId")
    if image_id:
        try:
            rid = ids.parse(str(image_id), what="imageReference.virtualMachineImageId")
        except errors.InvalidResourceId as exc:
            raise _bad(exc.message, str(image_id)) from exc
        kind = rid.type.lower()
        if kind == sources.GALLERY_IMAGES.lower():
            if resources.find(s, rid) is None:
                raise _bad(f"The gallery image '{image_id}' was not found.", str(image_id))
            src = vms.latest_version(s, rid)
            requires = [str(rid), str(src.rid)]
        elif kind in (sources.IMAGES.lower(), sources.GALLERY_VERSIONS.lower()):
            row = resources.find(s, rid)
            if row is None or row.provisioning_state != "Succeeded":
                raise _bad(f"The image '{image_id}' was not found (or has not finished provisioning).",
                           str(image_id))
            src = sources.Source(row, rid)
            requires = [str(rid)]
        else:
            raise _bad(f"'{image_id}' is not a managed image or an Azure Compute Gallery image or version.",
                       str(image_id))
        content = sources.image_content_of(src)
        content.update({"imageId": str(image_id), "requires": requires, "resolvedId": str(src.rid),
                        "location": src.row.location, "replicas": src.row.internal.get("replicas")})
        return content
    image = marketplace.from_reference(ctx, ref, "imageReference")
    base = marketplace.base_of(image)
    return {"base": base, "os": [], "data": {}, "lineage": None, "osType": image.os_type, "requires": [],
            "marketplace": True}


def problem(s: Session, pool: models.Pool) -> dict[str, Any] | None:
    """The resize error that forbids a pool to grow when the image its nodes come from (or a source it names)
    no longer exists; None while they all do."""
    for rid in pool.content.get("requires") or []:
        if resources.find(s, ids.parse(rid)) is None:
            return allocation.allocation_failed(f"The image resource '{rid}' used by the pool no longer exists.")
    return None


def replicas(s: Session, pool: models.Pool) -> allocation.ReplicaView | None:
    """The ready replicas, in the pool's region, of the gallery version the pool's nodes come from (None for a
    pool from a managed image or a marketplace image)."""
    resolved = pool.content.get("resolvedId")
    if not resolved or pool.content.get("replicas") is None:
        return None
    version = resources.find(s, ids.parse(resolved))
    account = s.get(models.Resource, pool.account_key)
    if version is None or account is None:
        return None
    region = galleries.region_key(account.location or "")
    return allocation.ReplicaView(region, tuple(galleries.ready_replicas(version.internal, region)))
