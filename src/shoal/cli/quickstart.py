"""``shoal quickstart``: the seed's whole workflow against a running Shoal, with the official Azure SDKs.

base VM -> install software with run-command -> snapshot OS + data disk -> managed image -> gallery version ->
Batch account -> pool through the seed's management REST call -> nodes -> a job of tasks that use the
installed software and the data disk -> a summary. Everything it creates goes away unless ``--keep``, also
when a step fails or the run is interrupted.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

LOCATION = "westus"
POLL_S = 0.1   # short, so that the measured times are not rounded up to the polling interval


class QuickstartError(Exception):
    """A step failed for a reason the quickstart can explain in one sentence."""


def _wait(what: str, poll: Callable[[], int], total: int, progress: Progress, *,
          check: Callable[[], None] | None = None, timeout: float = 900) -> None:
    """Poll until ``poll()`` reaches ``total``, with a progress bar; ``check`` raises on a failure."""
    task = progress.add_task(what, total=total)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = poll()
        progress.update(task, completed=min(done, total))
        if done >= total:
            return
        if check is not None:
            check()
        time.sleep(POLL_S)
    raise QuickstartError(f"Timed out waiting for {what}. Check `shoal serve`'s output for errors.")


# The process runtime's stand-in for `apt-get install hello`: a script in the machine's own directory.
PLAIN_INSTALL = [
    "set -e", 'mkdir -p "$SHOAL_MACHINE_ROOT/usr/local/bin"',
    """printf '#!/bin/sh\\nif [ "$1" = -g ]; then echo "$2"; else echo "Hello, world!"; fi\\n' """
    '> "$SHOAL_MACHINE_ROOT/usr/local/bin/hello"',
    'chmod +x "$SHOAL_MACHINE_ROOT/usr/local/bin/hello"',
    '"$SHOAL_MACHINE_ROOT/usr/local/bin/hello" -g "hello is installed"',
    'seq 1 1000 > "$SHOAL_DATADISK_LUN0/numbers.txt"',
]


def _server_info(state_dir: Path | None) -> dict[str, Any]:
    """What ``shoal serve`` saved in the state directory, once it answers: fail early and plainly otherwise
    (``shoal env`` would create a new, empty state directory, and the SDKs would fail with a long traceback)."""
    import requests

    from shoal.config import default_state_dir

    directory = (state_dir or default_state_dir()).expanduser()
    saved = directory / "server.json"
    start = f"start it first: `make run`, or `shoal serve --state-dir {directory}`"
    if not saved.exists():
        raise QuickstartError(f"No Shoal has run with the state directory {directory}: {start}.")
    info: dict[str, Any] = json.loads(saved.read_text())
    url = f"{info['authorityHost']}/healthz"
    try:
        requests.get(url, verify=info["caBundle"], timeout=10).raise_for_status()
    except (requests.RequestException, OSError) as exc:
        raise QuickstartError(f"Shoal does not answer at {url} ({exc.__class__.__name__}): {start}.") from exc
    return info


def build_base(info: dict[str, Any], console: Console, timings: dict[str, float]) -> None:
    """Build the Debian 12 base here, with its stages on screen, before the VM needs it (the server would build it
    too, behind one long wait). Nothing to do once it is built."""
    from shoal.cli.marketplace import build_with_progress
    from shoal.runtime.debootstrap import DebootstrapError
    from shoal.runtime.layers import LayerError, LayerStore
    from shoal.runtime.marketplace import BaseError, BaseProvider, Catalog

    store = Path(info.get("storeDir") or Path(str(info["stateDir"])) / "store")
    image = Catalog.load().find("debian", "debian-12", "12", "latest")
    if image is None or not (store / "layers").is_dir():
        return  # an operator catalog without it, or a store this user cannot see: the server builds it
    provider = BaseProvider(store, LayerStore(store / "layers"))
    if provider.is_ready(image):
        return
    console.print("Building the Debian 12 base image with debootstrap (once: later machines and runs reuse it)")
    start = time.perf_counter()
    try:
        build_with_progress(provider, image, console)
    except (BaseError, DebootstrapError, LayerError, OSError) as exc:
        raise QuickstartError(f"Building the Debian 12 base failed: {exc}. Retry with `shoal marketplace pull "
                              "debian:debian-12:12` to see every stage.") from exc
    title = "Debian 12 base image built"
    timings[title] = time.perf_counter() - start
    console.print(f"[green]✓[/green] {title} [dim]({timings[title]:.1f} s)[/dim]")


def run(state_dir: Path | None, *, keep: bool, tasks: int, nodes: int, console: Console) -> None:
    import importlib

    import requests

    # The SDK models accept their flattened properties as keywords at run time; their typed overloads do not.
    bm: Any = importlib.import_module("azure.batch.models")
    cm: Any = importlib.import_module("azure.mgmt.compute.models")
    BatchAccountCreateParameters: Any = importlib.import_module("azure.mgmt.batch.models").BatchAccountCreateParameters
    ResourceGroup: Any = importlib.import_module("azure.mgmt.resource.resources.models").ResourceGroup
    ResourceNotFoundError: Any = importlib.import_module("azure.core.exceptions").ResourceNotFoundError

    from shoal.azure import Shoal

    if tasks < 1 or nodes < 1:
        raise QuickstartError("The quickstart needs at least one task and one node.")
    info = _server_info(state_dir)
    # The process runtime isolates nothing: its machines are directories and their commands run as an
    # unprivileged host user. There is no apt there: the software goes into the machine's directory, and
    # commands find the machine's places through SHOAL_MACHINE_ROOT and SHOAL_DATADISK_LUN<N>.
    plain = str(info.get("isolation", "")).startswith("process")
    shoal = Shoal.from_state_dir(state_dir)
    suffix = uuid.uuid4().hex[:6]
    group, account_name = f"quickstart-{suffix}", f"quickstart{suffix}"
    rm = shoal.resource_client()
    compute = shoal.compute_client()
    timings: dict[str, float] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    created: dict[str, Any] = {}   # what exists so far, for the clean-up
    started = time.perf_counter()

    def step(title: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        with console.status(title):
            value = fn()
        timings[title] = time.perf_counter() - start
        console.print(f"[green]✓[/green] {title} [dim]({timings[title]:.1f} s)[/dim]")
        return value

    def workflow() -> Table:
        if not plain:
            build_base(info, console, timings)
        base = cm.ImageReference(publisher="shoal", offer="host", sku="host", version="latest") if plain else \
            cm.ImageReference(publisher="debian", offer="debian-12", sku="12", version="latest")
        vm = step("VM from the host's own root (process runtime: a directory)" if plain else
                  "VM from the Debian 12 base image (built once with debootstrap, then cached)", lambda: (
                      compute.virtual_machines.begin_create_or_update(group, "prep", cm.VirtualMachine(
                          location=LOCATION, hardware_profile=cm.HardwareProfile(vm_size="Standard_D2s_v3"),
                          storage_profile=cm.StorageProfile(image_reference=base, data_disks=[
                              cm.DataDisk(lun=0, create_option="Empty", disk_size_gb=4)]),
                          os_profile=cm.OSProfile(computer_name="prep", admin_username="azureuser"))).result()))

        def install() -> Any:
            return compute.virtual_machines.begin_run_command(group, "prep", cm.RunCommandInput(
                command_id="RunShellScript", script=PLAIN_INSTALL if plain else [
                    "set -e", "apt-get update -qq", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello",
                    "hello -g 'hello is installed'", "seq 1 1000 > /datadisks/lun0/numbers.txt"])).result()

        result = step("Install software (a 'hello' script in the machine's directory) and data on the data disk, "
                      "with run-command" if plain else
                      "Install software (apt-get install hello) and data on the data disk, with run-command",
                      install)
        # As in Azure, the first status always says "succeeded"; Shoal adds the exit code as a second status.
        codes = [s.code for s in result.value]
        if "ComponentStatus/ExitCode/0" not in codes:
            raise QuickstartError(f"run-command failed ({', '.join(codes)}): {result.value[0].message}")

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
                identifier=cm.GalleryImageIdentifier(publisher="quickstart", offer="hello", sku="debian12"))
            ).result()
            return compute.gallery_image_versions.begin_create_or_update(group, "gallery", "hello", "1.0.0",
                cm.GalleryImageVersion(location=LOCATION, publishing_profile=cm.GalleryImageVersionPublishingProfile(
                    target_regions=[cm.TargetRegion(name=LOCATION, regional_replica_count=2)]),
                    storage_profile=cm.GalleryImageVersionStorageProfile(
                        source=cm.GalleryArtifactVersionFullSource(id=image.id)))).result()

        version = step("Gallery, image definition and version with 2 replicas", gallery)
        account = created["account"] = step("Batch account", lambda: shoal.batch_mgmt_client().batch_account
                                            .begin_create(group, account_name, BatchAccountCreateParameters(
                                                location=LOCATION)).result())
        batch = created["batch"] = shoal.batch_client(account.account_endpoint)

        def seed_pool() -> Any:
            token = shoal.credential().get_token("https://management.azure.com/.default").token
            url = (f"{shoal.authority}/subscriptions/{shoal.subscription_id}/resourceGroups/{group}/providers/"
                   f"Microsoft.Batch/batchAccounts/{account_name}/pools/pool?api-version=2020-03-01")
            agent = "batch.node.debian 12"
            if plain:  # the host's own base: the node agent of the host's distribution
                agent = next((i.node_agent_sku_id for i in batch.list_supported_images()
                              if i.image_reference.publisher == "shoal"), agent)
            body: dict[str, Any] = {"properties": {"vmSize": "STANDARD_D2S_V3", "deploymentConfiguration": {
                "virtualMachineConfiguration": {"imageReference": {"id": version.id},
                                                "nodeAgentSkuId": agent}},
                "taskSlotsPerNode": 4, "scaleSettings": {"fixedScale": {"targetDedicatedNodes": nodes}}}}
            r = requests.put(url, json=body, headers={"Authorization": f"Bearer {token}"}, verify=shoal.ca_bundle,
                             timeout=60)
            if not r.ok:
                raise QuickstartError(f"PUT {url} answered {r.status_code}: {r.text}")
            created["pool"] = True
            return r.json()

        pool_start = time.perf_counter()
        step("Pool through the seed's REST call (PUT .../pools/pool?api-version=2020-03-01)", seed_pool)

        def idle_nodes() -> int:
            if batch.get_pool("pool").allocation_state != "steady":
                return 0
            return sum(1 for n in batch.list_nodes("pool") if n.state == "idle")

        def pool_failed() -> None:
            pool = batch.get_pool("pool")
            errors = [e for e in pool.resize_errors or [] if e.code != "InsufficientReplicas"]  # a warning only
            if errors:
                raise QuickstartError(f"The pool did not resize: {[e.message for e in errors]}")
            bad = [f"{n.id} is {getattr(n.state, 'value', n.state)}"
                   + "".join(f" ({e.message})" for e in n.errors or [])
                   for n in batch.list_nodes("pool") if n.state in ("unusable", "starttaskfailed")]
            if bad:
                raise QuickstartError(f"Nodes failed: {'; '.join(bad)}")

        with Progress(*columns, console=console) as progress:
            _wait(f"Pool steady, nodes idle ({nodes})", idle_nodes, nodes, progress, check=pool_failed)
        steady_s = time.perf_counter() - pool_start
        batch.create_job(bm.BatchJobCreateOptions(id="job", pool_info=bm.BatchPoolInfo(pool_id="pool")))
        task_start = time.perf_counter()
        batch.create_tasks("job", [bm.BatchTaskCreateOptions(
            id=f"task{i}", command_line=(
                f"/bin/sh -c '\"$SHOAL_MACHINE_ROOT/usr/local/bin/hello\" -g \"task {i}\"; "
                f"sed -n {i + 1}p \"$SHOAL_DATADISK_LUN0/numbers.txt\"'" if plain else
                f"/bin/sh -c 'hello -g \"task {i}\"; sed -n {i + 1}p /datadisks/lun0/numbers.txt'"))
            for i in range(tasks)])
        with Progress(*columns, console=console) as progress:
            _wait(f"Tasks completed ({tasks})", lambda: batch.get_job_task_counts("job").task_counts.completed,
                  tasks, progress)
        tasks_s = time.perf_counter() - task_start
        counts = batch.get_job_task_counts("job").task_counts
        shown = min(7, tasks - 1)
        sample = b"".join(batch.download_task_file("job", f"task{shown}", "stdout.txt")).decode().strip()
        sample = sample.replace("\n", " | ")

        table = Table(title="Summary")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("tasks succeeded", f"{counts.succeeded}/{tasks}")
        table.add_row("time to steady state (pool PUT -> all nodes idle)", f"{steady_s:.2f} s for {nodes} nodes")
        table.add_row("tasks/s (add -> all completed)", f"{tasks / tasks_s:.1f}")
        table.add_row(f"task{shown} stdout (hello, line {shown + 1} of the data disk)", sample)
        if counts.succeeded != tasks:
            table.caption = f"{tasks - counts.succeeded} of {tasks} tasks did not succeed."
        elif sample != f"task {shown} | {shown + 1}":
            table.caption = f"task{shown} printed {sample!r}, not 'task {shown} | {shown + 1}'."
        return table

    def clean_up() -> None:
        if "pool" in created:
            created["batch"].begin_delete_pool("pool", polling_interval=1).result()
        if "account" in created:
            shoal.batch_mgmt_client().batch_account.begin_delete(group, account_name, polling_interval=1).result()
        rm.resource_groups.begin_delete(group, polling_interval=1).result()
        left = [f"resource group {group}"] if rm.resource_groups.check_existence(group) else []
        if "account" in created:
            try:
                shoal.batch_mgmt_client().batch_account.get(group, account_name)
                left.append(f"Batch account {account_name}")
            except ResourceNotFoundError:
                pass
        if left:
            raise QuickstartError(f"The clean-up left {' and '.join(left)} behind.")

    console.rule("Shoal quickstart: a custom-image Batch pool, from a VM to tasks")
    step(f"Resource group {group}", lambda: rm.resource_groups.create_or_update(group, ResourceGroup(
        location=LOCATION)))
    try:
        summary = workflow()
    except BaseException:   # also Ctrl-C: nothing is left behind unless --keep
        if keep:
            console.print(f"[yellow]Kept resource group {group} for inspection (--keep).[/yellow]")
        else:
            console.print(f"[yellow]Deleting resource group {group} (pass --keep to keep it for inspection)."
                          "[/yellow]")
            try:
                clean_up()
            except Exception as exc:
                console.print(f"[red]The clean-up failed too: {exc}[/red]")
        raise
    if keep:
        console.print(f"Kept resource group {group} (account {account_name}, pool 'pool', job 'job').")
    else:
        step("Clean-up (pool, account, resource group; checked gone)", clean_up)
    summary.add_row("wall clock (whole quickstart)", f"{time.perf_counter() - started:.1f} s")
    console.print(summary)
    if summary.caption:
        raise QuickstartError(str(summary.caption))
