"""Compute state survives a crash: running VMs are adopted, images stay usable, GC keeps what is referenced."""

from __future__ import annotations

import json
import uuid

from azure.mgmt.compute.models import (
    CreationData,
    DataDisk,
    HardwareProfile,
    Image,
    ImageDataDisk,
    ImageOSDisk,
    ImageReference,
    ImageStorageProfile,
    RunCommandInput,
    Snapshot,
    StorageProfile,
    SubResource,
    VirtualMachine,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from harness import ShoalServer
from shoal.azure import Shoal

LOCATION = "westus"
HOST = ImageReference(publisher="shoal", offer="host", sku="host", version="latest")




def run(compute: object, group: str, vm: str, script: str) -> str:
    result = compute.virtual_machines.begin_run_command(  # type: ignore[attr-defined]
        group, vm, RunCommandInput(command_id="RunShellScript", script=[script])).result()
    assert result.value[1].code == "ComponentStatus/ExitCode/0", result.value[0].message
    return str(result.value[0].message)


def snapshot(compute: object, name: str, disk_id: str) -> Snapshot:
    return compute.snapshots.begin_create_or_update("rg", name, Snapshot(  # type: ignore[attr-defined]
        location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk_id))).result()


def vm_model(image: ImageReference, disks: list[DataDisk]) -> VirtualMachine:
    return VirtualMachine(location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
                          storage_profile=StorageProfile(image_reference=image, data_disks=disks))


def test_vms_images_and_layers_survive_a_crash(own_server: ShoalServer) -> None:
    shoal = Shoal.from_env_json(own_server.env)
    shoal.resource_client().resource_groups.create_or_update("rg", ResourceGroup(location=LOCATION))
    compute = shoal.compute_client()
    vm = compute.virtual_machines.begin_create_or_update("rg", "vm", vm_model(
        HOST, [DataDisk(lun=0, create_option="Empty", disk_size_gb=4)])).result()
    run(compute, "rg", "vm", "echo kept > /datadisks/lun0/kept.txt; echo os > /etc/shoal-marker; "
        "sleep 1000 >/dev/null 2>&1 &")
    os_snap = snapshot(compute, "os", vm.storage_profile.os_disk.managed_disk.id)
    data_snap = snapshot(compute, "data", vm.storage_profile.data_disks[0].managed_disk.id)
    image = compute.images.begin_create_or_update("rg", "img", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=os_snap.id)),
            data_disks=[ImageDataDisk(lun=0, snapshot=SubResource(id=data_snap.id))]))).result()
    # A throwaway snapshot whose layer nothing else references.
    run(compute, "rg", "vm", "echo only-in-throwaway > /datadisks/lun0/throwaway.txt")
    throwaway = snapshot(compute, "throwaway", vm.storage_profile.data_disks[0].managed_disk.id)

    own_server.kill()  # kill -9: no shutdown at all
    own_server.start()
    shoal = Shoal.from_env_json(own_server.env)
    compute = shoal.compute_client()

    # The VM kept running through the crash: its background process is still there.
    out = run(compute, "rg", "vm", "cat /datadisks/lun0/kept.txt /etc/shoal-marker; pgrep -c sleep")
    assert "kept" in out and "os" in out and "\n1\n" in out
    assert compute.images.get("rg", "img").provisioning_state == "Succeeded"
    compute.virtual_machines.begin_create_or_update("rg", "again", vm_model(
        ImageReference(id=image.id), [DataDisk(lun=0, create_option="FromImage")])).result()
    out = run(compute, "rg", "again", "cat /datadisks/lun0/kept.txt /etc/shoal-marker")
    assert "kept" in out and "os" in out

    layers_before = {row["digest"]: row["referenced"] for row in json.loads(
        own_server.cli("layers", "list", "--json").stdout)}
    assert all(layers_before.values())
    compute.snapshots.begin_delete("rg", throwaway.name).result()
    compute.virtual_machines.begin_delete("rg", "again").result()
    layers_mid = {row["digest"]: row["referenced"] for row in json.loads(
        own_server.cli("layers", "list", "--json").stdout)}
    orphans = {d for d, referenced in layers_mid.items() if not referenced}
    assert len(orphans) == 1  # the throwaway snapshot's layer
    removed = json.loads(own_server.cli("layers", "gc", "--grace", "0").stdout)["removed"]
    assert set(removed) == orphans
    # What images reference is still there and still boots.
    compute.virtual_machines.begin_create_or_update("rg", "after-gc", vm_model(
        ImageReference(id=image.id), [DataDisk(lun=0, create_option="FromImage")])).result()
    assert "kept" in run(compute, "rg", "after-gc", "cat /datadisks/lun0/kept.txt")
    assert uuid.UUID(vm.vm_id)
