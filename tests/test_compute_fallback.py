"""The fallback machine runtime (plain directories and processes) through the same official clients.

Where namespaces or overlayfs are unavailable Shoal still runs VMs and images, without isolation. This runs
the functional path of the image pipeline on it; isolation itself is tested only on the namespace runtime.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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


@pytest.fixture(scope="module")
def process_server() -> Iterator[ShoalServer]:
    srv = ShoalServer(extra_args=["--runtime", "process"]).start()
    yield srv
    srv.cleanup()


def run(compute: object, vm: str, script: str) -> tuple[str, int]:
    result = compute.virtual_machines.begin_run_command(  # type: ignore[attr-defined]
        "rg", vm, RunCommandInput(command_id="RunShellScript", script=[script])).result()
    return str(result.value[0].message), int(result.value[1].code.rsplit("/", 1)[1])


def test_image_pipeline_on_the_fallback_runtime(process_server: ShoalServer) -> None:
    assert process_server.env["isolation"] == "process"
    shoal = Shoal.from_env_json(process_server.env)
    shoal.resource_client().resource_groups.create_or_update("rg", ResourceGroup(location=LOCATION))
    compute = shoal.compute_client()

    def vm(name: str, image: ImageReference, option: str) -> VirtualMachine:
        return compute.virtual_machines.begin_create_or_update("rg", name, VirtualMachine(
            location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
            storage_profile=StorageProfile(image_reference=image, data_disks=[
                DataDisk(lun=0, create_option=option, disk_size_gb=4)]))).result()

    prep = vm("prep", HOST, "Empty")
    # Without namespaces absolute paths are not remapped: commands find the data disk through the documented
    # SHOAL_DATADISK_LUN<N> variable (the same script works on both runtimes).
    disk = "${SHOAL_DATADISK_LUN0:-/datadisks/lun0}"
    out, code = run(compute, "prep", f'echo fallback-data > "{disk}/f.txt" && echo ok')
    assert code == 0, out
    snaps = {}
    for key, disk_id in (("os", prep.storage_profile.os_disk.managed_disk.id),
                         ("data", prep.storage_profile.data_disks[0].managed_disk.id)):
        snaps[key] = compute.snapshots.begin_create_or_update("rg", key, Snapshot(
            location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk_id))).result()
    image = compute.images.begin_create_or_update("rg", "img", Image(location=LOCATION, storage_profile=(
        ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snaps["os"].id)),
            data_disks=[ImageDataDisk(lun=0, snapshot=SubResource(id=snaps["data"].id))])))).result()
    assert image.provisioning_state == "Succeeded"
    vm("copy", ImageReference(id=image.id), "FromImage")
    out, code = run(compute, "copy", f'cat "{disk}/f.txt"')
    assert code == 0 and "fallback-data" in out, out
    compute.virtual_machines.begin_power_off("rg", "copy").result()
    compute.virtual_machines.begin_start("rg", "copy").result()
    out, code = run(compute, "copy", f'cat "{disk}/f.txt"')
    assert "fallback-data" in out
    compute.virtual_machines.begin_delete("rg", "copy").result()
