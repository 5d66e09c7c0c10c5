"""Deleting a Batch account or its resource group leaves nothing behind: no pools, nodes' machines, jobs or tasks
(a new account of the same name starts empty). This is what `shoal quickstart` relies on to clean up."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy
from azure.batch import models as bm
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, prepare_image, wait_for
from harness import ShoalServer
from shoal.azure import Shoal


def machines(server: ShoalServer) -> list[str]:
    out = server.cli("machines", "list").stdout
    return [word for line in out.splitlines() for word in line.replace("│", " ").split()
            if word.startswith(("node-", "vm-"))]


TABLES = ("pools", "nodes", "jobs", "tasks", "job_node_tasks", "resources")


def rows(server: ShoalServer) -> dict[str, int]:
    url = server.database_url or f"sqlite:///{server.state_dir / 'shoal.db'}"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
    finally:
        engine.dispose()


def test_deleting_a_resource_group_removes_its_pools_nodes_jobs_and_tasks(own_server: ShoalServer) -> None:
    shoal = Shoal.from_env_json(own_server.env)
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="p", vm_size="standard_d2s_v3", target_dedicated_nodes=2,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in client.list_nodes("p") if n.state == "idle"]) == 2, "2 idle nodes")
    client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="p"),
                                               job_preparation_task=bm.BatchJobPreparationTask(command_line="/bin/true")))
    client.create_tasks("j", [bm.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(3)])
    wait_for(lambda: client.get_job_task_counts("j").task_counts.completed == 3, "3 completed tasks")
    assert len([m for m in machines(own_server) if m.startswith("node-")]) == 2

    rm = shoal.resource_client()
    rm.resource_groups.begin_delete(image.group, polling_interval=1).result()
    assert not rm.resource_groups.check_existence(image.group)
    assert machines(own_server) == []   # the prep VM and both nodes
    assert rows(own_server) == dict.fromkeys(TABLES, 0)

    # The same names again: a new account has none of the old one's pools, jobs or tasks.
    rm.resource_groups.create_or_update(image.group, ResourceGroup(location=LOCATION))
    again = create_account(shoal, image.group, account.name)
    client = shoal.batch_client(again.account_endpoint)
    assert list(client.list_pools()) == [] and list(client.list_jobs()) == []


def test_deleting_an_account_removes_its_jobs_and_tasks(shoal: Shoal) -> None:
    group = f"acctdel-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="nopool")))
    client.create_task("j", bm.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    mgmt = shoal.batch_mgmt_client()
    mgmt.batch_account.begin_delete(group, account.name, polling_interval=1).result()
    with pytest.raises(ResourceNotFoundError):
        mgmt.batch_account.get(group, account.name)
    again = create_account(shoal, group, account.name)
    assert list(shoal.batch_client(again.account_endpoint).list_jobs()) == []
    shoal.resource_client().resource_groups.begin_delete(group, polling_interval=1).result()
