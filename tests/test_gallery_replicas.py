"""Pools from gallery versions provision their nodes from the version's replicas in the pool's region, and a
resize with fewer than one replica per 300 target nodes reaches its target but reports a warning.

The server here reads ``SHOAL_NODES_PER_REPLICA=2`` (the allocator's threshold, 300 by default), so a handful of
nodes shows what hundreds would.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm
from azure.mgmt.batch.models import (
    DeploymentConfiguration,
    FixedScaleSettings,
    ImageReference,
    Pool,
    ScaleSettings,
    VirtualMachineConfiguration,
)
from azure.mgmt.compute.models import (
    GalleryArtifactVersionFullSource,
    GalleryImageVersion,
    GalleryImageVersionPublishingProfile,
    GalleryImageVersionStorageProfile,
    TargetRegion,
)

from batch_fixtures import LOCATION, NODE_AGENT, PreparedImage, create_account, prepare_image, wait_for
from harness import ShoalServer, database_of_its_own, parent_pid
from shoal.azure import Shoal
from shoal.domain.batch import allocation

PER_REPLICA = 2


# --- the rules (pure) -----------------------------------------------------------------------------------------

def test_one_replica_serves_up_to_300_target_nodes() -> None:
    one, two = allocation.ReplicaView("westus", ("v-0",)), allocation.ReplicaView("westus", ("v-0", "v-1"))
    assert allocation.replica_warning(300, one) is None and allocation.replica_warning(600, two) is None
    assert allocation.replica_warning(0, allocation.ReplicaView("westus", ())) is None
    warning = allocation.replica_warning(601, two)
    assert warning is not None and warning["code"] == "InsufficientReplicas"
    assert {v["name"]: v["value"] for v in warning["values"]} == {
        "Region": "westus", "ReplicaCount": "2", "TargetNodes": "601", "RecommendedReplicaCount": "3"}
    assert allocation.replica_warning(5, two, nodes_per_replica=2) is not None


def test_the_warning_comes_with_the_end_of_a_resize_only() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    pool = allocation.PoolView("active", "resizing", 3, 0, now, timedelta(minutes=15))
    nodes = [allocation.NodeView(f"n{i}", True, "idle", "") for i in range(3)]
    one = allocation.ReplicaView("westus", ("v-0",))
    done = allocation.decide(pool, nodes, now, replicas=one, nodes_per_replica=2)
    assert done.settle and done.complete and [e["code"] for e in done.errors] == ["InsufficientReplicas"]
    # The pass that creates the last nodes completes the resize (it settles once they have booted).
    last = allocation.decide(pool, nodes[:1], now, replicas=one, nodes_per_replica=2)
    assert not last.settle and last.complete and last.create_dedicated == 2
    assert [e["code"] for e in last.errors] == ["InsufficientReplicas"]
    growing = allocation.decide(pool, nodes[:1], now, replicas=one, nodes_per_replica=2, max_batch=1)
    assert not growing.complete and growing.create_dedicated == 1 and not growing.errors
    assert not allocation.decide(pool, nodes, now, nodes_per_replica=2).errors  # not a gallery pool


def test_nodes_are_spread_round_robin_over_the_replicas() -> None:
    assert allocation.spread(["a", "b", "c"], ["r0", "r1"]) == {"a": "r0", "b": "r1", "c": "r0"}
    assert allocation.spread(["a"], []) == {}


# --- through the SDKs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica_server(database_url: str | None) -> Iterator[ShoalServer]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOAL_NODES_PER_REPLICA", str(PER_REPLICA))
        srv = ShoalServer(database_of_its_own(database_url)).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def world(replica_server: ShoalServer) -> dict[str, Any]:
    shoal = Shoal.from_env_json(replica_server.env)
    image = prepare_image(shoal)  # its version 1.0.0 has one replica in the region
    two = shoal.compute_client().gallery_image_versions.begin_create_or_update(
        image.group, "gal", "def", "2.0.0", GalleryImageVersion(
            location=LOCATION, publishing_profile=GalleryImageVersionPublishingProfile(
                target_regions=[TargetRegion(name=LOCATION, regional_replica_count=2)]),
            storage_profile=GalleryImageVersionStorageProfile(source=GalleryArtifactVersionFullSource(
                id=image.image_id)))).result()
    account = create_account(shoal, image.group)
    return {"shoal": shoal, "image": image, "two": two.id, "account": account,
            "client": shoal.batch_client(account.account_endpoint)}


def create_pool(world: dict[str, Any], pool_id: str, image_id: str, nodes: int, **kw: Any) -> None:
    world["client"].create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image_id), node_agent_sku_id=NODE_AGENT),
        **kw))


def steady_with_idle_nodes(client: Any, pool_id: str, nodes: int) -> Any:
    wait_for(lambda: client.get_pool(pool_id).allocation_state == "steady" and
             len([n for n in client.list_nodes(pool_id) if n.state == "idle"]) == nodes, f"{nodes} idle nodes")
    return client.get_pool(pool_id)


def replica_warnings(pool: Any) -> list[Any]:
    return [e for e in pool.resize_errors or [] if e.code == "InsufficientReplicas"]


def replicas_in_use(server: ShoalServer) -> Counter[str]:
    """How many running machines mount each replica (their records on the host name their lower layers)."""
    used: Counter[str] = Counter()
    for record in (server.state_dir / "store" / "machines").glob("*/machine.json"):
        for lower in json.loads(record.read_text())["spec"]["os_disk"]["lower"]:
            path = Path(lower)
            if path.name == "os" and path.parent.parent.parent.name == "replicas":
                used[path.parent.name] += 1
    return used


def provisioners(server: ShoalServer) -> int:
    """The server's resident provisioners (``shoal-machine serve`` children of the server process)."""
    assert server.proc is not None
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = parent_pid(entry.name)
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.proc.pid and len(args) > 1 and Path(args[0].decode()).name.startswith("shoal-machine") \
                and args[1] == b"serve":
            count += 1
    return count


def test_a_resize_beyond_one_replica_per_threshold_warns_but_reaches_its_target(world: dict[str, Any]) -> None:
    client, image = world["client"], world["image"]
    create_pool(world, "few-replicas", image.version_id, 3)  # 1 replica for 3 nodes: 2 are recommended
    pool = steady_with_idle_nodes(client, "few-replicas", 3)
    assert pool.current_dedicated_nodes == 3
    [warning] = replica_warnings(pool)
    assert "raise the version's regionalReplicaCount" in warning.message and "'westus' to 2" in warning.message
    assert {v.name: v.value for v in warning.error_values} == {
        "Region": LOCATION, "ReplicaCount": "1", "TargetNodes": "3", "RecommendedReplicaCount": "2"}
    # The management plane shows it in the resize operation's status, and the pool is steady, not failed.
    mgmt = world["shoal"].batch_mgmt_client()
    got = mgmt.pool.get(image.group, world["account"].name, "few-replicas")
    assert got.allocation_state == "Steady" and got.current_dedicated_nodes == 3
    [error] = got.resize_operation_status.errors
    assert error.code == "InsufficientReplicas"
    assert {d.code: d.message for d in error.details}["RecommendedReplicaCount"] == "2"
    # A resize within what one replica serves reports nothing.
    client.begin_resize_pool("few-replicas", bm.BatchPoolResizeOptions(target_dedicated_nodes=2),
                             polling_interval=1).result()
    pool = steady_with_idle_nodes(client, "few-replicas", 2)
    assert not pool.resize_errors
    client.begin_delete_pool("few-replicas", polling_interval=1).result()


def test_nodes_are_spread_over_the_replicas_and_see_the_image(world: dict[str, Any],
                                                              replica_server: ShoalServer) -> None:
    client = world["client"]
    before = replicas_in_use(replica_server)
    create_pool(world, "two-replicas", world["two"], 4, start_task=bm.BatchStartTask(
        command_line="/bin/sh -c '/opt/shoal-app/run ok; cat /datadisks/lun0/reference.txt'",
        wait_for_success=True, user_identity=bm.UserIdentity(auto_user=bm.AutoUserSpecification(
            elevation_level="admin"))))
    pool = steady_with_idle_nodes(client, "two-replicas", 4)
    assert not pool.resize_errors  # 2 replicas serve 4 nodes at 2 per replica
    used = replicas_in_use(replica_server) - before
    assert sorted(used.values()) == [2, 2] and {name.rsplit("-", 1)[1] for name in used} == {"0", "1"}
    for node in client.list_nodes("two-replicas"):
        out = b"".join(client.download_node_file("two-replicas", node.id, "startup/stdout.txt")).decode()
        assert "shoal-app-1.0 ok" in out and "reference-data" in out
    # Growing past what the replicas serve warns; the new node continues the round robin.
    client.begin_resize_pool("two-replicas", bm.BatchPoolResizeOptions(target_dedicated_nodes=5),
                             polling_interval=1).result()
    pool = steady_with_idle_nodes(client, "two-replicas", 5)
    assert [w.error_values[1].value for w in replica_warnings(pool)] == ["2"]
    assert sorted((replicas_in_use(replica_server) - before).values()) == [2, 3]
    client.begin_delete_pool("two-replicas", polling_interval=1).result()


def test_nodes_keep_their_replica_when_the_version_is_deleted(world: dict[str, Any],
                                                              replica_server: ShoalServer) -> None:
    shoal, image, client = world["shoal"], world["image"], world["client"]
    compute = shoal.compute_client()
    before = provisioners(replica_server)
    compute.gallery_image_versions.begin_create_or_update(image.group, "gal", "def", "3.0.0", GalleryImageVersion(
        location=LOCATION, publishing_profile=GalleryImageVersionPublishingProfile(
            target_regions=[TargetRegion(name=LOCATION, regional_replica_count=1)]),
        storage_profile=GalleryImageVersionStorageProfile(source=GalleryArtifactVersionFullSource(
            id=image.image_id)))).result()
    version = compute.gallery_image_versions.get(image.group, "gal", "def", "3.0.0")
    assert provisioners(replica_server) == before + 1  # a replica comes with its provisioner, ready
    create_pool(world, "orphaned", version.id, 1)
    steady_with_idle_nodes(client, "orphaned", 1)
    compute.gallery_image_versions.begin_delete(image.group, "gal", "def", "3.0.0").result()
    assert provisioners(replica_server) == before  # and goes with it; the node it built runs on
    # The node still sees the image's software and data disk: its replica is retired, not removed.
    job = "orphaned-job"
    client.create_job(bm.BatchJobCreateOptions(id=job, pool_info=bm.BatchPoolInfo(pool_id="orphaned")))
    client.create_task(job, bm.BatchTaskCreateOptions(
        id="uses-image", command_line="/bin/sh -c '/opt/shoal-app/run still; cat /datadisks/lun0/reference.txt'"))
    done = wait_for(lambda: (t := client.get_task(job, "uses-image")).state == "completed" and t, "task completes")
    out = b"".join(client.download_task_file(job, "uses-image", "stdout.txt")).decode()
    assert done.execution_info.exit_code == 0, out
    assert "shoal-app-1.0 still" in out and "reference-data" in out
    client.begin_delete_job(job, polling_interval=1).result()
    client.begin_delete_pool("orphaned", polling_interval=1).result()


def test_a_managed_image_pool_has_no_replicas_and_no_warning(world: dict[str, Any]) -> None:
    image: PreparedImage = world["image"]
    mgmt = world["shoal"].batch_mgmt_client()
    mgmt.pool.create(image.group, world["account"].name, "managed", Pool(
        vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
            virtual_machine_configuration=VirtualMachineConfiguration(
                image_reference=ImageReference(id=image.image_id), node_agent_sku_id=NODE_AGENT)),
        scale_settings=ScaleSettings(fixed_scale=FixedScaleSettings(target_dedicated_nodes=3))))
    pool = steady_with_idle_nodes(world["client"], "managed", 3)
    assert not pool.resize_errors
    assert not mgmt.pool.get(image.group, world["account"].name, "managed").resize_operation_status.errors
    world["client"].begin_delete_pool("managed", polling_interval=1).result()
