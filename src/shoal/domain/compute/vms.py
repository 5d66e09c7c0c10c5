"""Virtual machines: real isolated machines booted from a marketplace base or a custom image.

A VM owns an OS disk (a ``Microsoft.Compute/disks`` resource created with it) and attached data disks.
Power actions, run-command and deletion are long-running operations completed by the reconciler through
the host agent; the request only records what should happen.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.ids import ResourceId
from shoal.core.timefmt import format_timestamp
from shoal.domain import host_ssh, resources
from shoal.domain.compute import content as ct
from shoal.domain.compute import linux_agent, marketplace, sources, usage
from shoal.domain.compute.kinds import ArmBody, ComputeContext, PutPlan, invalid, ref_id, require_location
from shoal.domain.networking import machines as networking
from shoal.store import models

POWER_RUNNING, POWER_STOPPED, POWER_DEALLOCATED = "running", "stopped", "deallocated"
ACTIONS = ("start", "powerOff", "restart", "deallocate", "runCommand", "reimage", "redeploy")
MAX_LUN = 63


def _image_content(ctx: ComputeContext, s: Session, ref: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(content, wire imageReference) for a VM's storageProfile.imageReference."""
    if ref.get("id"):
        rid_text = ref["id"]
        if "/publishers/" in rid_text.lower():
            image = marketplace.from_platform_image_id(ctx, rid_text)
            base = marketplace.base_of(image)
            return ({"base": base, "os": [], "data": {}, "lineage": ct.new_lineage(base), "osType": image.os_type},
                    {"id": rid_text})
        target = ids.parse(rid_text, what="storageProfile.imageReference.id")
        if target.type.lower() == sources.GALLERY_IMAGES.lower():
            rid_text = str(latest_version(s, target).rid)
        src = sources.resolve(s, rid_text, "storageProfile.imageReference.id",
                              (sources.IMAGES, sources.GALLERY_VERSIONS))
        img = sources.image_content_of(src)
        img["lineage"] = ct.derive(img["lineage"], sourceImage=str(src.rid))
        return img, {"id": ref["id"]}
    image = marketplace.from_reference(ctx, ref, "storageProfile.imageReference")
    base = marketplace.base_of(image)
    wire = {"publisher": image.publisher, "offer": image.offer, "sku": image.sku,
            "version": ref.get("version", "latest"), "exactVersion": image.version}
    return {"base": base, "os": [], "data": {}, "lineage": ct.new_lineage(base), "osType": image.os_type}, wire


def latest_version(s: Session, definition: ResourceId) -> sources.Source:
    """The newest version of a gallery image definition not excluded from latest."""
    rows = [r for r in resources.children(s, definition)
            if r.provisioning_state == "Succeeded"
            and not (r.properties.get("publishingProfile") or {}).get("excludeFromLatest")]
    if not rows:
        raise errors.NotFound(f"The gallery image '{definition}' has no version available as latest.")
    best = max(rows, key=lambda r: tuple(int(x) for x in r.name.split(".")))
    return sources.Source(best, ids.parse(best.id))


class VirtualMachineKind:
    type = sources.VMS
    create_status = 201
    update_status = 200

    def plan_create(self, ctx: ComputeContext, s: Session, rid: ResourceId, body: ArmBody) -> PutPlan:
        location = require_location(ctx, body)
        p = dict(body.properties)
        size = (p.get("hardwareProfile") or {}).get("vmSize")
        if not size:
            raise invalid("Required parameter 'hardwareProfile.vmSize' is missing (null).", "hardwareProfile.vmSize")
        usage.check_room(s, rid.subscription, location, size, ctx.core_quota)
        provisioning = linux_agent.plan(p.get("osProfile"))  # Azure's osProfile rules; the guest agent's work
        storage = p.get("storageProfile") or {}
        os_disk_in = dict(storage.get("osDisk") or {})
        vm_id = str(uuid.uuid4())
        group = rid.resource_group or ""
        if str(os_disk_in.get("createOption", "FromImage")).lower() == "attach":
            disk = sources.resolve(s, ref_id(os_disk_in.get("managedDisk"), "storageProfile.osDisk.managedDisk.id"),
                                   "storageProfile.osDisk.managedDisk.id", (sources.DISKS,))
            self._check_attachable(disk, "storageProfile.osDisk.managedDisk.id")
            if not disk.row.internal.get("os"):
                raise invalid(f"Disk '{disk.rid}' has no operating system and cannot be attached as OS disk.",
                              "storageProfile.osDisk.managedDisk.id")
            image_content: dict[str, Any] = {"data": {}}
            wire_ref = None
            os_disk_id = str(disk.rid)
            disk.row.internal = {**disk.row.internal, "attachedTo": str(rid)}
        else:
            ref = storage.get("imageReference")
            if not isinstance(ref, dict):
                raise invalid("Required parameter 'storageProfile.imageReference' is missing (null).",
                              "storageProfile.imageReference")
            image_content, wire_ref = _image_content(ctx, s, ref)
            os_name = os_disk_in.get("name") or f"{rid.name}_OsDisk_1_{uuid.uuid4().hex}"
            disk_rid = ResourceId(rid.subscription, group, "Microsoft.Compute", ("disks",), (os_name,))
            if resources.find(s, disk_rid) is not None:
                raise errors.Conflict(f"A disk named '{os_name}' already exists in resource group '{group}'.")
            os_internal = {"base": image_content["base"], "layers": list(image_content["os"]), "os": True,
                           "lineage": image_content["lineage"], "upper": str(uuid.uuid4()), "attachedTo": str(rid),
                           "uniqueId": str(uuid.uuid4())}
            os_size = int(os_disk_in.get("diskSizeGB") or 30)
            resources.create_row(s, ctx.clock, disk_rid, location=location, internal=os_internal, properties={
                "osType": image_content.get("osType", "Linux"), "diskSizeGB": os_size, "hyperVGeneration": "V1",
                "creationData": {"createOption": "FromImage", **({"imageReference": wire_ref} if wire_ref else {})},
                "encryption": {"type": "EncryptionAtRestWithPlatformKey"}, "networkAccessPolicy": "AllowAll"},
                sku={"name": (os_disk_in.get("managedDisk") or {}).get("storageAccountType", "Standard_LRS")})
            os_disk_id = str(disk_rid)
        data_in = storage.get("dataDisks")
        if data_in is None:  # omitted: the image's data disks at their LUNs, with their contents (as Azure does)
            data_in = [{"lun": int(lun), "createOption": "FromImage"}
                       for lun in sorted((image_content.get("data") or {}), key=int)]
        data_out: list[dict[str, Any]] = []
        attached: dict[str, str] = {}
        for i, dd in enumerate(data_in):
            where = f"storageProfile.dataDisks[{i}]"
            lun = dd.get("lun")
            if not isinstance(lun, int) or isinstance(lun, bool) or not 0 <= lun <= MAX_LUN:
                raise invalid(f"{where}.lun must be an integer between 0 and {MAX_LUN}.", f"{where}.lun")
            if str(lun) in attached:
                raise invalid(f"Duplicate LUN {lun} in storageProfile.dataDisks.", f"{where}.lun")
            option = str(dd.get("createOption", "Empty")).lower()
            if option == "attach":
                disk = sources.resolve(s, ref_id(dd.get("managedDisk"), f"{where}.managedDisk.id"),
                                       f"{where}.managedDisk.id", (sources.DISKS,))
                self._check_attachable(disk, f"{where}.managedDisk.id")
                disk.row.internal = {**disk.row.internal, "attachedTo": str(rid)}
                disk_id = str(disk.rid)
                disk_size = disk.row.properties.get("diskSizeGB")
                name = disk.rid.name
            elif option in ("empty", "fromimage"):
                if option == "empty" and not isinstance(dd.get("diskSizeGB"), int):
                    raise invalid(f"{where}.diskSizeGB is required for createOption Empty.", f"{where}.diskSizeGB")
                layers: list[str] = []
                if option == "fromimage":
                    stack = (image_content.get("data") or {}).get(str(lun))
                    if stack is None:
                        raise invalid(f"The image has no data disk with LUN {lun} ({where}).", f"{where}.lun")
                    layers = list(stack)
                name = dd.get("name") or f"{rid.name}_disk{lun + 2}_{uuid.uuid4().hex}"
                disk_rid = ResourceId(rid.subscription, group, "Microsoft.Compute", ("disks",), (name,))
                disk_size = int(dd.get("diskSizeGB") or 4)
                resources.create_row(s, ctx.clock, disk_rid, location=location, properties={
                    "diskSizeGB": disk_size, "hyperVGeneration": "V1", "creationData": {"createOption": dd.get(
                        "createOption", "Empty")}, "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
                    "networkAccessPolicy": "AllowAll"}, internal={
                    "base": None, "layers": layers, "os": False, "lineage": ct.new_lineage(None),
                    "upper": str(uuid.uuid4()), "attachedTo": str(rid), "uniqueId": str(uuid.uuid4())},
                    sku={"name": (dd.get("managedDisk") or {}).get("storageAccountType", "Standard_LRS")})
                disk_id = str(disk_rid)
            else:
                raise invalid(f"{where}.createOption '{dd.get('createOption')}' is not supported: use Empty, Attach or "
                              "FromImage.", f"{where}.createOption")
            attached[str(lun)] = disk_id
            data_out.append({"lun": lun, "name": name, "createOption": dd.get("createOption", "Empty"),
                             "caching": dd.get("caching", "None"), "diskSizeGB": disk_size,
                             "managedDisk": {"id": disk_id, "storageAccountType": "Standard_LRS"},
                             "deleteOption": dd.get("deleteOption", "Detach"), "toBeDetached": False})
        os_disk_out = {"osType": image_content.get("osType", "Linux"), "name": ids.parse(os_disk_id).name,
                       "createOption": os_disk_in.get("createOption", "FromImage"), "caching": "ReadWrite",
                       "managedDisk": {"id": os_disk_id, "storageAccountType": "Standard_LRS"},
                       "deleteOption": os_disk_in.get("deleteOption", "Detach"), "diskSizeGB": int(
                           os_disk_in.get("diskSizeGB") or 30)}
        storage_out: dict[str, Any] = {"osDisk": os_disk_out, "dataDisks": data_out}
        if wire_ref:
            storage_out["imageReference"] = wire_ref
        props: dict[str, Any] = {"hardwareProfile": {"vmSize": size}, "storageProfile": storage_out, "vmId": vm_id}
        if p.get("osProfile"):
            props["osProfile"] = {k: v for k, v in p["osProfile"].items() if k not in ("adminPassword", "customData")}
            props["osProfile"].setdefault("computerName", rid.name)
            props["osProfile"].setdefault("allowExtensionOperations", True)
        if p.get("networkProfile"):
            props["networkProfile"] = networking.attach(s, ctx.clock, str(rid), p["networkProfile"])
        props["timeCreated"] = format_timestamp(ctx.clock.now())
        internal = {"machineId": f"vm-{vm_id[:8]}", "osDisk": os_disk_id, "dataDisks": attached, "power": "starting",
                    "generalized": False, "extensions": [], "hostname": (props.get("osProfile") or {}).get(
                        "computerName", rid.name)}
        if provisioning and wire_ref is not None:  # not for an attached (specialized) OS disk: nothing provisions
            internal["provisioning"] = provisioning
        return PutPlan(props, internal, "create")

    @staticmethod
    def _check_attachable(disk: sources.Source, where: str) -> None:
        if disk.row.internal.get("attachedTo"):
            raise errors.OperationNotAllowed(
                f"Disk '{disk.rid}' is already attached to VM {disk.row.internal['attachedTo']}.", target=where)

    def plan_update(self, ctx: ComputeContext, s: Session, row: models.Resource, body: ArmBody) -> PutPlan:
        return PutPlan(dict(row.properties), dict(row.internal), None)

    def render_properties(self, row: models.Resource) -> dict[str, Any]:
        return {**row.properties, "provisioningState": row.provisioning_state}

    def plan_delete(self, ctx: ComputeContext, s: Session, row: models.Resource) -> str | None:
        return "delete"


def begin_action(s: Session, row: models.Resource, action: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a power action or run-command on a VM; returns the operation payload."""
    power = row.internal.get("power")
    if row.provisioning_state not in ("Succeeded", "Failed") and action != "powerOff":
        raise errors.OperationNotAllowed(f"The VM '{row.name}' is still {row.provisioning_state.lower()}; retry when "
                                         "it has finished.")
    if action == "runCommand":
        body = body or {}
        if str(body.get("commandId", "")).lower() not in ("runshellscript",):
            raise invalid(f"The command id '{body.get('commandId')}' is not supported on Linux VMs; use "
                          "RunShellScript.", "commandId")
        script = body.get("script") or []
        if not isinstance(script, list) or not all(isinstance(x, str) for x in script):
            raise invalid("'script' must be a list of lines.", "script")
        if power != POWER_RUNNING:
            raise errors.OperationNotAllowed(
                f"Cannot run commands on VM '{row.name}' because it is {power}. Start it first.")
        params = {p.get("name"): str(p.get("value", "")) for p in body.get("parameters") or [] if p.get("name")}
        return {"script": script, "parameters": params}
    if action in ("start", "restart") and row.internal.get("generalized"):
        raise errors.OperationNotAllowed(
            f"Operation '{action}' is not allowed on VM '{row.name}' since the VM is generalized.")
    if action == "restart" and power != POWER_RUNNING:
        raise errors.OperationNotAllowed(f"Cannot restart VM '{row.name}' because it is {power}.")
    return {}


def generalize(row: models.Resource) -> None:
    if row.internal.get("power") == POWER_RUNNING:
        raise errors.OperationNotAllowed(
            f"Operation 'generalize' is not allowed on VM '{row.name}' since the VM is running. Stop or deallocate "
            "it first (az vm deallocate).")
    # The guest agent's deprovisioning (host keys, the admin user) is done on the disk before it is captured.
    row.internal = {**row.internal, "generalized": True, "deprovision": True}


def instance_view(row: models.Resource, now_text: str, disks: list[models.Resource]) -> dict[str, Any]:
    power = row.internal.get("power", "starting")
    display = {"running": "VM running", "stopped": "VM stopped", "deallocated": "VM deallocated",
               "starting": "VM starting", "stopping": "VM stopping", "deallocating": "VM deallocating"}
    statuses = [{"code": f"ProvisioningState/{row.provisioning_state.lower()}", "level": "Info",
                 "displayStatus": f"Provisioning {row.provisioning_state.lower()}", "time": now_text},
                {"code": f"PowerState/{power}", "level": "Info", "displayStatus": display.get(power, power)}]
    if row.internal.get("generalized"):
        # After PowerState: az's table output reads statuses[1] as the power state.
        statuses.append({"code": "OSState/generalized", "level": "Info", "displayStatus": "VM generalized"})
    if row.internal.get(host_ssh.VM_KEY):  # it shares the host's network: where its sshd listens
        statuses.append(host_ssh.vm_status(int(row.internal[host_ssh.VM_KEY])))
    return {
        "computerName": row.internal.get("hostname", row.name), "osName": "linux", "osVersion": "",
        "vmAgent": {"vmAgentVersion": "shoal", "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                                                            "displayStatus": "Ready", "message": "Shoal agent ready"}]},
        "disks": [{"name": d.name, "statuses": [{"code": f"ProvisioningState/{d.provisioning_state.lower()}",
                                                 "level": "Info", "displayStatus": f"Provisioning "
                                                 f"{d.provisioning_state.lower()}"}]} for d in disks],
        "statuses": statuses,
        "isolation": row.internal.get("isolation"),
    }


TAIL = 4 * 1024  # the Linux RunCommand extension reports the last 4 KiB of each stream


def run_command_result(exit_code: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The RunCommandResult document (what `az vm run-command invoke` prints).

    The first entry is exactly what Azure's Linux RunCommand extension reports: it always says "succeeded"
    (a script's failure is not an operation failure) with the tails of stdout and stderr. Azure does not
    report the exit code at all; Shoal adds it as a second status entry so callers need not parse output.
    """
    message = f"Enable succeeded: \n[stdout]\n{stdout[-TAIL:]}\n[stderr]\n{stderr[-TAIL:]}"
    return {"value": [
        {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
         "message": message},
        {"code": f"ComponentStatus/ExitCode/{exit_code}", "level": "Info" if exit_code == 0 else "Error",
         "displayStatus": f"Exit code {exit_code}", "message": str(exit_code)},
    ]}


def script_argv(lines: list[str]) -> list[str]:
    """Run a RunShellScript script with bash where the machine has it (as Azure does), else sh."""
    script = "\n".join(lines)
    return ["/bin/sh", "-c", 'if [ -x /bin/bash ]; then exec /bin/bash -c "$0"; else exec /bin/sh -c "$0"; fi',
            script]
