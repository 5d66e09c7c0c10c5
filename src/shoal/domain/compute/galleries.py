"""Azure Compute Gallery: galleries, image definitions and replicated image versions.

A version's replicas are real: per target region the reconciler prepares ``regionalReplicaCount``
ready-to-mount copies of the image (each disk's layers flattened into one lower directory, see
``runtime/replicas.py``), and the version reports progress until all are ready. Pools from the version
provision their nodes from the replicas in the pool's region, spread across them.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.ids import ResourceId
from shoal.core.timefmt import format_timestamp
from shoal.domain import resources
from shoal.domain.compute import content as ct
from shoal.domain.compute import sources
from shoal.domain.compute.kinds import ArmBody, ComputeContext, PutPlan, invalid, ref_id, require_location
from shoal.store import models

_VERSION = re.compile(r"^\d{1,9}\.\d{1,9}\.\d{1,9}$")
_GALLERY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,78}[A-Za-z0-9]$|^[A-Za-z0-9]$")
MAX_REPLICAS_PER_REGION = 100


class GalleryKind:
    type = sources.GALLERIES
    create_status = 201
    update_status = 200

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        require_location(ctx, body)
        if not _GALLERY_NAME.match(rid.name):
            raise errors.InvalidResourceName(
                f"The gallery name '{rid.name}' is invalid: use letters, digits, '.' and '_', starting and "
                "ending with a letter or digit, at most 80 characters.")
        props = {k: v for k, v in body.properties.items() if k in ("description", "sharingProfile")}
        props["identifier"] = {"uniqueName": f"{rid.subscription}-{rid.name.upper()}"}
        return PutPlan(props, {}, "finish")

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        props = dict(row.properties)
        if "description" in body.properties:
            props["description"] = body.properties["description"]
        return PutPlan(props, dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        return {**row.properties, "provisioningState": row.provisioning_state}

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        if resources.children(s, ids.parse(row.id)):
            raise errors.CannotDeleteResource(
                f"The gallery '{row.name}' cannot be deleted because it contains image definitions. "
                "Delete them first.")
        return "delete"


class GalleryImageKind:
    type = sources.GALLERY_IMAGES
    create_status = 201
    update_status = 200

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        gallery = rid.parent()
        assert gallery is not None
        resources.get(s, gallery)
        require_location(ctx, body)
        p = body.properties
        if str(p.get("osType", "")).lower() not in ("linux", "windows"):
            raise invalid("Required parameter 'osType' is missing or invalid: use Linux or Windows.",
                          "properties.osType")
        if str(p.get("osState", "")).lower() not in ("generalized", "specialized"):
            raise invalid("Required parameter 'osState' is missing or invalid: use Generalized or Specialized.",
                          "properties.osState")
        ident = p.get("identifier")
        if not isinstance(ident, dict) or not all(ident.get(k) for k in ("publisher", "offer", "sku")):
            raise invalid("Required parameter 'identifier' must have publisher, offer and sku.",
                          "properties.identifier")
        props = dict(p)
        props["osType"] = str(p["osType"]).capitalize()
        props["osState"] = str(p["osState"]).capitalize()
        props.setdefault("hyperVGeneration", "V1")
        props.setdefault("architecture", "x64")
        return PutPlan(props, {}, "finish")

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        props = dict(row.properties)
        for key in ("description", "eula", "endOfLifeDate", "recommended", "privacyStatementUri", "releaseNoteUri"):
            if key in body.properties:
                props[key] = body.properties[key]
        return PutPlan(props, dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        return {**row.properties, "provisioningState": row.provisioning_state}

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        if resources.children(s, ids.parse(row.id)):
            raise errors.CannotDeleteResource(
                f"The gallery image '{row.name}' cannot be deleted because it has versions. Delete them first.")
        return "delete"


def _target_regions(ctx: ComputeContext, profile: dict[str, Any], default_region: str) -> list[dict[str, Any]]:
    default_count = profile.get("replicaCount", 1)
    regions = profile.get("targetRegions") or [{"name": default_region}]
    out: list[dict[str, Any]] = []
    for i, r in enumerate(regions):
        name = region_key(str(r.get("name", ""))) if isinstance(r, dict) else ""
        if name not in ctx.regions:
            raise invalid(f"publishingProfile.targetRegions[{i}].name '{name}' is not a region of this cloud "
                          f"({', '.join(ctx.regions)}).", f"publishingProfile.targetRegions[{i}].name")
        count = r.get("regionalReplicaCount", default_count)
        if not isinstance(count, int) or not 1 <= count <= MAX_REPLICAS_PER_REGION:
            raise invalid(f"publishingProfile.targetRegions[{i}].regionalReplicaCount must be between 1 and "
                          f"{MAX_REPLICAS_PER_REGION}.", f"publishingProfile.targetRegions[{i}].regionalReplicaCount")
        if any(o["name"] == name for o in out):
            raise invalid(f"Region '{name}' is listed twice in publishingProfile.targetRegions.",
                          "publishingProfile.targetRegions")
        out.append({"name": name, "regionalReplicaCount": count,
                    "storageAccountType": r.get("storageAccountType", "Standard_LRS")})
    return out


class GalleryImageVersionKind:
    type = sources.GALLERY_VERSIONS
    create_status = 201
    update_status = 200

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        definition = rid.parent()
        assert definition is not None
        def_row = resources.get(s, definition)
        location = require_location(ctx, body, default=def_row.location)
        if not _VERSION.match(rid.name):
            raise errors.InvalidParameter(
                f"The gallery image version name '{rid.name}' is invalid: use Major.Minor.Patch with integers "
                "(for example 1.0.0).", target="galleryImageVersionName")
        p = body.properties
        storage = p.get("storageProfile") or {}
        internal = self._content(s, storage)
        if internal["osType"].lower() != str(def_row.properties.get("osType", "Linux")).lower():
            raise invalid(f"The source's OS type '{internal['osType']}' does not match the image definition's "
                          f"'{def_row.properties.get('osType')}'.", "storageProfile.source")
        profile = dict(p.get("publishingProfile") or {})
        profile["targetRegions"] = _target_regions(ctx, profile, location)
        profile.setdefault("replicaCount", 1)
        profile.setdefault("excludeFromLatest", False)
        profile.setdefault("storageAccountType", "Standard_LRS")
        profile["publishedDate"] = format_timestamp(ctx.clock.now())
        internal["replicas"] = {r["name"]: {"target": r["regionalReplicaCount"], "ready": 0}
                                for r in profile["targetRegions"]}
        internal["uniqueId"] = str(uuid.uuid4())
        wire_storage: dict[str, Any] = {k: v for k, v in storage.items()}
        wire_storage.setdefault("osDiskImage", {})
        wire_storage["osDiskImage"] = {**wire_storage["osDiskImage"], "hostCaching": "ReadWrite",
                                       "sizeInGB": internal.pop("osSize", 30)}
        return PutPlan({"publishingProfile": profile, "storageProfile": wire_storage,
                        "safetyProfile": {"allowDeletionOfReplicatedLocations": True}}, internal, "replicate",
                       {"regions": profile["targetRegions"]})

    def _content(self, s: Session, storage: dict[str, Any]) -> dict[str, Any]:
        src_ref = storage.get("source")
        if src_ref:
            src = sources.resolve(s, ref_id(src_ref, "storageProfile.source.id"), "storageProfile.source.id",
                                  (sources.IMAGES, sources.GALLERY_VERSIONS, sources.VMS))
            if src.type.lower() == sources.VMS.lower():
                if src.row.internal.get("power") == "running":
                    raise errors.OperationNotAllowed(
                        f"The source VM '{src.rid}' is running. Stop or deallocate it (and generalize it for a "
                        "generalized image) before creating an image version from it.")
                # Its disks are captured by the reconciler, before replication.
                return {"captureVm": str(src.rid), "osType": "Linux", "base": None, "os": [], "data": {},
                        "lineage": None, "osSize": 30}
            img = sources.image_content_of(src)
            field = "sourceImage"
            img["lineage"] = ct.derive(img["lineage"], **{field: str(src.rid)})
            img["osSize"] = ((src.row.properties.get("storageProfile") or {}).get("osDisk") or {}).get("diskSizeGB", 30)
            return img
        os_image = storage.get("osDiskImage") or {}
        if not os_image.get("source"):
            raise invalid("storageProfile must have 'source' (a managed image or version) or "
                          "'osDiskImage.source' (a snapshot or disk).", "storageProfile")
        os_src = sources.resolve(s, ref_id(os_image["source"], "storageProfile.osDiskImage.source.id"),
                                 "storageProfile.osDiskImage.source.id", (sources.SNAPSHOTS, sources.DISKS))
        os_content = sources.content_of(os_src)
        if not os_content["os"]:
            raise invalid(f"'{os_src.rid}' is a data disk: osDiskImage.source needs an OS disk snapshot.",
                          "storageProfile.osDiskImage.source.id")
        data: dict[str, Any] = {}
        lineages = []
        for i, dd in enumerate(storage.get("dataDiskImages") or []):
            lun = dd.get("lun")
            if not isinstance(lun, int) or str(lun) in data:
                raise invalid(f"storageProfile.dataDiskImages[{i}].lun must be a unique integer.",
                              f"storageProfile.dataDiskImages[{i}].lun")
            d = sources.resolve(s, ref_id(dd.get("source"), f"storageProfile.dataDiskImages[{i}].source.id"),
                                f"storageProfile.dataDiskImages[{i}].source.id", (sources.SNAPSHOTS, sources.DISKS))
            dc = sources.content_of(d)
            data[str(lun)] = dc["layers"]
            lineages.append(ct.derive(dc["lineage"], sourceSnapshots=[str(d.rid)]))
        lineage = ct.merge_lineages(ct.derive(os_content["lineage"], sourceSnapshots=[str(os_src.rid)],
                                              method=ct.METHOD_SNAPSHOT), lineages)
        return {"base": os_content["base"], "os": os_content["layers"], "data": data, "lineage": lineage,
                "osType": (os_src.row.properties.get("osType") or "Linux"),
                "osSize": os_src.row.properties.get("diskSizeGB", 30)}

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        props = dict(row.properties)
        profile = body.properties.get("publishingProfile") or {}
        if "excludeFromLatest" in profile:
            props["publishingProfile"] = {**props["publishingProfile"],
                                          "excludeFromLatest": profile["excludeFromLatest"]}
        return PutPlan(props, dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        return {**row.properties, "provisioningState": row.provisioning_state}

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        return "delete"


def region_key(name: str) -> str:
    """Regions as replicas are keyed: "West US" -> "westus"."""
    return name.replace(" ", "").lower()


def replica_id(unique_id: str, n: int) -> str:
    """The host name of a version's n-th replica in a region (the same ids in every region)."""
    return f"{unique_id}-{n}"


def ready_replicas(internal: dict[str, Any], region: str) -> list[str]:
    """Ids of a version's replicas that are ready in ``region`` (none for other images)."""
    rep = (internal.get("replicas") or {}).get(region_key(region)) or {}
    unique_id = internal.get("uniqueId")
    if not unique_id:
        return []
    return [replica_id(unique_id, n) for n in range(int(rep.get("ready", 0)))]


def replication_status(row: models.Resource) -> dict[str, Any]:
    """``$expand=ReplicationStatus``: per region, replicas ready out of target."""
    summary = []
    states = []
    for region, rep in (row.internal.get("replicas") or {}).items():
        target, ready = int(rep["target"]), int(rep["ready"])
        state = "Completed" if ready >= target else ("Failed" if rep.get("error") else "Replicating")
        states.append(state)
        summary.append({"region": region, "state": state, "details": rep.get("error") or "",
                        "progress": int(100 * ready / target) if target else 100})
    aggregated = ("Failed" if "Failed" in states else "InProgress" if "Replicating" in states else "Completed")
    return {"aggregatedState": aggregated, "summary": summary}
