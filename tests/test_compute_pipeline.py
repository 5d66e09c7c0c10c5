"""The seed's preparation path through azure-mgmt-compute: VM -> software -> snapshots -> image -> gallery.

Runs on the Debian 12 base (built with debootstrap on first use and cached) and installs a real package with
apt inside the VM, then proves a second VM made from the image has the software and the data.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute.models import (
    CreationData,
    DataDisk,
    Disk,
    Gallery,
    GalleryArtifactVersionFullSource,
    GalleryImage,
    GalleryImageIdentifier,
    GalleryImageVersion,
    GalleryImageVersionPublishingProfile,
    GalleryImageVersionStorageProfile,
    HardwareProfile,
    Image,
    ImageDataDisk,
    ImageOSDisk,
    ImageReference,
    ImageStorageProfile,
    ManagedDiskParameters,
    OSProfile,
    RunCommandInput,
    Snapshot,
    StorageProfile,
    SubResource,
    TargetRegion,
    VirtualMachine,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from harness import ShoalServer
from shoal.azure import Shoal

DEBIAN = ImageReference(publisher="debian", offer="debian-12", sku="12", version="latest")
HOST = ImageReference(publisher="shoal", offer="host", sku="host", version="latest")
LOCATION = "westus"


def run(compute: Any, group: str, vm: str, *lines: str) -> str:
    result = compute.virtual_machines.begin_run_command(
        group, vm, RunCommandInput(command_id="RunShellScript", script=list(lines))).result()
    status = result.value[0]
    assert status.code == "ProvisioningState/succeeded", status.message
    assert result.value[1].code == "ComponentStatus/ExitCode/0", status.message
    return str(status.message)


def vm_model(image: ImageReference, data_disks: list[DataDisk] | None = None) -> VirtualMachine:
    return VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=image, data_disks=data_disks or []),
        os_profile=OSProfile(computer_name="prep", admin_username="azureuser"))


@pytest.fixture(scope="module")
def group(shoal: Shoal) -> str:
    name = f"images-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(name, ResourceGroup(location=LOCATION))
    return name


def test_prepare_snapshot_image_gallery_and_boot_from_image(shoal: Shoal, group: str) -> None:
    compute = shoal.compute_client()
    sub = shoal.subscription_id
    vm = compute.virtual_machines.begin_create_or_update(group, "prep", vm_model(
        DEBIAN, [DataDisk(lun=0, create_option="Empty", disk_size_gb=4)])).result()
    assert vm.provisioning_state == "Succeeded"
    os_disk_id = vm.storage_profile.os_disk.managed_disk.id
    data_disk_id = vm.storage_profile.data_disks[0].managed_disk.id
    view = compute.virtual_machines.instance_view(group, "prep")
    assert "PowerState/running" in [s.code for s in view.statuses]

    out = run(compute, group, "prep", "set -e", "cat /etc/debian_version",
              "apt-get update -qq && apt-get install -y -qq hello >/dev/null", "hello",
              "echo batch-input-data > /datadisks/lun0/input.txt")
    assert "Hello, world!" in out
    assert "12." in out

    os_snap = compute.snapshots.begin_create_or_update(group, "os-snap", Snapshot(
        location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=os_disk_id))).result()
    data_snap = compute.snapshots.begin_create_or_update(group, "data-snap", Snapshot(
        location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=data_disk_id))
    ).result()
    assert os_snap.provisioning_state == data_snap.provisioning_state == "Succeeded"
    assert os_snap.os_type == "Linux"

    image = compute.images.begin_create_or_update(group, "img", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=os_snap.id)),
            data_disks=[ImageDataDisk(lun=0, snapshot=SubResource(id=data_snap.id))]))).result()
    assert image.provisioning_state == "Succeeded"
    assert image.storage_profile.data_disks[0].lun == 0

    compute.galleries.begin_create_or_update(group, "gal", Gallery(location=LOCATION)).result()
    definition = compute.gallery_images.begin_create_or_update(group, "gal", "def", GalleryImage(
        location=LOCATION, os_type="Linux", os_state="Generalized",
        identifier=GalleryImageIdentifier(publisher="me", offer="batch", sku="debian12"))).result()
    assert definition.provisioning_state == "Succeeded"
    version = compute.gallery_image_versions.begin_create_or_update(group, "gal", "def", "1.0.0", GalleryImageVersion(
        location=LOCATION,
        publishing_profile=GalleryImageVersionPublishingProfile(
            target_regions=[TargetRegion(name=LOCATION, regional_replica_count=2)]),
        storage_profile=GalleryImageVersionStorageProfile(source=GalleryArtifactVersionFullSource(id=image.id)))
    ).result()
    assert version.provisioning_state == "Succeeded"
    expanded = compute.gallery_image_versions.get(group, "gal", "def", "1.0.0", expand="ReplicationStatus")
    assert expanded.replication_status.aggregated_state == "Completed"
    assert [(s.region, s.progress) for s in expanded.replication_status.summary] == [(LOCATION, 100)]

    # A new VM from the managed image has the software and the data disk's contents.
    for source in (image.id, version.id):
        name = f"from-{uuid.uuid4().hex[:4]}"
        compute.virtual_machines.begin_create_or_update(group, name, vm_model(
            ImageReference(id=source), [DataDisk(lun=0, create_option="FromImage")])).result()
        out = run(compute, group, name, "hello", "cat /datadisks/lun0/input.txt")
        assert "Hello, world!" in out and "batch-input-data" in out
        compute.virtual_machines.begin_delete(group, name).result()
        with pytest.raises(ResourceNotFoundError):
            compute.virtual_machines.get(group, name)

    listed = {s.name for s in compute.snapshots.list_by_resource_group(group)}
    assert {"os-snap", "data-snap"} <= listed
    assert sub in image.id


def test_vm_power_actions_and_generalize(shoal: Shoal, group: str) -> None:
    compute = shoal.compute_client()
    compute.virtual_machines.begin_create_or_update(group, "power", vm_model(HOST)).result()
    run(compute, group, "power", "echo before > /root/marker")
    compute.virtual_machines.begin_power_off(group, "power").result()
    assert "PowerState/stopped" in [s.code for s in compute.virtual_machines.instance_view(group, "power").statuses]
    with pytest.raises(HttpResponseError) as info:
        compute.virtual_machines.begin_run_command(
            group, "power", RunCommandInput(command_id="RunShellScript", script=["true"])).result()
    assert info.value.status_code == 409
    compute.virtual_machines.begin_start(group, "power").result()
    assert "before" in run(compute, group, "power", "cat /root/marker")  # the OS disk kept its writes
    compute.virtual_machines.begin_restart(group, "power").result()
    compute.virtual_machines.begin_deallocate(group, "power").result()
    compute.virtual_machines.generalize(group, "power")
    view = compute.virtual_machines.instance_view(group, "power")
    assert "OSState/generalized" in [s.code for s in view.statuses]
    captured = compute.images.begin_create_or_update(group, "captured", Image(
        location=LOCATION, source_virtual_machine=SubResource(id=compute.virtual_machines.get(group, "power").id))
    ).result()
    assert captured.provisioning_state == "Succeeded"
    compute.virtual_machines.begin_create_or_update(group, "from-capture", vm_model(
        ImageReference(id=captured.id))).result()
    assert "before" in run(compute, group, "from-capture", "cat /root/marker")
    compute.virtual_machines.begin_delete(group, "from-capture").result()


def test_failing_script_reports_output_and_exit_code(shoal: Shoal, group: str) -> None:
    compute = shoal.compute_client()
    compute.virtual_machines.begin_create_or_update(group, "fails", vm_model(HOST)).result()
    result = compute.virtual_machines.begin_run_command(group, "fails", RunCommandInput(
        command_id="RunShellScript", script=["echo out; echo err >&2; exit 7"])).result()
    # As Azure's Linux extension: the operation succeeds and the message carries both streams...
    status = result.value[0]
    assert status.code == "ProvisioningState/succeeded"
    assert status.message == "Enable succeeded: \n[stdout]\nout\n\n[stderr]\nerr\n"
    # ...and Shoal adds the exit code.
    assert result.value[1].code == "ComponentStatus/ExitCode/7"


def test_empty_disk_and_disk_copy(shoal: Shoal, group: str) -> None:
    compute = shoal.compute_client()
    disk = compute.disks.begin_create_or_update(group, "blank", Disk(
        location=LOCATION, disk_size_gb=8, creation_data=CreationData(create_option="Empty"))).result()
    assert disk.provisioning_state == "Succeeded" and disk.disk_size_gb == 8
    assert disk.disk_state == "Unattached"
    copy = compute.disks.begin_create_or_update(group, "blank-copy", Disk(
        location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk.id))).result()
    assert copy.disk_size_gb == 8
    compute.disks.begin_delete(group, "blank-copy").result()
    with pytest.raises(ResourceNotFoundError):
        compute.disks.get(group, "blank-copy")


def test_disk_download_url_round_trips_through_import(shoal: Shoal, group: str) -> None:
    import io
    import tarfile

    import requests
    from azure.mgmt.compute.models import GrantAccessData

    compute = shoal.compute_client()
    vm = compute.virtual_machines.begin_create_or_update(group, "exporter", vm_model(
        HOST, [DataDisk(lun=0, create_option="Empty", disk_size_gb=4)])).result()
    run(compute, group, "exporter", "mkdir -p /datadisks/lun0/results && echo exported > /datadisks/lun0/results/a.txt")
    disk_name = vm.storage_profile.data_disks[0].name
    access = compute.disks.begin_grant_access(group, disk_name, GrantAccessData(access="Read",
                                                                               duration_in_seconds=600)).result()
    assert access.access_sas.startswith(shoal.authority + "/downloads/")
    assert compute.disks.get(group, disk_name).disk_state == "ActiveSAS"
    body = requests.get(access.access_sas, verify=shoal.ca_bundle, timeout=60).content
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        member = tar.extractfile("./results/a.txt")
        assert member is not None and member.read() == b"exported\n"
    copy = compute.disks.begin_create_or_update(group, "reimported", Disk(
        location=LOCATION, creation_data=CreationData(create_option="Import", source_uri=access.access_sas))).result()
    assert copy.provisioning_state == "Succeeded"
    compute.disks.begin_revoke_access(group, disk_name).result()
    assert requests.get(access.access_sas, verify=shoal.ca_bundle, timeout=60).status_code == 404
    compute.virtual_machines.begin_create_or_update(group, "reader", vm_model(
        HOST, [DataDisk(lun=0, create_option="Attach", managed_disk=ManagedDiskParameters(id=copy.id))])).result()
    assert "exported" in run(compute, group, "reader", "cat /datadisks/lun0/results/a.txt")


def test_extensions_from_image_disks_and_versions_from_a_vm_keep_lineage(shoal: Shoal, server: ShoalServer,
                                                                         group: str) -> None:
    import json

    from azure.mgmt.compute.models import GalleryArtifactVersionFullSource as Source
    from azure.mgmt.compute.models import VirtualMachineExtension, VirtualMachineExtensionProperties

    compute = shoal.compute_client()
    vm = compute.virtual_machines.begin_create_or_update(group, "withext", vm_model(HOST)).result()
    ext = compute.virtual_machine_extensions.begin_create_or_update(group, "withext", "custom", VirtualMachineExtension(
        location=LOCATION, properties=VirtualMachineExtensionProperties(
            publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1",
            settings={"commandToExecute": "true"}))).result()
    assert ext.properties.provisioning_state == "Succeeded"
    assert [e.name for e in compute.virtual_machine_extensions.list(group, "withext").value] == ["custom"]
    compute.virtual_machines.begin_deallocate(group, "withext").result()
    compute.virtual_machines.generalize(group, "withext")
    compute.galleries.begin_create_or_update(group, "gal2", Gallery(location=LOCATION)).result()
    compute.gallery_images.begin_create_or_update(group, "gal2", "def", GalleryImage(
        location=LOCATION, os_type="Linux", os_state="Generalized",
        identifier=GalleryImageIdentifier(publisher="me", offer="ext", sku="host"))).result()
    version = compute.gallery_image_versions.begin_create_or_update(group, "gal2", "def", "1.0.0", GalleryImageVersion(
        location=LOCATION, storage_profile=GalleryImageVersionStorageProfile(source=Source(id=vm.id)))).result()
    assert version.provisioning_state == "Succeeded"
    lineage = json.loads(server.cli("lineage", version.id).stdout)["lineage"]
    assert lineage["extensions"] == ["Microsoft.Azure.Extensions.CustomScript"]
    assert lineage["sourceVm"].lower() == vm.id.lower() and lineage["method"] == "vm-capture"
    assert lineage["baseImage"]["publisher"] == "shoal"

    disk = compute.disks.begin_create_or_update(group, "from-version", Disk(location=LOCATION, creation_data=(
        CreationData(create_option="FromImage", gallery_image_reference={"id": version.id})))).result()
    assert disk.provisioning_state == "Succeeded"
    disk_lineage = json.loads(server.cli("lineage", disk.id).stdout)["lineage"]
    assert disk_lineage["sourceImage"].lower() == version.id.lower()
