"""Node operations, node files, stop-resize, core quotas and user-subscription accounts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm
from azure.batch.models._models import (  # not exported by azure-batch 15.1
    BatchNodeDisableSchedulingOptions,
    BatchNodeReimageOptions,
)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from batch_fixtures import NODE_AGENT, PreparedImage, create_account, prepare_image, wait_for
from harness import ShoalServer, parent_pid
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def image(shoal: Shoal) -> PreparedImage:
    return prepare_image(shoal)


@pytest.fixture(scope="module")
def client(shoal: Shoal, image: PreparedImage) -> Any:
    account = create_account(shoal, image.group)
    return shoal.batch_client(account.account_endpoint)




def make_pool(client: Any, image: PreparedImage, pool_id: str, nodes: int, **kw: Any) -> None:
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size=kw.pop("vm_size", "standard_d2s_v3"), target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT), **kw))


def test_scheduling_reimage_and_node_files(server: ShoalServer, client: Any, image: PreparedImage) -> None:
    make_pool(client, image, "ops", 1, start_task=bm.BatchStartTask(
        command_line="/bin/sh -c 'echo started > $AZ_BATCH_NODE_SHARED_DIR/marker; echo out'",
        user_identity=bm.UserIdentity(auto_user=bm.AutoUserSpecification(elevation_level="admin"))))
    node = wait_for(lambda: next((n for n in client.list_nodes("ops") if n.state == "idle"), None), "idle")
    client.disable_node_scheduling("ops", node.id, BatchNodeDisableSchedulingOptions(
        node_disable_scheduling_option="requeue"))
    assert client.get_node("ops", node.id).scheduling_state == "disabled"
    assert client.get_node("ops", node.id).state == "offline"
    client.enable_node_scheduling("ops", node.id)
    assert client.get_node("ops", node.id).state == "idle"

    names = {f.name for f in client.list_node_files("ops", node.id, recursive=True)}
    assert {"shared/marker", "startup/stdout.txt", "startup/stderr.txt"} <= names
    client.get_node_file_properties("ops", node.id, "shared/marker")  # HEAD answers 200
    assert b"".join(client.download_node_file("ops", node.id, "shared/marker")) == b"started\n"
    with pytest.raises(HttpResponseError) as info:
        b"".join(client.download_node_file("ops", node.id, "../../../../etc/passwd"))
    assert info.value.status_code in (400, 404)
    client.delete_node_file("ops", node.id, "shared/marker")
    with pytest.raises(ResourceNotFoundError):
        b"".join(client.download_node_file("ops", node.id, "shared/marker"))

    client.begin_reimage_node("ops", node.id, BatchNodeReimageOptions(node_reimage_option="requeue"),
                              polling_interval=1).result()
    wait_for(lambda: client.get_node("ops", node.id).state == "idle", "reimaged node idle")
    # The start task ran again on the fresh node.
    assert b"".join(client.download_node_file("ops", node.id, "shared/marker")) == b"started\n"


def test_stop_resize_keeps_the_nodes_so_far(server: ShoalServer, client: Any, image: PreparedImage) -> None:
    server.cli("faults", "set", "--node-delay", "0.3")
    try:
        make_pool(client, image, "stopper", 30)
        wait_for(lambda: len(list(client.list_nodes("stopper"))) >= 2 and client.get_pool(
            "stopper").current_dedicated_nodes >= 2, "a few nodes")
        client.begin_stop_pool_resize("stopper", polling_interval=1).result()
    finally:
        server.cli("faults", "clear")
    pool = client.get_pool("stopper")
    assert pool.allocation_state == "steady"
    assert 0 < pool.current_dedicated_nodes < 30
    assert [e.code for e in pool.resize_errors] == ["ResizeStopped"]
    # A new resize continues from there.
    client.begin_resize_pool("stopper", bm.BatchPoolResizeOptions(target_dedicated_nodes=3), polling_interval=1
                             ).result()
    assert client.get_pool("stopper").current_dedicated_nodes == 3


def test_core_quota_limits_growth(server: ShoalServer, client: Any, image: PreparedImage) -> None:
    # 20000 dedicated cores by default: 166 nodes of 120 cores fit, 200 do not.
    make_pool(client, image, "huge", 200, vm_size="Standard_HB120rs_v3")
    pool = wait_for(lambda: (p := client.get_pool("huge")).allocation_state == "steady" and p, "steady")
    assert pool.current_dedicated_nodes == 166
    assert [e.code for e in pool.resize_errors] == ["AccountCoreQuotaReached"]
    client.begin_delete_pool("huge", polling_interval=1).result()


def test_user_subscription_accounts_refuse_shared_key(shoal: Shoal, image: PreparedImage) -> None:
    from azure.mgmt.batch.models import KeyVaultReference

    account = create_account(shoal, image.group, pool_allocation_mode="UserSubscription",
                             key_vault_reference=KeyVaultReference(
                                 id=f"/subscriptions/{shoal.subscription_id}/resourceGroups/{image.group}/providers/"
                                    "Microsoft.KeyVault/vaults/kv1", url="https://kv1.vault.azure.net/"))
    assert account.pool_allocation_mode == "UserSubscription"
    with pytest.raises(HttpResponseError) as info:
        shoal.batch_mgmt_client().batch_account.get_keys(image.group, account.name)
    assert info.value.status_code == 409
    # Entra ID works.
    assert list(shoal.batch_client(account.account_endpoint).list_pools()) == []


def test_resize_timeout_keeps_the_nodes_allocated_so_far(server: ShoalServer, client: Any,
                                                         image: PreparedImage) -> None:
    server.cli("faults", "set", "--node-delay", "0.5")
    try:
        make_pool(client, image, "slow", 20)
        wait_for(lambda: client.get_pool("slow").current_dedicated_nodes >= 2, "a few nodes")
        # 16 minutes later (the default resize timeout is 15): the resize ends with what it has.
        server.cli("faults", "set", "--node-delay", "0.5", "--clock-offset", str(16 * 60))
        pool = wait_for(lambda: (p := client.get_pool("slow")).allocation_state == "steady" and p, "timeout")
    finally:
        server.cli("faults", "clear")
    assert 2 <= pool.current_dedicated_nodes < 20
    assert [e.code for e in pool.resize_errors] == ["AllocationTimedOut"]
    kept = pool.current_dedicated_nodes
    client.begin_resize_pool("slow", bm.BatchPoolResizeOptions(target_dedicated_nodes=kept + 2),
                             polling_interval=1).result()
    assert client.get_pool("slow").current_dedicated_nodes == kept + 2


def test_failed_provisioning_makes_nodes_unusable(server: ShoalServer, client: Any, image: PreparedImage) -> None:
    server.cli("faults", "set", "--node-failure")
    try:
        make_pool(client, image, "broken", 2)
        nodes = wait_for(lambda: (ns := list(client.list_nodes("broken"))) and all(
            n.state == "unusable" for n in ns) and ns, "unusable nodes")
    finally:
        server.cli("faults", "clear")
    assert nodes[0].errors[0].code == "NodeProvisioningFailed"
    assert "fault injection" in nodes[0].errors[0].message


def make_host_pool(client: Any, pool_id: str, nodes: int) -> None:
    """A pool of the marketplace host image (no gallery replicas)."""
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest"),
            node_agent_sku_id=NODE_AGENT)))


def test_disabling_scheduling_requeues_terminates_or_waits_for_the_running_task(client: Any) -> None:
    make_host_pool(client, "sched", 2)
    wait_for(lambda: len([n for n in client.list_nodes("sched") if n.state == "idle"]) == 2, "two idle nodes")
    client.create_job(bm.BatchJobCreateOptions(id="sched", pool_info=bm.BatchPoolInfo(pool_id="sched")))
    for task_id in ("a", "b"):
        client.create_task("sched", bm.BatchTaskCreateOptions(id=task_id, command_line="/bin/sh -c 'sleep 300'"))
    running = wait_for(lambda: (ts := {t.id: t for t in client.list_tasks("sched")}) and
                       all(t.state == "running" for t in ts.values()) and ts, "both tasks run")
    node_a, node_b = running["a"].node_info.node_id, running["b"].node_info.node_id

    def disable(node: str, option: str) -> None:
        client.disable_node_scheduling("sched", node, BatchNodeDisableSchedulingOptions(
            node_disable_scheduling_option=option))

    disable(node_a, "requeue")  # the task goes back to the queue (not a retry); nothing runs on the node
    a = wait_for(lambda: (t := client.get_task("sched", "a")).state == "active" and t, "task a requeued")
    assert a.execution_info.requeue_count == 1 and a.execution_info.retry_count == 0
    node = client.get_node("sched", node_a)
    assert (node.state, node.scheduling_state, node.running_tasks_count) == ("offline", "disabled", 0)
    disable(node_b, "terminate")  # the task ends as failed
    b = wait_for(lambda: (t := client.get_task("sched", "b")).state == "completed" and t, "task b terminated")
    assert b.execution_info.result == "failure" and client.get_node("sched", node_b).state == "offline"
    client.enable_node_scheduling("sched", node_a)  # the requeued task runs again, there
    a = wait_for(lambda: (t := client.get_task("sched", "a")).state == "running" and t, "task a runs again")
    assert a.node_info.node_id == node_a
    disable(node_a, "taskcompletion")  # the node keeps running its task, and goes offline when it ends
    assert client.get_node("sched", node_a).state == "running"
    assert client.get_task("sched", "a").state == "running"
    client.terminate_task("sched", "a")
    wait_for(lambda: client.get_node("sched", node_a).state == "offline", "node a offline after its task")


def machine_inits(state_dir: Path) -> dict[str, int]:
    """machine id -> the host pid of its init, for machines of the server whose state is under `state_dir`."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"init" in args[1:2] and b"--id" in args and any(a.startswith(os.fsencode(state_dir)) for a in args):
            found[os.fsdecode(args[args.index(b"--id") + 1])] = int(entry.name)
    return found


def test_nodes_of_an_image_without_replicas_are_built_by_their_boot_streams_provisioners(
        server: ShoalServer, client: Any) -> None:
    """A marketplace (or managed) image's nodes boot in streams side by side; each stream's nodes are built by
    a resident provisioner of that stream (a message on a pipe), not by a helper launched for each node."""
    before = set(machine_inits(server.state_dir))
    make_host_pool(client, "streams", 3)
    wait_for(lambda: len([n for n in client.list_nodes("streams") if n.state == "idle"]) == 3, "three idle nodes")
    inits = {m: pid for m, pid in machine_inits(server.state_dir).items() if m not in before}
    assert len(inits) == 3
    parents = {parent_pid(pid) for pid in inits.values()}
    commands = [Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")[1] for ppid in parents]
    assert set(commands) == {b"serve"}
    # Three streams, each run by a thread of its own with the provisioner of that thread: the nodes were built
    # side by side (a thread that is done with its stream may take another's, so at least two).
    assert 2 <= len(parents) <= 3
    client.begin_delete_pool("streams", polling_interval=1).result()
