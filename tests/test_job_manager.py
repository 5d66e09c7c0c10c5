"""Job Manager tasks through azure-batch against a real server: made with the job (and with a job schedule's
jobs), listed as one of its tasks and run first; ``runExclusive`` gives it a whole node, ``allowLowPriorityNode``
false keeps it on a dedicated one; ``killJobOnCompletion`` terminates the job (``JMComplete``, its other tasks
ended) or, when false, leaves it running; bad Job Manager tasks are refused naming the property."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from shoal.azure import Shoal

HOST = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")


@pytest.fixture(scope="module")
def client(shoal: Shoal) -> Any:
    """A pool 'jm' of one dedicated and one low-priority node, two task slots each."""
    group = f"jm-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    batch = shoal.batch_client(create_account(shoal, group).account_endpoint)
    batch.create_pool(bm.BatchPoolCreateOptions(
        id="jm", vm_size="standard_d2s_v3", target_dedicated_nodes=1, target_low_priority_nodes=1,
        task_slots_per_node=2, virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=HOST, node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in batch.list_nodes("jm") if n.state == "idle"]) == 2, "two idle nodes")
    return batch


def _manager(command: str, **settings: Any) -> bm.BatchJobManagerTask:
    return bm.BatchJobManagerTask(id="manager", command_line=f"/bin/sh -c '{command}'", **settings)


def test_the_job_manager_runs_first_alone_on_a_dedicated_node_and_ends_its_job(client: Any) -> None:
    job = f"jm-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(
        id=job, pool_info=bm.BatchPoolInfo(pool_id="jm"),
        job_manager_task=_manager("sleep 3; echo managed", allow_low_priority_node=False)))
    # Added after the manager: while it holds the dedicated node, they share the low-priority one; "long" is
    # still running when the manager completes, and is ended with the job.
    for task_id, command in (("quick", "echo quick"), ("long", "sleep 120")):
        client.create_task(job, bm.BatchTaskCreateOptions(id=task_id, command_line=f"/bin/sh -c '{command}'"))
    listed = [t.id for t in client.list_tasks(job)]
    assert listed[0] == "manager" and set(listed) == {"manager", "quick", "long"}, listed
    done = wait_for(lambda: (j := client.get_job(job)).state == "completed" and j, "the job completes", 180)
    assert done.execution_info.termination_reason == "JMComplete"
    manager, quick, long = (client.get_task(job, t) for t in ("manager", "quick", "long"))
    assert manager.execution_info.exit_code == 0 and manager.execution_info.result == "success"
    out = b"".join(client.download_task_file(job, "manager", "stdout.txt")).decode()
    assert out.strip() == "managed"
    dedicated = next(n.id for n in client.list_nodes("jm") if n.is_dedicated)
    assert manager.node_info.node_id == dedicated
    assert quick.node_info.node_id != dedicated  # runExclusive: nothing else on the manager's node meanwhile
    assert long.state == "completed" and long.execution_info.result == "failure"


def test_a_manager_that_does_not_kill_its_job_and_a_schedules_manager(client: Any) -> None:
    job = f"jm-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(
        id=job, pool_info=bm.BatchPoolInfo(pool_id="jm"),
        job_manager_task=_manager("exit 3", kill_job_on_completion=False, run_exclusive=False)))
    manager = wait_for(lambda: (t := client.get_task(job, "manager")).state == "completed" and t, "the manager")
    assert manager.execution_info.exit_code == 3
    assert client.get_job(job).state == "active"
    # A job schedule's jobs get the manager of their specification.
    schedule = f"jms-{uuid.uuid4().hex[:6]}"
    client.create_job_schedule(bm.BatchJobScheduleCreateOptions(
        id=schedule, schedule=bm.BatchJobScheduleConfiguration(),
        job_specification=bm.BatchJobSpecification(pool_info=bm.BatchPoolInfo(pool_id="jm"),
                                                   job_manager_task=_manager("echo from the schedule"))))
    made = wait_for(lambda: (s := client.get_job_schedule(schedule)).execution_info.recent_job and
                    s.execution_info.recent_job.id, "the schedule's job")
    wait_for(lambda: client.get_job(made).state == "completed", "the schedule's job completes", 120)
    assert client.get_job(made).execution_info.termination_reason == "JMComplete"
    assert [t.id for t in client.list_tasks(made)] == ["manager"]


def test_bad_job_managers_are_refused_by_name(client: Any) -> None:
    with_token = _manager("true")
    with_token["authenticationTokenSettings"] = {"access": ["job"]}  # (no model for it in azure-batch 15)
    for manager, name in ((bm.BatchJobManagerTask(id="m", command_line=""), "jobManagerTask.commandLine"),
                          (with_token, "jobManagerTask.authenticationTokenSettings")):
        with pytest.raises(HttpResponseError) as exc:
            client.create_job(bm.BatchJobCreateOptions(id=f"bad-{uuid.uuid4().hex[:6]}",
                                                       pool_info=bm.BatchPoolInfo(pool_id="jm"),
                                                       job_manager_task=manager))
        assert exc.value.status_code == 400 and name in str(exc.value), (name, exc.value)


def test_a_pool_ordering_jobs_by_creation_runs_the_older_jobs_tasks_first(client: Any) -> None:
    client.create_pool(bm.BatchPoolCreateOptions(
        id="fifo", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        task_scheduling_policy=bm.BatchTaskSchedulingPolicy(node_fill_type="spread", job_default_order="creationtime"),
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST,
                                                                     node_agent_sku_id=NODE_AGENT)))
    assert client.get_pool("fifo").task_scheduling_policy.job_default_order == "creationtime"
    older, newer = (f"fifo-{uuid.uuid4().hex[:6]}" for _ in range(2))
    for job in (older, newer):  # equal priority; the older job is created first...
        client.create_job(bm.BatchJobCreateOptions(id=job, pool_info=bm.BatchPoolInfo(pool_id="fifo")))
    for job in (newer, older):  # ...but gets its tasks last, while the pool has no node yet
        client.create_tasks(job, [bm.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(3)])
    client.begin_resize_pool("fifo", bm.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1).result()
    wait_for(lambda: all(t.state == "completed" for j in (older, newer) for t in client.list_tasks(j)), "the tasks",
             120)
    starts = {j: [t.execution_info.start_time for t in client.list_tasks(j)] for j in (older, newer)}
    assert max(starts[older]) <= min(starts[newer]), starts  # one slot: the older job's tasks all ran first
