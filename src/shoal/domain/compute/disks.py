"""Managed disks (``Microsoft.Compute/disks``) and snapshots (``Microsoft.Compute/snapshots``).

A disk is a stack of read-only layers (plus a base for OS disks) and, while it exists, a writable upper
directory of its own. A snapshot captures a disk: the disk's upper becomes a new immutable layer, so the
snapshot's stack is the disk's stack plus that layer. Snapshots are read-only.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.core.ids import ResourceId
from shoal.core.timefmt import format_timestamp
from shoal.domain.compute import content as ct
from shoal.domain.compute import sources
from shoal.domain.compute.kinds import ArmBody, ComputeContext, PutPlan, invalid, require_location
from shoal.store import models

MAX_DISK_GB = 32767
GIB = 1024**3


def _size(props: dict[str, Any], *, required: bool, default: int | None = None) -> int | None:
    size = props.get("diskSizeGB", default)
    if size is None:
        if required:
            raise invalid("Required parameter 'diskSizeGB' is missing (null).", "diskSizeGB")
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_DISK_GB:
        raise invalid(f"The value '{size}' of parameter 'diskSizeGB' is out of range. The value must be between 1 "
                      f"and {MAX_DISK_GB}.", "diskSizeGB")
    return size


def _encrypted(props: dict[str, Any]) -> bool:
    enc = props.get("encryptionSettingsCollection") or {}
    return bool(enc.get("enabled")) if isinstance(enc, dict) else False


def plan_from_creation_data(ctx: ComputeContext, s: Session, props: dict[str, Any], *, snapshot: bool
                            ) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """Validate ``creationData``; returns (internal, work kind or None, work payload)."""
    cd = props.get("creationData")
    if not isinstance(cd, dict) or not cd.get("createOption"):
        raise invalid("Required parameter 'creationData.createOption' is missing (null).", "creationData.createOption")
    option = str(cd["createOption"]).lower()
    encrypted = _encrypted(props)
    os_type = props.get("osType")
    if option == "empty" and not snapshot:
        _size(props, required=True)
        empty: dict[str, Any] = {"base": None, "layers": [], "os": False, "lineage": ct.new_lineage(None)}
        return empty, None, {}
    if option == "copy":
        src = sources.resolve(s, str(cd.get("sourceResourceId") or ""), "creationData.sourceResourceId",
                              (sources.DISKS, sources.SNAPSHOTS))
        content = sources.content_of(src)
        field = "sourceSnapshots" if src.type.lower() == sources.SNAPSHOTS.lower() else "sourceDisks"
        content["lineage"] = ct.derive(content["lineage"], **{field: [str(src.rid)]}, osDiskEncrypted=encrypted)
        if src.type.lower() == sources.DISKS.lower():
            # The source disk's writable upper must be captured first: asynchronous work.
            return content, "capture", {"sourceDisk": str(src.rid)}
        return content, None, {}
    if option == "import":
        uri = cd.get("sourceUri")
        if not isinstance(uri, str) or not uri:
            raise invalid("Required parameter 'creationData.sourceUri' is missing (null).", "creationData.sourceUri")
        imported: dict[str, Any] = {"base": None, "layers": [], "os": bool(os_type),
                    "lineage": ct.derive(ct.new_lineage(None), method=ct.METHOD_DISK_FILE, osDiskEncrypted=encrypted)}
        return imported, "import", {"sourceUri": uri, "osType": os_type}
    if option == "fromimage" and not snapshot:
        return _from_image(ctx, s, cd), None, {}
    allowed = "Copy, Import" if snapshot else "Empty, Copy, Import, FromImage"
    raise invalid(f"The value '{cd['createOption']}' of parameter 'creationData.createOption' is not supported. "
                  f"Use one of: {allowed}.", "creationData.createOption")


def _from_image(ctx: ComputeContext, s: Session, cd: dict[str, Any]) -> dict[str, Any]:
    ref = cd.get("imageReference") or cd.get("galleryImageReference") or {}
    rid_text = ref.get("id") if isinstance(ref, dict) else None
    if not rid_text:
        raise invalid("creationData.imageReference.id is required for createOption FromImage.",
                      "creationData.imageReference")
    lun = ref.get("lun")
    if "/publishers/" in rid_text.lower():
        from shoal.domain.compute import marketplace

        image = marketplace.from_platform_image_id(ctx, rid_text)
        base = marketplace.base_of(image)
        return {"base": base, "layers": [], "os": True, "lineage": ct.derive(ct.new_lineage(base))}
    src = sources.resolve(s, rid_text, "creationData.imageReference.id",
                          (sources.IMAGES, sources.GALLERY_VERSIONS))
    img = sources.image_content_of(src)
    lineage = ct.derive(img["lineage"], sourceImage=str(src.rid))
    if lun is None:
        return {"base": img["base"], "layers": img["os"], "os": True, "lineage": lineage}
    stack = img["data"].get(str(lun))
    if stack is None:
        raise invalid(f"The image '{rid_text}' has no data disk with LUN {lun}.", "creationData.imageReference.lun")
    return {"base": None, "layers": stack, "os": False, "lineage": lineage}


def _inherit_from_source(s: Session, props: dict[str, Any]) -> None:
    """A copy takes its source's size and OS type unless the request names them."""
    src_id = (props.get("creationData") or {}).get("sourceResourceId")
    if str((props.get("creationData") or {}).get("createOption", "")).lower() != "copy" or not src_id:
        return
    src = sources.resolve(s, src_id, "creationData.sourceResourceId", (sources.DISKS, sources.SNAPSHOTS))
    if props.get("diskSizeGB") is None and src.row.properties.get("diskSizeGB"):
        props["diskSizeGB"] = src.row.properties["diskSizeGB"]
    if props.get("osType") is None and src.row.properties.get("osType"):
        props["osType"] = src.row.properties["osType"]


def _common_properties(body: ArmBody, internal: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"creationData": props["creationData"]}
    for key in ("diskSizeGB", "osType", "hyperVGeneration", "encryptionSettingsCollection", "networkAccessPolicy",
                "supportedCapabilities", "supportsHibernation", "publicNetworkAccess", "dataAccessAuthMode",
                "incremental", "encryption"):
        if key in props:
            out[key] = props[key]
    out.setdefault("hyperVGeneration", "V1")
    out.setdefault("networkAccessPolicy", "AllowAll")
    out.setdefault("publicNetworkAccess", "Enabled")
    out.setdefault("encryption", {"type": "EncryptionAtRestWithPlatformKey"})
    return out


class DiskKind:
    type = sources.DISKS
    create_status = 202
    update_status = 202

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        require_location(ctx, body)
        props = dict(body.properties)
        internal, work, payload = plan_from_creation_data(ctx, s, props, snapshot=False)
        _inherit_from_source(s, props)
        if _size(props, required=False) is None:
            props["diskSizeGB"] = 30 if internal.get("os") or internal.get("base") else 4
        internal.update({"upper": str(uuid.uuid4()), "attachedTo": None, "uniqueId": str(uuid.uuid4())})
        if internal.get("base") or props.get("osType"):
            internal["os"] = True
        internal["lineage"] = ct.derive(internal["lineage"], osDiskEncrypted=_encrypted(props))
        return PutPlan(_common_properties(body, internal, props), internal, work, payload,
                       sku=body.sku or {"name": "Standard_LRS", "tier": "Standard"})

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        props = dict(row.properties)
        new_size = _size(body.properties, required=False)
        if new_size is not None:
            if new_size < int(props.get("diskSizeGB") or 0):
                raise errors.OperationNotAllowed(
                    f"Disk '{row.name}' of size {props.get('diskSizeGB')} GB cannot be shrunk to {new_size} GB.")
            props["diskSizeGB"] = new_size
        if "encryptionSettingsCollection" in body.properties:
            props["encryptionSettingsCollection"] = body.properties["encryptionSettingsCollection"]
            row.internal = {**row.internal, "lineage": ct.derive(row.internal.get("lineage"),
                                                                osDiskEncrypted=_encrypted(body.properties))}
        return PutPlan(props, dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        props = dict(row.properties)
        size = int(props.get("diskSizeGB") or 0)
        props.update({
            "provisioningState": row.provisioning_state, "timeCreated": format_timestamp(row.created_at),
            "uniqueId": row.internal.get("uniqueId"), "diskSizeBytes": size * GIB,
            "diskState": "Attached" if row.internal.get("attachedTo") else "Unattached",
        })
        if row.internal.get("access"):
            props["diskState"] = "ActiveSAS"
        return props

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        if row.internal.get("attachedTo"):
            raise errors.OperationNotAllowed(
                f"Disk {row.name} is attached to VM {row.internal['attachedTo']}. Detach it or delete the VM first.")
        return "delete"


class SnapshotKind:
    type = sources.SNAPSHOTS
    create_status = 202
    update_status = 202

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        require_location(ctx, body)
        props = dict(body.properties)
        internal, work, payload = plan_from_creation_data(ctx, s, props, snapshot=True)
        _inherit_from_source(s, props)
        if _size(props, required=False) is None:
            props["diskSizeGB"] = 30
        internal["uniqueId"] = str(uuid.uuid4())
        props.setdefault("incremental", False)
        return PutPlan(_common_properties(body, internal, props), internal, work, payload,
                       sku=body.sku or {"name": "Standard_LRS", "tier": "Standard"})

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        new_cd = body.properties.get("creationData")
        old_cd = row.properties.get("creationData") or {}
        if new_cd and {k.lower(): v for k, v in new_cd.items()} != {k.lower(): v for k, v in old_cd.items()}:
            raise errors.OperationNotAllowed(
                f"Snapshot {row.name} is read-only: its creationData cannot be changed. Create a new snapshot instead.")
        return PutPlan(dict(row.properties), dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        props = dict(row.properties)
        size = int(props.get("diskSizeGB") or 0)
        props.update({"provisioningState": row.provisioning_state, "timeCreated": format_timestamp(row.created_at),
                      "uniqueId": row.internal.get("uniqueId"), "diskSizeBytes": size * GIB,
                      "diskState": "ActiveSAS" if row.internal.get("access") else "Unattached"})
        return props

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        return "delete"


def access_request(row: models.Resource, action: str, body: dict[str, Any] | None, base_url: str) -> dict[str, Any]:
    """Validate beginGetAccess/endGetAccess; returns the operation payload."""
    if action == "endGetAccess":
        return {}
    body = body or {}
    if str(body.get("access", "")).lower() not in ("read",):
        raise invalid("'access' must be 'Read' (Shoal disks can be downloaded, not uploaded).", "access")
    import secrets

    return {"token": secrets.token_urlsafe(32), "baseUrl": base_url,
            "durationInSeconds": int(body.get("durationInSeconds") or 3600)}
