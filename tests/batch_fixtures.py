"""Shared set-up for Batch tests: a prepared image (software + data disk) and a Batch account."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.batch import models as bm
from azure.mgmt.compute.models import (
    CreationData,
    DataDisk,
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
    RunCommandInput,
    Snapshot,
    StorageProfile,
    SubResource,
    TargetRegion,
    VirtualMachine,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from shoal.azure import Shoal

LOCATION = "westus"
HOST = ImageReference(publisher="shoal", offer="host", sku="host", version="latest")
NODE_AGENT = "batch.node.debian 12"


@dataclass
class PreparedImage:
    group: str
    image_id: str
    version_id: str
    definition_id: str


def prepare_image(shoal: Shoal) -> PreparedImage:
    """The seed's preparation path on the host base: install 'software', write data, snapshot, image, gallery."""
    group = f"batchimg-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    compute = shoal.compute_client()
    vm = compute.virtual_machines.begin_create_or_update(group, "prep", VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=HOST, data_disks=[
            DataDisk(lun=0, create_option="Empty", disk_size_gb=4)]))).result()
    result = compute.virtual_machines.begin_run_command(group, "prep", RunCommandInput(
        command_id="RunShellScript", script=[
            "mkdir -p /opt/shoal-app && printf '#!/bin/sh\\necho shoal-app-1.0 \"$@\"\\n' > /opt/shoal-app/run",
            "chmod +x /opt/shoal-app/run", "echo reference-data > /datadisks/lun0/reference.txt"])).result()
    assert result.value[1].code == "ComponentStatus/ExitCode/0", result.value[0].message
    snaps = {}
    for key, disk_id in (("os", vm.storage_profile.os_disk.managed_disk.id),
                         ("data", vm.storage_profile.data_disks[0].managed_disk.id)):
        snaps[key] = compute.snapshots.begin_create_or_update(group, f"{key}-snap", Snapshot(
            location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk_id))).result()
    image = compute.images.begin_create_or_update(group, "img", Image(location=LOCATION, storage_profile=(
        ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snaps["os"].id)),
            data_disks=[ImageDataDisk(lun=0, snapshot=SubResource(id=snaps["data"].id))])))).result()
    compute.galleries.begin_create_or_update(group, "gal", Gallery(location=LOCATION)).result()
    definition = compute.gallery_images.begin_create_or_update(group, "gal", "def", GalleryImage(
        location=LOCATION, os_type="Linux", os_state="Generalized",
        identifier=GalleryImageIdentifier(publisher="me", offer="app", sku="host"))).result()
    version = compute.gallery_image_versions.begin_create_or_update(group, "gal", "def", "1.0.0", GalleryImageVersion(
        location=LOCATION, publishing_profile=GalleryImageVersionPublishingProfile(
            target_regions=[TargetRegion(name=LOCATION, regional_replica_count=1)]),
        storage_profile=GalleryImageVersionStorageProfile(source=GalleryArtifactVersionFullSource(id=image.id)))
    ).result()
    return PreparedImage(group, image.id, version.id, definition.id)


def create_account(shoal: Shoal, group: str, name: str | None = None, **props: Any) -> Any:
    from azure.mgmt.batch.models import BatchAccountCreateParameters

    name = name or f"acct{uuid.uuid4().hex[:10]}"
    return shoal.batch_mgmt_client().batch_account.begin_create(group, name, BatchAccountCreateParameters(
        location=LOCATION, **props)).result()


def work_pool(shoal: Shoal) -> tuple[Any, PreparedImage]:
    """A Batch client and a pool 'work' of four idle nodes (4 slots each) from a prepared image."""
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="work", vm_size="standard_d2s_v3", target_dedicated_nodes=4, task_slots_per_node=4,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in client.list_nodes("work") if n.state == "idle"]) == 4, "idle nodes")
    return client, image


def wait_for(fn: Callable[[], Any], what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def new_job(client: Any, **kw: Any) -> str:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id="work"), **kw))
    return job_id


@contextlib.contextmanager
def outside_web(directory: Path) -> Iterator[str]:
    """A host outside Shoal's address space (a network namespace made here) serving ``directory`` over HTTP on
    port 8081: what nodes reach as "the internet" (they cannot reach the host's own services). Yields its URL."""
    name = f"shoalext{uuid.uuid4().hex[:6]}"
    net = f"192.168.{random.randint(200, 250)}"
    host_if, addr = f"sx{uuid.uuid4().hex[:8]}", f"{net}.2"
    cmds = [["ip", "netns", "add", name], ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
                                            "netns", name],
            ["ip", "addr", "add", f"{net}.1/30", "dev", host_if], ["ip", "link", "set", host_if, "up"],
            ["ip", "-n", name, "addr", "add", f"{addr}/30", "dev", "eth0"],
            ["ip", "-n", name, "link", "set", "eth0", "up"],
            ["ip", "-n", name, "route", "add", "default", "via", f"{net}.1"]]
    web = None
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        web = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "http.server", "8081", "--bind",
                                addr, "--directory", str(directory)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        listening = ["ip", "netns", "exec", name, "ss", "-ltn", "sport", "= :8081"]
        wait_for(lambda: "LISTEN" in subprocess.run(listening, capture_output=True, text=True).stdout,
                 "the outside web server", 30)
        yield f"http://{addr}:8081"
    finally:
        if web is not None:
            web.kill()
            web.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
