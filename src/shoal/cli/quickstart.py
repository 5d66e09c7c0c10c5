"""``shoal quickstart``: the seed's whole workflow against a running Shoal, with the official Azure SDKs.

base VM -> install software with run-command -> snapshot OS + data disk -> managed image -> gallery version ->
Batch account -> pool through the seed's management REST call -> nodes -> a job of tasks that use the
installed software and the data disk -> a summary. Everything it creates goes away unless ``--keep``.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

LOCATION = "westus"


def _wait(what: str, fn: Callable[[], Any], progress: Progress, *, total: int | None = None,
          count: Callable[[], int] | None = None, timeout: float = 900) -> Any:
    task = progress.add_task(what, total=total)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count is not None:
            progress.update(task, completed=count())
        value = fn()
        if value:
            progress.update(task, completed=total or 1, total=total or 1)
            return value
        time.sleep(0.5)
    raise TimeoutError(f"Timed out waiting for {what}. Check `shoal serve`'s output for errors.")


def run(state_dir: Path | None, *, keep: bool, tasks: int, nodes: int, console: Console) -> None:
    import importlib

    import requests

    # The SDK models accept their flattened properties as keywords at run time; their typed overloads do not.
    bm: Any = importlib.import_module("azure.batch.models")
    cm: Any = importlib.import_module("azure.mgmt.compute.models")
    BatchAccountCreateParameters: Any = importlib.import_module("azure.mgmt.batch.models").BatchAccountCreateParameters
    ResourceGroup: Any = importlib.import_module("azure.mgmt.resource.resources.models").ResourceGroup

    from shoal.azure import Shoal

    shoal = Shoal.from_state_dir(state_dir)
    suffix = uuid.uuid4().hex[:6]
    group = f"quickstart-{suffix}"
    rm = shoal.resource_client()
    compute = shoal.compute_client()
    timings: dict[str, float] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())

    def step(title: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        with console.status(title):
            value = fn()
        timings[title] = time.perf_counter() - start
        console.print(f"[green]✓[/green] {title} [dim]({timings[title]:.1f} s)[/dim]")
        return value

    console.rule("Shoal quickstart: a custom-image Batch pool, from a VM to tasks")
    step(f"Resource group {group}", lambda: rm.resource_groups.create_or_update(group, ResourceGroup(
        location=LOCATION)))
    vm = step("VM from the Debian 12 base image (built once with debootstrap, then cached)", lambda: (
        compute.virtual_machines.begin_create_or_update(group, "prep", cm.VirtualMachine(
            location=LOCATION, hardware_profile=cm.HardwareProfile(vm_size="Standard_D2s_v3"),
            storage_profile=cm.StorageProfile(
                image_reference=cm.ImageReference(publisher="debian", offer="debian-12", sku="12", version="latest"),
                data_disks=[cm.DataDisk(lun=0, create_option="Empty", disk_size_gb=4)]),
            os_profile=cm.OSProfile(computer_name="prep", admin_username="azureuser"))).result()))

    def install() -> Any:
        return compute.virtual_machines.begin_run_command(group, "prep", cm.RunCommandInput(
            command_id="RunShellScript", script=[
                "set -e", "apt-get update -qq", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello",
                "seq 1 1000 > /datadisks/lun0/numbers.txt"])).result()

    result = step("Install software (apt-get install hello) and data on the data disk, with run-command", install)
    if not result.value[0].message.count("[stdout]"):
        raise RuntimeError(f"run-command failed: {result.value[0].message}")
    def snapshot(key: str, disk_id: str) -> Any:
        return compute.snapshots.begin_create_or_update(group, f"{key}-snap", cm.Snapshot(
            location=LOCATION, creation_data=cm.CreationData(create_option="Copy", source_resource_id=disk_id))
        ).result()

    snaps = {}
    for key, disk_id in (("os", vm.storage_profile.os_disk.managed_disk.id),
                         ("data", vm.storage_profile.data_disks[0].managed_disk.id)):
        snaps[key] = step(f"Snapshot of the {key} disk", functools.partial(snapshot, key, disk_id))
    image = step("Managed image from the snapshots", lambda: compute.images.begin_create_or_update(
        group, "image", cm.Image(location=LOCATION, storage_profile=cm.ImageStorageProfile(
            os_disk=cm.ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=cm.SubResource(
                id=snaps["os"].id)),
            data_disks=[cm.ImageDataDisk(lun=0, snapshot=cm.SubResource(id=snaps["data"].id))]))).result())

    def gallery() -> Any:
        compute.galleries.begin_create_or_update(group, "gallery", cm.Gallery(location=LOCATION)).result()
        compute.gallery_images.begin_create_or_update(group, "gallery", "hello", cm.GalleryImage(
            location=LOCATION, os_type="Linux", os_state="Generalized",
            identifier=cm.GalleryImageIdentifier(publisher="quickstart", offer="hello", sku="debian12"))).result()
        return compute.gallery_image_versions.begin_create_or_update(group, "gallery", "hello", "1.0.0",
            cm.GalleryImageVersion(location=LOCATION, publishing_profile=cm.GalleryImageVersionPublishingProfile(
                target_regions=[cm.TargetRegion(name=LOCATION, regional_replica_count=2)]),
                storage_profile=cm.GalleryImageVersionStorageProfile(
                    source=cm.GalleryArtifactVersionFullSource(id=image.id)))).result()

    version = step("Gallery, image definition and version with 2 replicas", gallery)
    account_name = f"quickstart{suffix}"
    account = step("Batch account", lambda: shoal.batch_mgmt_client().batch_account.begin_create(
        group, account_name, BatchAccountCreateParameters(location=LOCATION)).result())

    def seed_pool() -> Any:
        token = shoal.credential().get_token("https://management.azure.com/.default").token
        url = (f"{shoal.authority}/subscriptions/{shoal.subscription_id}/resourceGroups/{group}/providers/"
               f"Microsoft.Batch/batchAccounts/{account_name}/pools/pool?api-version=2020-03-01")
        body: dict[str, Any] = {"properties": {"vmSize": "STANDARD_D2S_V3", "deploymentConfiguration": {
            "virtualMachineConfiguration": {"imageReference": {"id": version.id},
                                            "nodeAgentSkuId": "batch.node.debian 12"}},
            "taskSlotsPerNode": 4, "scaleSettings": {"fixedScale": {"targetDedicatedNodes": nodes}}}}
        r = requests.put(url, json=body, headers={"Authorization": f"Bearer {token}"}, verify=shoal.ca_bundle,
                         timeout=60)
        r.raise_for_status()
        return r.json()

    step("Pool through the seed's REST call (PUT .../pools/pool?api-version=2020-03-01)", seed_pool)
    batch = shoal.batch_client(account.account_endpoint)
    pool_start = time.perf_counter()
    with Progress(*columns, console=console) as progress:
        _wait(f"Nodes idle ({nodes})", lambda: sum(1 for n in batch.list_nodes("pool") if n.state == "idle")
              >= nodes, progress, total=nodes,
              count=lambda: sum(1 for n in batch.list_nodes("pool") if n.state == "idle"))
    steady_s = time.perf_counter() - pool_start
    batch.create_job(bm.BatchJobCreateOptions(id="job", pool_info=bm.BatchPoolInfo(pool_id="pool")))
    task_start = time.perf_counter()
    batch.create_tasks("job", [bm.BatchTaskCreateOptions(
        id=f"task{i}", command_line=f"/bin/sh -c 'hello -g \"task {i}\"; sed -n {i + 1}p /datadisks/lun0/numbers.txt'")
        for i in range(tasks)])
    with Progress(*columns, console=console) as progress:
        _wait(f"Tasks completed ({tasks})", lambda: batch.get_job_task_counts("job").task_counts.completed >= tasks,
              progress, total=tasks, count=lambda: batch.get_job_task_counts("job").task_counts.completed)
    tasks_s = time.perf_counter() - task_start
    counts = batch.get_job_task_counts("job").task_counts
    sample = b"".join(batch.download_task_file("job", "task7", "stdout.txt")).decode().strip()

    table = Table(title="Summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tasks succeeded", f"{counts.succeeded}/{tasks}")
    table.add_row("pool: 0 -> idle nodes", f"{steady_s:.2f} s for {nodes} nodes")
    table.add_row("tasks/s (add -> all completed)", f"{tasks / tasks_s:.1f}")
    table.add_row("task7 stdout", sample.replace("\n", " | "))
    console.print(table)
    if keep:
        console.print(f"Kept resource group {group} (account {account_name}, pool 'pool', job 'job').")
        return
    step("Clean-up (pool, account, resource group)", lambda: (
        batch.begin_delete_pool("pool", polling_interval=1).result(),
        shoal.batch_mgmt_client().batch_account.begin_delete(group, account_name).result(),
        rm.resource_groups.begin_delete(group).result()))
