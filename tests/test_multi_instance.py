"""Multi-instance tasks (multiInstanceSettings): the rules, and three nodes running one task through azure-batch
15 (coordination command on every node, application command on the primary, subtasksinfo)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from harness import scratch_database
from shoal.core import errors
from shoal.core.clock import ManualClock
from shoal.domain.batch import assignment, deallocation, multi_instance, pool_nodes
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import tasks as task_rules
from shoal.domain.batch.assignment import FreeNodes
from shoal.reconcilers.tasks.attempts import Attempts
from shoal.store import models
from shoal.store.db import Database

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


@pytest.fixture
def db(database_url: str | None) -> Iterator[Database]:
    with scratch_database(database_url) as database:
        yield database


def _running_multi_task(db: Database, clock: ManualClock) -> list[str]:
    """A 3-instance task running on a pool's 3 nodes (primary on the first): the nodes' keys."""
    now = clock.now()
    with db.write() as s:
        pool = models.Pool(key="acct/p", account_key="acct", pool_id="p", spec={"enableInterNodeCommunication": True},
                           content={}, state="active", state_transition_time=now, allocation_state="steady",
                           target_dedicated=3, allocation_state_transition_time=now, resize_errors=[], autoscale={},
                           etag="e", created_at=now, last_modified=now)
        s.add(pool)
        keys = [n.key for n in pool_nodes.add(s, clock, pool, 0, 3, [], ("127.0.0.1", "localhost"),
                                               "10.64.0.0/14", own_network=False)]
        job = models.Job(key="acct/j", account_key="acct", job_id="j", pool_id="p", state_transition_time=now,
                         etag="e", created_at=now, last_modified=now)
        s.add(job)
        task = task_rules.new_task(job, clock, {"id": "t"}, _spec(numberOfInstances=3), 1)
        s.add(task)
    with db.write() as s:
        nodes = [s.get(models.Node, k) for k in keys]
        for node in nodes:
            node.state = "idle"
        task = s.get(models.Task, "acct/j/t")
        assignment.assign(task, nodes[0], "attempt-1", clock)
        for node in nodes[1:]:
            multi_instance.take_node(node, clock)
        multi_instance.start_subtasks(task, [(n.key, {"nodeId": n.node_id}) for n in nodes[1:]], clock)
    return keys


def _slots(db: Database, keys: list[str]) -> list[tuple[str, int, int]]:
    with db.read() as s:
        return [(n.state, n.running_slots, n.running_tasks) for n in (s.get(models.Node, k) for k in keys)]


@pytest.mark.parametrize("lost", [0, 2], ids=["primary", "subtask"])
def test_losing_any_node_of_a_multi_instance_task_requeues_it_whole_and_frees_every_node(
        db: Database, lost: int) -> None:
    clock = ManualClock()
    keys = _running_multi_task(db, clock)
    assert _slots(db, keys) == [("running", 1, 1)] * 3
    with db.write() as s:  # as an eviction does (a removal, a reboot or a lost host's fence likewise)
        node_rules.set_state(s.get(models.Node, keys[lost]), clock, "preempted")
        assert deallocation.release_tasks(s, clock, [keys[lost]], "requeue") == [keys[lost]]
    with db.read() as s:
        task = s.get(models.Task, "acct/j/t")
        assert (task.state, task.attempt, task.node_key) == ("active", None, None)
        assert task.execution_info["requeueCount"] == 1 and task.execution_info["retryCount"] == 0
        assert all(sub["state"] == "completed" for sub in multi_instance.render(task))
    freed = [("preempted" if i == lost else "idle", 0, 0) for i in range(3)]
    assert _slots(db, keys) == freed
    with db.write() as s:  # nothing left to release: the nodes' counts stay as they are
        assert deallocation.release_tasks(s, clock, keys, "requeue") == keys
    assert _slots(db, keys) == freed


def test_a_subtask_node_that_waits_for_task_completion_keeps_the_task_running(db: Database) -> None:
    clock = ManualClock()
    keys = _running_multi_task(db, clock)
    with db.write() as s:
        assert deallocation.release_tasks(s, clock, [keys[1]], "taskcompletion") == []
        node_rules.set_state(s.get(models.Node, keys[1]), clock, "leavingpool")
        assert deallocation.release_tasks(s, clock, [keys[1]], "terminate") == [keys[1]]
    with db.read() as s:
        task = s.get(models.Task, "acct/j/t")
        assert (task.state, task.execution_info["result"]) == ("completed", "failure")
        assert task.execution_info["requeueCount"] == 0
    assert _slots(db, keys) == [("idle", 0, 0), ("leavingpool", 0, 0), ("idle", 0, 0)]


def test_deleting_a_running_multi_instance_task_frees_all_its_nodes(db: Database) -> None:
    clock = ManualClock()
    keys = _running_multi_task(db, clock)
    with db.write() as s:
        task_rules.delete(s, s.get(models.Task, "acct/j/t"), clock)
    assert _slots(db, keys) == [("idle", 0, 0)] * 3


class _KillLog:
    def __init__(self) -> None:
        self.killed: list[int] = []

    def kill(self, pid: int) -> None:
        self.killed.append(pid)


def test_a_run_killed_between_two_commands_kills_the_next_one_and_spares_a_newer_attempt() -> None:
    agent = _KillLog()
    attempts = Attempts(agent, 1)  # type: ignore[arg-type]
    ended, previous, _ = attempts.begin_run("t", "a1")
    assert previous is None
    attempts.kill("t")  # downloading files: nothing to kill yet
    attempts.started_extra("t", "a1", 11)  # its coordination command starts: killed at once
    assert agent.killed == [11]
    attempts.ended_extra("t")
    # Requeued: a new attempt's run starts while the old one still ends; only the old one's commands die.
    _, previous, previous_ended = attempts.begin_run("t", "a2")
    assert (previous, previous_ended) == ("a1", ended)
    attempts.doom("t", "a1")
    attempts.started("t", "a1", 12)
    attempts.end_run("t", "a1", ended)
    attempts.started("t", "a2", 13)
    assert agent.killed == [11, 12] and ended.is_set()
    attempts.doom("t", "gone")  # an attempt that is not running: nothing to remember
    assert attempts.running() == {"t": "a2"}
    attempts.waiters.shutdown()


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
def account(shoal: Any) -> Any:
    group = f"mi-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    return create_account(shoal, group)


@pytest.fixture(scope="module")
def client(shoal: Any, account: Any) -> Any:
    batch = shoal.batch_client(account.account_endpoint)
    # "mpi" is a Spot pool (it runs as a dedicated one would, and can be evicted: the last test does).
    for pool_id, spot, internode in (("mpi", 3, True), ("plain", 0, False)):
        batch.create_pool(bm.BatchPoolCreateOptions(
            id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1 - min(spot, 1),
            target_low_priority_nodes=spot, task_slots_per_node=1, enable_inter_node_communication=internode,
            virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST,
                                                                         node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in batch.list_nodes("mpi") if n.state == "idle"]) == 3, "3 idle nodes")
    wait_for(lambda: len([n for n in batch.list_nodes("plain") if n.state == "idle"]) == 1, "1 idle node")
    return batch


def _mi_task(task_id: str, count: int = 3, command: str = APPLICATION, coordination: str = COORDINATION,
             **kw: Any) -> bm.BatchTaskCreateOptions:
    return bm.BatchTaskCreateOptions(
        id=task_id, command_line=command, environment_settings=[bm.EnvironmentSetting(name="SERVE", value=SERVE)],
        multi_instance_settings=bm.MultiInstanceSettings(number_of_instances=count,
                                                         coordination_command_line=coordination), **kw)


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


def _running_with_subtasks(client: Any, job: str, task_id: str, count: int) -> None:
    wait_for(lambda: client.get_task(job, task_id).state == "running" and len(
        [s for s in client.list_subtasks(job, task_id) if s.state == "running"]) == count - 1,
             f"{task_id} running on {count} nodes", 60)


def _nodes_free(client: Any) -> None:
    wait_for(lambda: all(n.state == "idle" and n.running_task_slots_count == 0 and n.running_tasks_count == 0
                         for n in client.list_nodes("mpi")), "every node of the pool free again", 60)


def test_deleting_or_terminating_a_running_multi_instance_task_or_its_job_frees_all_its_nodes(client: Any) -> None:
    jobs = [_job(client, "mpi") for _ in range(3)]
    hold = {"command": "/bin/sleep 300", "coordination": "/bin/sh -c 'sleep 300 & exit 0'"}
    ends = {"delete the task": lambda job: client.delete_task(job, "held"),
            "terminate the task": lambda job: client.terminate_task(job, "held"),
            # (with a body: the SDK cannot send this request without one)
            "terminate the job": lambda job: client.begin_terminate_job(
                job, options={"terminateReason": "UserTerminate"}, polling_interval=1).result(),
            "delete the job": lambda job: client.begin_delete_job(job, polling_interval=1).result()}
    for (how, end), job in zip(ends.items(), [jobs[0], *jobs], strict=True):
        count = 2 if how == "delete the task" else 3
        client.create_task(job, _mi_task("held", count, **hold))
        _running_with_subtasks(client, job, "held", count)
        end(job)
        _nodes_free(client)
        if how.startswith("terminate"):
            task = client.get_task(job, "held")
            assert (task.state, task.execution_info.result) == ("completed", "failure"), how
    # Nothing of theirs holds the nodes any more: a task on all three runs (its listeners bind their port).
    job = _job(client, "mpi")
    client.create_task(job, _mi_task("after"))
    task = wait_for(lambda: (x := client.get_task(job, "after")).state == "completed" and x, "after", 60)
    assert task.execution_info.exit_code == 0


# Coordination: on a node that ran this task's coordination before (a marker in its task directory, which a new
# attempt keeps), tell the application it runs again. The application: hold the nodes the first time, not again.
AGAIN = ("/bin/sh -c 'cd \"$AZ_BATCH_TASK_SHARED_DIR\" && if [ -e marker ]; then touch again; fi; touch marker'")
HOLD_ONCE = "/bin/sh -c 'if [ -e \"$AZ_BATCH_TASK_SHARED_DIR/again\" ]; then echo again; else sleep 300; fi'"


def test_evicting_a_node_of_a_running_multi_instance_task_requeues_it_onto_a_fresh_set_of_nodes(
        server: Any, client: Any, account: Any) -> None:
    job = _job(client, "mpi")
    client.create_task(job, _mi_task("evicted", 3, command=HOLD_ONCE, coordination=AGAIN))
    _running_with_subtasks(client, job, "evicted", 3)
    wait_for(lambda: "marker" in {f.name for f in client.list_task_files(job, "evicted", recursive=True)},
             "the first coordination", 60)
    first = {client.get_task(job, "evicted").node_info.node_id} | {
        s.node_info.node_id for s in client.list_subtasks(job, "evicted")}
    out = server.cli("faults", "evict", "--pool", "mpi", "--account", account.name,
                     "--count", "1").stdout
    evicted = out.split(":")[-1].strip().rstrip(".")
    assert evicted in first, out
    task = wait_for(lambda: (x := client.get_task(job, "evicted")).state == "completed" and x, "the requeued task",
                    120)
    assert (task.execution_info.exit_code, task.execution_info.requeue_count, task.execution_info.retry_count) == (
        0, 1, 0)
    assert b"".join(client.download_task_file(job, "evicted", "stdout.txt")).decode().strip() == "again"
    subtasks = list(client.list_subtasks(job, "evicted"))
    assert all(s.state == "completed" and s.exit_code == 0 for s in subtasks)
    # The second attempt ran on every node again, the evicted one back from preemption among them.
    assert {task.node_info.node_id} | {s.node_info.node_id for s in subtasks} == first
    _nodes_free(client)
