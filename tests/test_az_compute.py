"""The official az CLI's image commands against Shoal (VMs are made with the SDK: `az vm create` needs
ARM template deployments and Microsoft.Network, which Shoal does not serve)."""

from __future__ import annotations

import uuid

import pytest
from azure.mgmt.compute.models import (
    DataDisk,
    HardwareProfile,
    ImageReference,
    StorageProfile,
    VirtualMachine,
)

from conftest import AzCli
from shoal.azure import Shoal

pytestmark = pytest.mark.az
LOCATION = "westus"


def test_az_image_pipeline_and_run_command(az: AzCli, shoal: Shoal) -> None:
    group = f"azimg-{uuid.uuid4().hex[:6]}"
    az.json("group", "create", "-n", group, "-l", LOCATION)
    vm = shoal.compute_client().virtual_machines.begin_create_or_update(group, "prep", VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(
            image_reference=ImageReference(publisher="shoal", offer="host", sku="host", version="latest"),
            data_disks=[DataDisk(lun=0, create_option="Empty", disk_size_gb=4)]))).result()

    out = az.json("vm", "run-command", "invoke", "-g", group, "-n", "prep", "--command-id", "RunShellScript",
                  "--scripts", "echo hello-from-vm", "echo data > /datadisks/lun0/file.txt; uname -s")
    message = out["value"][0]["message"]
    assert out["value"][0]["code"] == "ProvisioningState/succeeded"
    assert message.startswith("Enable succeeded: \n[stdout]\nhello-from-vm\nLinux\n")

    os_snap = az.json("snapshot", "create", "-g", group, "-n", "os-snap", "--source",
                      vm.storage_profile.os_disk.managed_disk.id)
    data_snap = az.json("snapshot", "create", "-g", group, "-n", "data-snap", "--source",
                        vm.storage_profile.data_disks[0].managed_disk.id)
    assert os_snap["provisioningState"] == data_snap["provisioningState"] == "Succeeded"
    assert {s["name"] for s in az.json("snapshot", "list", "-g", group)} == {"os-snap", "data-snap"}

    image = az.json("image", "create", "-g", group, "-n", "img", "--source", os_snap["id"],
                    "--data-disk-sources", data_snap["id"], "--os-type", "Linux")
    assert image["provisioningState"] == "Succeeded"
    assert image["storageProfile"]["dataDisks"][0]["lun"] == 0
    assert az.json("image", "show", "-g", group, "-n", "img")["id"] == image["id"]

    az.json("sig", "create", "-g", group, "-r", "gal")
    definition = az.json("sig", "image-definition", "create", "-g", group, "-r", "gal", "-i", "def",
                         "--publisher", "me", "--offer", "batch", "--sku", "host", "--os-type", "Linux",
                         "--os-state", "Generalized")
    assert definition["provisioningState"] == "Succeeded"
    version = az.json("sig", "image-version", "create", "-g", group, "-r", "gal", "-i", "def", "-e", "1.0.0",
                      "--managed-image", image["id"], "--target-regions", f"{LOCATION}=2")
    assert version["provisioningState"] == "Succeeded"
    shown = az.json("sig", "image-version", "show", "-g", group, "-r", "gal", "-i", "def", "-e", "1.0.0",
                    "--expand", "ReplicationStatus")
    assert shown["replicationStatus"]["aggregatedState"] == "Completed"
    assert shown["publishingProfile"]["targetRegions"][0]["regionalReplicaCount"] == 2

    az.run("image", "delete", "-g", group, "-n", "img")
    az.run("snapshot", "delete", "-g", group, "-n", "data-snap")
    az.run("group", "delete", "-n", group, "--yes")


def test_az_vm_image_browse(az: AzCli) -> None:
    publishers = {p["name"] for p in az.json("vm", "image", "list-publishers", "-l", LOCATION)}
    assert {"debian", "shoal"} <= publishers
    offers = [o["name"] for o in az.json("vm", "image", "list-offers", "-l", LOCATION, "-p", "debian")]
    assert offers == ["debian-12"]
    skus = [s["name"] for s in az.json("vm", "image", "list-skus", "-l", LOCATION, "-p", "debian", "-f", "debian-12")]
    assert skus == ["12"]
    images = az.json("vm", "image", "list", "-l", LOCATION, "-p", "debian", "-f", "debian-12", "-s", "12", "--all")
    assert images and images[0]["urn"].startswith("debian:debian-12:12:")
    shown = az.json("vm", "image", "show", "-l", LOCATION, "--urn", "debian:debian-12:12:latest")
    assert shown["osDiskImage"]["operatingSystem"] == "Linux"
