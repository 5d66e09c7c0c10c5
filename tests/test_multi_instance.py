"""Multi-instance tasks (multiInstanceSettings): the rules, and three nodes running one task through azure-batch
15 (coordination command on every node, application command on the primary, subtasksinfo)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from shoal.core import errors
from shoal.core.clock import ManualClock
from shoal.domain.batch import multi_instance
from shoal.domain.batch.assignment import FreeNodes
from shoal.store import models

HOST = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")


# --- the rules ---------------------------------------------------------------------------------------------------
def _spec(**mi: Any) -> dict[str, Any]:
    return {"commandLine": "x", "multiInstanceSettings": {"coordinationCommandLine": "c", **mi}}


def test_settings_are_checked_as_azure_does() -> None:
    multi_instance.validate(_spec(numberOfInstances=3))
    ordinary: dict[str, Any] = {"commandLine": "x", "multiInstanceSettings": None}
    multi_instance.validate(ordinary)
    assert "multiInstanceSettings" not in ordinary
    with pytest.raises(errors.AzureError) as no_command:
        multi_instance.validate({"multiInstanceSettings": {"numberOfInstances": 2}})
    assert no_command.value.code == "MissingRequiredProperty"
    for bad in (0, -1, "2", True):
        with pytest.raises(errors.AzureError) as exc:
            multi_instance.validate(_spec(numberOfInstances=bad))
        assert exc.value.code == "InvalidPropertyValue"
    with pytest.raises(errors.AzureError) as slots:
        multi_instance.validate({**_spec(numberOfInstances=2), "requiredSlots": 2})
    assert slots.value.values["PropertyName"] == "requiredSlots"
    assert multi_instance.instances({"multiInstanceSettings": {"coordinationCommandLine": "c"}}) == 1


def test_only_pools_with_inter_node_communication_and_one_slot_per_node_run_them() -> None:
    def pool(**spec: Any) -> models.Pool:
        return models.Pool(key="a/p", pool_id="p", spec=spec)
    assert multi_instance.pool_runs_it(pool(enableInterNodeCommunication=True))
    assert multi_instance.pool_runs_it(pool(enableInterNodeCommunication=True, taskSlotsPerNode=1))
    assert not multi_instance.pool_runs_it(pool())
    assert not multi_instance.pool_runs_it(pool(enableInterNodeCommunication=True, taskSlotsPerNode=2))


def test_the_environment_names_the_nodes_with_the_master_first() -> None:
    env = multi_instance.environment("/mnt/batch/tasks/workitems/j/job-1/t", ["10.0.0.4", "10.0.0.5"], False)
    assert env["AZ_BATCH_HOST_LIST"] == "10.0.0.4,10.0.0.5"
    assert env["AZ_BATCH_NODE_LIST"] == "10.0.0.4;10.0.0.5"
    assert env["AZ_BATCH_MASTER_NODE"] == "10.0.0.4:6000"
    assert env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "false"
    assert env["AZ_BATCH_TASK_SHARED_DIR"] == "/mnt/batch/tasks/workitems/j/job-1/t"


def _node(i: int, used: int) -> models.Node:
    return models.Node(key=f"a/p/n{i}", node_id=f"n{i}", running_slots=used, running_tasks=used, state="idle"
                       if not used else "running")


def test_a_multi_instance_task_takes_that_many_free_nodes_at_once_or_waits() -> None:
    pool = models.Pool(key="a/p", pool_id="p", spec={"taskSlotsPerNode": 1, "enableInterNodeCommunication": True})
    job, task = models.Job(key="a/j", spec={}), models.Task(key="a/j/t", job_key="a/j", spec=_spec(), slots=1)
    nodes = [_node(0, 1), _node(1, 0), _node(2, 0), _node(3, 0)]
    assert [n.node_id for n in FreeNodes(pool, nodes).pick_many(job, task, {}, 3) or []] == ["n1", "n2", "n3"]
    assert FreeNodes(pool, nodes).pick_many(job, task, {}, 4) is None


def test_the_end_of_an_attempt_completes_its_subtasks_and_frees_their_nodes() -> None:
    clock = ManualClock()
    nodes = {n.key: n for n in (_node(1, 1), _node(2, 1))}
    task = models.Task(key="a/j/t", spec=_spec(numberOfInstances=3))
    multi_instance.start_subtasks(task, [(k, {"nodeId": n.node_id}) for k, n in nodes.items()], clock)
    assert [s["state"] for s in multi_instance.render(task)] == ["running", "running"]
    assert multi_instance.node_keys(task) == list(nodes)

    class Session:
        def get(self, _model: Any, key: str) -> models.Node | None:
            return nodes.get(key)

    multi_instance.end_subtasks(Session(), task, {1: {"exitCode": 0}, 2: {"exitCode": 3}}, clock)
    subs = multi_instance.render(task)
    assert [(s["id"], s["state"], s.get("exitCode"), s["result"]) for s in subs] == [
        (1, "completed", 0, "success"), (2, "completed", 3, "failure")]
    assert "nodeKey" not in subs[0] and subs[0]["nodeInfo"] == {"nodeId": "n1"}
    assert all(n.running_slots == 0 and n.running_tasks == 0 and n.state == "idle" for n in nodes.values())
    assert multi_instance.node_keys(task) == []
    multi_instance.end_subtasks(Session(), task, None, clock)  # twice: nothing more is freed
    assert all(n.running_slots == 0 for n in nodes.values())


# --- through azure-batch -----------------------------------------------------------------------------------------
PORT = 7777
# Started in the background by the coordination command on every node: answers each connection with the node id.
SERVE = (
    "import socketserver as S,os\n"
    "class H(S.BaseRequestHandler):\n"
    "    def handle(self): self.request.sendall(os.environ['AZ_BATCH_NODE_ID'].encode())\n"
    f"S.TCPServer(('', {PORT}), H).serve_forever()\n")
COORDINATION = (
    "/bin/sh -c 'printf \"%s\" \"$SERVE\" > \"$AZ_BATCH_TASK_SHARED_DIR/serve.py\" && "
    "(python3 \"$AZ_BATCH_TASK_SHARED_DIR/serve.py\" >/dev/null 2>&1 &) && "
    "for i in $(seq 100); do python3 -c \"import socket; socket.create_connection((str(\\\"127.0.0.1\\\"), "
    f"{PORT}), 1)\" 2>/dev/null && echo ready $AZ_BATCH_NODE_ID && exit 0; sleep 0.1; done; exit 1'")
APPLICATION = (
    "/bin/sh -c 'python3 -c \"import os,socket; print(*[socket.create_connection((h, "
    f"{PORT}), 5).recv(100).decode() for h in os.environ[str(\\\"AZ_BATCH_HOST_LIST\\\")].split(chr(44))])\"; "
    "env | grep ^AZ_BATCH_ | sort'")


@pytest.fixture(scope="module")
def client(shoal: Any) -> Any:
    group = f"mi-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    batch = shoal.batch_client(create_account(shoal, group).account_endpoint)
    for pool_id, nodes, internode in (("mpi", 3, True), ("plain", 1, False)):
        batch.create_pool(bm.BatchPoolCreateOptions(
            id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes, task_slots_per_node=1,
            enable_inter_node_communication=internode, virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=HOST, node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in batch.list_nodes("mpi") if n.state == "idle"]) == 3, "3 idle nodes")
    wait_for(lambda: len([n for n in batch.list_nodes("plain") if n.state == "idle"]) == 1, "1 idle node")
    return batch


def _mi_task(task_id: str, count: int = 3, **kw: Any) -> bm.BatchTaskCreateOptions:
    return bm.BatchTaskCreateOptions(
        id=task_id, command_line=APPLICATION, environment_settings=[bm.EnvironmentSetting(name="SERVE", value=SERVE)],
        multi_instance_settings=bm.MultiInstanceSettings(number_of_instances=count,
                                                         coordination_command_line=COORDINATION), **kw)


def _job(client: Any, pool: str) -> str:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=pool)))
    return job_id


def test_three_nodes_run_one_task_whose_application_reaches_every_coordination_listener(client: Any) -> None:
    job = _job(client, "mpi")
    nodes = {n.id: n.ip_address for n in client.list_nodes("mpi")}
    # Twice, one after the other: the second only runs if the first gave its nodes back, and its listeners
    # can only bind the port if the first's background listeners were ended with it.
    client.create_task(job, _mi_task("mi1"))
    client.create_task(job, _mi_task("mi2"))
    for task_id in ("mi1", "mi2"):
        task = wait_for(lambda t=task_id: (x := client.get_task(job, t)).state == "completed" and x, task_id, 120)
        out = b"".join(client.download_task_file(job, task_id, "stdout.txt")).decode()
        err = b"".join(client.download_task_file(job, task_id, "stderr.txt")).decode()
        assert task.execution_info.exit_code == 0 and task.execution_info.result == "success", (out, err)
        lines = out.splitlines()
        primary = task.node_info.node_id
        ips = lines[0].split()  # the node ids the listeners answered with, in AZ_BATCH_HOST_LIST order
        assert sorted(ips) == sorted(nodes) and ips[0] == primary
        env = dict(line.split("=", 1) for line in lines[1:])
        assert env["AZ_BATCH_HOST_LIST"].split(",") == [nodes[i] for i in ips]
        assert env["AZ_BATCH_NODE_LIST"] == env["AZ_BATCH_HOST_LIST"].replace(",", ";")
        assert env["AZ_BATCH_MASTER_NODE"] == f"{nodes[primary]}:6000"
        assert env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "true"
        assert env["AZ_BATCH_TASK_SHARED_DIR"].endswith(f"/workitems/{job}/job-1/{task_id}")
        subtasks = list(client.list_subtasks(job, task_id))
        assert sorted(s.id for s in subtasks) == [1, 2]
        assert all(s.state == "completed" and s.exit_code == 0 and s.result == "success" for s in subtasks)
        assert {s.node_info.node_id for s in subtasks} | {primary} == set(nodes)
    coordination = b"".join(client.download_node_file("mpi", subtasks[0].node_info.node_id,
                                                 f"{subtasks[0].node_info.task_root_directory}/stdout.txt")).decode()
    assert coordination.strip() == f"ready {subtasks[0].node_info.node_id}"
    wait_for(lambda: all(n.state == "idle" and n.running_task_slots_count == 0 for n in client.list_nodes("mpi")),
             "the nodes free again", 30)
    assert list(client.list_subtasks(job, "mi1"))  # an ordinary task has none:
    client.create_task(job, bm.BatchTaskCreateOptions(id="plain", command_line="/bin/true"))
    assert list(client.list_subtasks(job, "plain")) == []


def test_a_failed_coordination_fails_the_task_and_bad_settings_are_refused(client: Any) -> None:
    job = _job(client, "mpi")
    client.create_task(job, bm.BatchTaskCreateOptions(
        id="coordfails", command_line="/bin/echo never", multi_instance_settings=bm.MultiInstanceSettings(
            number_of_instances=2, coordination_command_line="/bin/sh -c 'exit 3'")))
    task = wait_for(lambda: (x := client.get_task(job, "coordfails")).state == "completed" and x, "coordfails", 60)
    assert task.execution_info.exit_code == 3 and task.execution_info.result == "failure"
    with pytest.raises(HttpResponseError) as slots:
        client.create_task(job, bm.BatchTaskCreateOptions(
            id="slots", command_line="/bin/true", required_slots=2,
            multi_instance_settings=bm.MultiInstanceSettings(number_of_instances=2, coordination_command_line="x")))
    assert slots.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as zero:
        client.create_task(job, bm.BatchTaskCreateOptions(
            id="zero", command_line="/bin/true",
            multi_instance_settings=bm.MultiInstanceSettings(number_of_instances=0, coordination_command_line="x")))
    assert zero.value.error.code == "InvalidPropertyValue"


def test_without_inter_node_communication_or_enough_nodes_the_task_stays_active(client: Any) -> None:
    plain, mpi = _job(client, "plain"), _job(client, "mpi")
    client.create_task(plain, _mi_task("waits", count=1))
    client.create_task(mpi, _mi_task("toobig", count=4))
    client.create_task(plain, bm.BatchTaskCreateOptions(id="ordinary", command_line="/bin/true"))
    wait_for(lambda: client.get_task(plain, "ordinary").state == "completed", "the ordinary task", 60)
    time.sleep(2)
    assert client.get_task(plain, "waits").state == "active"
    assert client.get_task(mpi, "toobig").state == "active"
    assert list(client.list_subtasks(plain, "waits")) == []
