"""Crash safety of pool allocation: kill -9 during a 50-node resize, restart, the pool reaches its target and
no machine is leaked (the machines on the host are exactly the pool's nodes)."""

from __future__ import annotations

import time

from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image
from harness import ShoalServer
from shoal.azure import Shoal


def test_kill_during_resize_then_restart_reaches_target_without_leaks(own_server: ShoalServer) -> None:
    shoal = Shoal.from_env_json(own_server.env)
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="big", vm_size="standard_d2s_v3", target_dedicated_nodes=50,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    deadline = time.monotonic() + 30
    while not list(client.list_nodes("big")) and time.monotonic() < deadline:
        time.sleep(0.02)
    own_server.kill()
    own_server.start()
    shoal = Shoal.from_env_json(own_server.env)
    client = shoal.batch_client(account.account_endpoint)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pool = client.get_pool("big")
        if pool.allocation_state == "steady" and all(n.state == "idle" for n in client.list_nodes("big")):
            break
        time.sleep(0.5)
    pool = client.get_pool("big")
    assert pool.allocation_state == "steady" and pool.current_dedicated_nodes == 50
    nodes = list(client.list_nodes("big"))
    assert len(nodes) == 50 and {n.state for n in nodes} == {"idle"}
    listed = own_server.cli("machines", "list").stdout
    node_machines = [line for line in listed.splitlines() if "node-" in line]
    assert len(node_machines) == 50 and all("running" in line for line in node_machines), listed
