"""Gallery replicas: a pool from a gallery version with replicas against a pool from the managed image it was made of.

Measured in the same run, on the same server, from the same image content (the gallery version is published
from the managed image):
  image    a pool from the managed image (`imageReference.id` = the image);
  gallery  a pool from a gallery version with 2 replicas in the pool's region.
Both pools are created through azure-mgmt-batch (the data plane refuses managed images at current api-versions)
with N dedicated nodes, no start task. For each pool:
  steady   seconds from the create call until the pool is steady with N idle nodes: the later of the pool's
           `allocationStateTransitionTime` and the last node's `stateTransitionTime` (client and service share
           the host's clock; the client checks every 0.25 s, so its own requests hardly load the server);
  idle     per-node idle latency, the node's `stateTransitionTime` (it became idle) minus its `allocationTime`.
Rounds alternate image / gallery (other work on the machine then hits both alike) and each pool is deleted
before the next one is created. Prints every round, the medians over the rounds, the ratios and whether the
targets are met (gallery at least 25% faster to steady, at least 30% lower median idle latency).

What differs between the two (the provisioning path, nothing else; no delays anywhere):
  - a managed image is one source: its nodes are built one after another, each by a launched machine helper
    (a process start from the server), mounting every layer of the image's disks;
  - a gallery version's replicas were prepared when it was replicated: each holds its disks flattened into one
    layer per disk and a resident provisioner (`shoal-machine serve`) that builds the nodes booted from it
    without a process launch per node; the replicas' provisioning streams run side by side.
The image from `prepare_image` has one OS layer. ``--generations G`` updates that image G-1 times the way
images are maintained (a VM from the previous image, a change, snapshots, a new image), which adds one OS layer
per generation, and measures pools from the last one.

    .venv/bin/python bench/bench_gallery_vs_image.py [--nodes 300] [--rounds 5] [--replicas 2] [--generations 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from azure.mgmt.batch.models import (
    DeploymentConfiguration,
    FixedScaleSettings,
    ImageReference,
    Pool,
    ScaleSettings,
    VirtualMachineConfiguration,
)
from azure.mgmt.compute.models import (
    CreationData,
    DataDisk,
    GalleryArtifactVersionFullSource,
    GalleryImageVersion,
    GalleryImageVersionPublishingProfile,
    GalleryImageVersionStorageProfile,
    HardwareProfile,
    Image,
    ImageDataDisk,
    ImageOSDisk,
    ImageStorageProfile,
    RunCommandInput,
    Snapshot,
    StorageProfile,
    SubResource,
    TargetRegion,
    VirtualMachine,
)
from azure.mgmt.compute.models import ImageReference as VmImageReference

from batch_fixtures import LOCATION, NODE_AGENT, create_account, prepare_image
from harness import ShoalServer
from shoal.azure import Shoal

POLL = 0.25  # seconds between the client's checks (the times measured are the service's own)


def publish_version(shoal: Shoal, group: str, image_id: str, replicas: int) -> str:
    """Version 2.0.0 of the prepared gallery image, from the managed image, with ``replicas`` in the region."""
    version = shoal.compute_client().gallery_image_versions.begin_create_or_update(
        group, "gal", "def", "2.0.0", GalleryImageVersion(
            location=LOCATION, publishing_profile=GalleryImageVersionPublishingProfile(
                target_regions=[TargetRegion(name=LOCATION, regional_replica_count=replicas)]),
            storage_profile=GalleryImageVersionStorageProfile(source=GalleryArtifactVersionFullSource(id=image_id)))
    ).result()
    return str(version.id)


def next_generation(shoal: Shoal, group: str, image_id: str, generation: int) -> str:
    """The next version of an image: a VM from it, a change, snapshots of its disks, an image from them."""
    compute = shoal.compute_client()
    name = f"gen{generation}"
    vm = compute.virtual_machines.begin_create_or_update(group, name, VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=VmImageReference(id=image_id), data_disks=[
            DataDisk(lun=0, create_option="FromImage")]))).result()
    result = compute.virtual_machines.begin_run_command(group, name, RunCommandInput(
        command_id="RunShellScript", script=[f"echo {generation} > /opt/shoal-app/generation"])).result()
    assert result.value[1].code == "ComponentStatus/ExitCode/0", result.value[0].message
    snaps = {}
    for key, disk_id in (("os", vm.storage_profile.os_disk.managed_disk.id),
                         ("data", vm.storage_profile.data_disks[0].managed_disk.id)):
        snaps[key] = compute.snapshots.begin_create_or_update(group, f"{name}-{key}", Snapshot(
            location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk_id))).result()
    compute.virtual_machines.begin_delete(group, name).result()
    image = compute.images.begin_create_or_update(group, f"img-{name}", Image(location=LOCATION, storage_profile=(
        ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snaps["os"].id)),
            data_disks=[ImageDataDisk(lun=0, snapshot=SubResource(id=snaps["data"].id))])))).result()
    return str(image.id)


def measure(shoal: Shoal, group: str, account: Any, pool_id: str, image_id: str, n: int) -> dict[str, Any]:
    mgmt = shoal.batch_mgmt_client()
    client = shoal.batch_client(account.account_endpoint)
    start = datetime.now(UTC)
    mgmt.pool.create(group, account.name, pool_id, Pool(
        vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
            virtual_machine_configuration=VirtualMachineConfiguration(
                image_reference=ImageReference(id=image_id), node_agent_sku_id=NODE_AGENT)),
        scale_settings=ScaleSettings(fixed_scale=FixedScaleSettings(target_dedicated_nodes=n))))
    while True:
        counts = {c.pool_id: c for c in client.list_pool_node_counts()}.get(pool_id)
        if counts is not None and counts.dedicated.idle == n and \
                client.get_pool(pool_id).allocation_state == "steady":
            break
        time.sleep(POLL)
    nodes = list(client.list_nodes(pool_id))
    idle = [(node.state_transition_time - node.allocation_time).total_seconds() for node in nodes]
    pool = client.get_pool(pool_id)
    # When the service recorded it (same host clock): the pool went steady, and the last node became idle.
    steady = (max(pool.allocation_state_transition_time, *(node.state_transition_time for node in nodes))
              - start).total_seconds()
    warnings = [f"{e.code}: {e.message}" for e in pool.resize_errors or []]
    client.begin_delete_pool(pool_id, polling_interval=1).result()
    return {"steady": steady, "idle": statistics.median(idle), "idle_max": max(idle), "nodes": len(nodes),
            "warnings": warnings}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--generations", type=int, default=1, help="image generations (one OS layer each)")
    args = parser.parse_args()
    n = args.nodes
    server = ShoalServer().start()
    results: dict[str, list[dict[str, Any]]] = {"image": [], "gallery": []}
    try:
        shoal = Shoal.from_env_json(server.env)
        prepared = prepare_image(shoal)
        image_id = prepared.image_id
        for generation in range(2, args.generations + 1):
            image_id = next_generation(shoal, prepared.group, image_id, generation)
        version_id = publish_version(shoal, prepared.group, image_id, args.replicas)
        account = create_account(shoal, prepared.group)
        sources = {"image": image_id, "gallery": version_id}
        for r in range(args.rounds):
            order = ("image", "gallery") if r % 2 == 0 else ("gallery", "image")
            for kind in order:
                got = measure(shoal, prepared.group, account, f"{kind}{r}", sources[kind], n)
                results[kind].append(got)
                print(f"round {r + 1} {kind:7}: steady {got['steady']:6.2f} s   idle latency median "
                      f"{got['idle']:6.2f} s (max {got['idle_max']:5.2f} s)   nodes {got['nodes']}"
                      + (f"   warnings: {got['warnings']}" if got["warnings"] else ""), flush=True)
    finally:
        server.cleanup()
    med = {kind: {key: statistics.median(g[key] for g in rs) for key in ("steady", "idle")}
           for kind, rs in results.items()}
    steady_gain = 1 - med["gallery"]["steady"] / med["image"]["steady"]
    idle_gain = 1 - med["gallery"]["idle"] / med["image"]["idle"]
    print(f"nodes: {n}, gallery replicas: {args.replicas}, image generations (OS layers): {args.generations}, "
          f"rounds: {args.rounds} (medians over rounds)")
    print(f"managed image : steady {med['image']['steady']:6.2f} s   median idle latency {med['image']['idle']:6.2f} s")
    print(f"gallery       : steady {med['gallery']['steady']:6.2f} s   median idle latency "
          f"{med['gallery']['idle']:6.2f} s")
    print(f"ratio gallery/image steady = {1 - steady_gain:.2f}: {steady_gain:+.0%} faster (target >= 25%: "
          f"{'met' if steady_gain >= 0.25 else 'NOT met'})")
    print(f"ratio gallery/image idle   = {1 - idle_gain:.2f}: {idle_gain:+.0%} lower (target >= 30%: "
          f"{'met' if idle_gain >= 0.30 else 'NOT met'})")


if __name__ == "__main__":
    main()
