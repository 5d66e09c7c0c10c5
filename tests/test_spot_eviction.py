"""Spot / low-priority eviction rehearsed as Azure does it (``shoal faults evict``), through azure-batch: evicted
nodes go ``preempted`` with their running tasks requeued (``requeueCount``, never ``retryCount``), stay listed
until capacity returns, then come back through ``starting`` to ``idle``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image, wait_for
from harness import ShoalServer, database_of_its_own
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def server(database_url: str | None) -> Iterator[ShoalServer]:
    srv = ShoalServer(database_of_its_own(database_url)).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def client(server: ShoalServer) -> Any:
    shoal = Shoal.from_env_json(server.env)
    image = prepare_image(shoal)
    batch = shoal.batch_client(create_account(shoal, image.group).account_endpoint)
    batch.create_pool(bm.BatchPoolCreateOptions(
        id="spot", vm_size="Standard_DS1_v2", target_dedicated_nodes=0, target_low_priority_nodes=4,
        task_slots_per_node=2, virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in batch.list_nodes("spot") if n.state == "idle"]) == 4, "4 idle Spot nodes")
    return batch


def counts(client: Any) -> Any:
    return {c.pool_id: c for c in client.list_pool_node_counts()}["spot"].low_priority


def test_evicting_two_of_four_spot_nodes_requeues_their_tasks_and_the_pool_recovers(
        server: ShoalServer, client: Any) -> None:
    server.cli("faults", "set", "--spot-recovery-seconds", "4")
    job = f"job-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(id=job, pool_info=bm.BatchPoolInfo(pool_id="spot")))
    for i in range(8):
        client.create_task(job, bm.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sh -c 'sleep 8; echo done'",
                                                          constraints=bm.BatchTaskConstraints(max_task_retry_count=0)))
    wait_for(lambda: len([t for t in client.list_tasks(job) if t.state == "running"]) == 8, "8 running tasks")
    out = server.cli("faults", "evict", "--pool", "spot", "--count", "2").stdout
    assert "Evicted 2 node(s)" in out, out

    preempted = wait_for(lambda: (ns := [n for n in client.list_nodes("spot") if n.state == "preempted"])
                         and len(ns) == 2 and ns, "2 preempted nodes", 30)
    low = counts(client)
    assert (low.preempted, low.total) == (2, 4)
    pool = client.get_pool("spot")
    assert pool.current_low_priority_nodes == 4 and pool.current_dedicated_nodes == 0  # still listed
    evicted_nodes = {n.id for n in preempted}

    # Capacity returns: the nodes start again and the pool is back to 4 idle nodes; every task completes.
    wait_for(lambda: all(t.state == "completed" for t in client.list_tasks(job)), "every task completed", 180)
    wait_for(lambda: [n.state for n in client.list_nodes("spot")].count("idle") == 4, "4 idle nodes again", 120)
    tasks = list(client.list_tasks(job))
    assert all(t.execution_info.exit_code == 0 and t.execution_info.result == "success" for t in tasks)
    requeued = [t for t in tasks if t.execution_info.requeue_count]
    assert len(requeued) == 4  # the 2 tasks of each of the 2 evicted nodes
    assert all(t.execution_info.retry_count == 0 for t in tasks)
    assert all(n.state == "idle" for n in client.list_nodes("spot") if n.id in evicted_nodes)
    low = counts(client)
    assert (low.preempted, low.idle, low.total) == (0, 4, 4)
    server.cli("faults", "clear")


def test_a_random_eviction_rate_evicts_spot_nodes_until_cleared(server: ShoalServer, client: Any) -> None:
    server.cli("faults", "set", "--spot-recovery-seconds", "2", "--eviction-rate", "SPOT=120")
    try:
        wait_for(lambda: any(n.state == "preempted" for n in client.list_nodes("spot")), "a random eviction", 60)
    finally:
        server.cli("faults", "clear")
    wait_for(lambda: [n.state for n in client.list_nodes("spot")].count("idle") == 4, "4 idle nodes again", 120)


def test_dedicated_nodes_are_never_evicted(server: ShoalServer, client: Any) -> None:
    out = server.cli("faults", "evict", "--pool", "nosuchpool", "--count", "1", check=False)
    assert out.returncode == 1 and "No pool" in out.stdout
    client.begin_resize_pool("spot", bm.BatchPoolResizeOptions(target_dedicated_nodes=1, target_low_priority_nodes=0),
                             polling_interval=1).result()
    wait_for(lambda: (p := client.get_pool("spot")).allocation_state == "steady"
             and p.current_low_priority_nodes == 0 and p.current_dedicated_nodes == 1, "a dedicated node only", 120)
    out = server.cli("faults", "evict", "--pool", "spot", "--fraction", "1").stdout
    assert "Evicted 0 node(s)" in out, out
    assert all(n.state != "preempted" for n in client.list_nodes("spot"))
