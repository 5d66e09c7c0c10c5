"""Managed images (``Microsoft.Compute/images``): an OS-disk layer stack plus data-disk stacks by LUN.

Sources: an OS-disk snapshot (+ data-disk snapshots), managed disks, a generalized VM (capture), or a disk file
(``blobUri``). Each image records its lineage, which the Batch rules read later.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.core.ids import ResourceId
from shoal.domain.compute import content as ct
from shoal.domain.compute import sources
from shoal.domain.compute.kinds import ArmBody, ComputeContext, PutPlan, invalid, ref_id, require_location
from shoal.store import models

MAX_LUN = 63


def _disk_source(s: Session, disk: dict[str, Any], where: str, *, os_disk: bool) -> tuple[dict[str, Any] | None,
                                                                                          dict[str, Any] | None]:
    """Content of one image disk given as snapshot, managedDisk or blobUri; (content, import work)."""
    given = [k for k in ("snapshot", "managedDisk", "blobUri") if disk.get(k)]
    if len(given) != 1:
        raise invalid(f"{where} must have exactly one of snapshot, managedDisk or blobUri.", where)
    kind = given[0]
    if kind == "blobUri":
        return None, {"sourceUri": disk["blobUri"], "os": os_disk}
    allowed = (sources.SNAPSHOTS,) if kind == "snapshot" else (sources.DISKS,)
    src = sources.resolve(s, ref_id(disk[kind], f"{where}.{kind}.id"), f"{where}.{kind}.id", allowed)
    content = sources.content_of(src)
    if os_disk and not content["os"]:
        raise invalid(f"The {kind} '{src.rid}' given as the OS disk holds a data disk (no operating system). Use the "
                      "snapshot of the VM's OS disk as 'osDisk' and data-disk snapshots under 'dataDisks'.", where)
    if not os_disk and content["os"]:
        raise invalid(f"The {kind} '{src.rid}' given as data disk is an OS disk snapshot. Data disks must come from "
                      "data-disk snapshots or disks.", where)
    field = "sourceSnapshots" if kind == "snapshot" else "sourceDisks"
    content["lineage"] = ct.derive(content["lineage"], **{field: [str(src.rid)]},
                                   method=ct.METHOD_SNAPSHOT if kind == "snapshot" else ct.METHOD_DISK)
    if kind == "managedDisk" and src.row.internal.get("attachedTo"):
        content["captureDisk"] = str(src.rid)  # its unsaved writes must be captured
    content["size"] = src.row.properties.get("diskSizeGB")
    return content, None


def plan_image(ctx: ComputeContext, s: Session, props: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                                                str | None, dict[str, Any]]:
    """Validate an image's sources; returns (wire storageProfile, internal, work, payload)."""
    if props.get("sourceVirtualMachine"):
        vm = sources.resolve(s, ref_id(props["sourceVirtualMachine"], "sourceVirtualMachine.id"),
                             "sourceVirtualMachine.id", (sources.VMS,))
        if not vm.row.internal.get("generalized"):
            raise errors.OperationNotAllowed(
                f"The source virtual machine '{vm.rid}' must be generalized to create an image. Stop it and call "
                "generalize (az vm generalize) first.")
        return ({"osDisk": {"osType": "Linux", "osState": "Generalized"}, "dataDisks": []},
                {"sourceVm": str(vm.rid)}, "capture-vm", {"sourceVm": str(vm.rid)})
    storage = props.get("storageProfile")
    if not isinstance(storage, dict) or not isinstance(storage.get("osDisk"), dict):
        raise invalid("Required parameter 'storageProfile.osDisk' is missing (null).", "storageProfile.osDisk")
    os_disk = storage["osDisk"]
    if str(os_disk.get("osType", "")).lower() not in ("linux", "windows"):
        raise invalid("storageProfile.osDisk.osType must be 'Linux' or 'Windows'.", "storageProfile.osDisk.osType")
    if str(os_disk.get("osState", "Generalized")).lower() not in ("generalized", "specialized"):
        raise invalid("storageProfile.osDisk.osState must be 'Generalized' or 'Specialized'.",
                      "storageProfile.osDisk.osState")
    os_content, os_import = _disk_source(s, os_disk, "storageProfile.osDisk", os_disk=True)
    data_disks = storage.get("dataDisks") or []
    if not isinstance(data_disks, list):
        raise invalid("storageProfile.dataDisks must be a list.", "storageProfile.dataDisks")
    seen: set[int] = set()
    data: dict[str, Any] = {}
    imports: dict[str, Any] = {}
    for i, dd in enumerate(data_disks):
        where = f"storageProfile.dataDisks[{i}]"
        lun = dd.get("lun") if isinstance(dd, dict) else None
        if not isinstance(lun, int) or isinstance(lun, bool) or not 0 <= lun <= MAX_LUN:
            raise invalid(f"{where}.lun must be an integer between 0 and {MAX_LUN}.", f"{where}.lun")
        if lun in seen:
            raise invalid(f"Duplicate LUN {lun} in storageProfile.dataDisks: each data disk needs a unique LUN.",
                          f"{where}.lun")
        seen.add(lun)
        content, imp = _disk_source(s, dd, where, os_disk=False)
        if imp:
            imports[str(lun)] = imp
        else:
            data[str(lun)] = content
    internal: dict[str, Any] = {"osType": os_disk.get("osType", "Linux").capitalize()}
    lineages = [c.get("lineage") for c in data.values()]
    if os_content is not None:
        internal.update({"base": os_content["base"], "os": os_content["layers"]})
        internal["lineage"] = ct.merge_lineages(os_content["lineage"], lineages)
    else:
        internal.update({"base": None, "os": [],
                         "lineage": ct.derive(ct.new_lineage(None), method=ct.METHOD_DISK_FILE)})
    internal["data"] = {lun: c["layers"] for lun, c in data.items()}
    captures = [c["captureDisk"] for c in [os_content, *data.values()] if c and c.get("captureDisk")]
    work = "build" if (os_import or imports or captures) else None
    payload = {"osImport": os_import, "dataImports": imports, "captureDisks": captures} if work else {}
    wire_os = {k: v for k, v in os_disk.items()}
    wire_os.setdefault("osState", "Generalized")
    wire_os.setdefault("caching", "ReadWrite")
    wire_os.setdefault("storageAccountType", "Standard_LRS")
    if os_content and os_content.get("size"):
        wire_os.setdefault("diskSizeGB", os_content["size"])
    wire_data = []
    for dd in data_disks:
        d = dict(dd)
        d.setdefault("caching", "None")
        d.setdefault("storageAccountType", "Standard_LRS")
        size = (data.get(str(dd["lun"])) or {}).get("size")
        if size:
            d.setdefault("diskSizeGB", size)
        wire_data.append(d)
    profile = {"osDisk": wire_os, "dataDisks": wire_data, "zoneResilient": bool(storage.get("zoneResilient", False))}
    return profile, internal, work, payload


class ImageKind:
    type = sources.IMAGES
    create_status = 201
    update_status = 200

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        require_location(ctx, body)
        props = dict(body.properties)
        profile, internal, work, payload = plan_image(ctx, s, props)
        out: dict[str, Any] = {"storageProfile": profile, "hyperVGeneration": props.get("hyperVGeneration", "V1")}
        if props.get("sourceVirtualMachine"):
            out["sourceVirtualMachine"] = {"id": internal["sourceVm"]}
        return PutPlan(out, internal, work or "finish", payload)

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        new_profile = body.properties.get("storageProfile")
        if new_profile not in (None, row.properties.get("storageProfile")):
            raise errors.OperationNotAllowed(
                f"Image '{row.name}' cannot change its storage profile. Create a new image.")
        return PutPlan(dict(row.properties), dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        return {**row.properties, "provisioningState": row.provisioning_state}

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        return "delete"
