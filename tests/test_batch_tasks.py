"""Jobs and tasks through azure-batch 15: many tasks, environment, files, failures, retries, dependencies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from batch_fixtures import NODE_AGENT, PreparedImage, create_account, prepare_image
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def env(shoal: Shoal) -> tuple[Any, PreparedImage]:
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="work", vm_size="standard_d2s_v3", target_dedicated_nodes=4, task_slots_per_node=4,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in client.list_nodes("work") if n.state == "idle"]) == 4, "idle nodes")
    return client, image


def wait_for(fn: Callable[[], Any], what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def new_job(client: Any, **kw: Any) -> str:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id="work"), **kw))
    return job_id


def all_done(client: Any, job_id: str) -> bool:
    counts = client.get_job_task_counts(job_id).task_counts
    return counts.active == 0 and counts.running == 0


def test_a_thousand_tasks_see_their_environment_and_the_image(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client, common_environment_settings=[bm.EnvironmentSetting(name="FROM_JOB", value="j")])
    tasks = [bm.BatchTaskCreateOptions(
        id=f"t{i}", command_line="/bin/sh -c 'echo $AZ_BATCH_TASK_ID $AZ_BATCH_JOB_ID $FROM_JOB $MINE; "
                                  "/opt/shoal-app/run; cat /datadisks/lun0/reference.txt; pwd'",
        environment_settings=[bm.EnvironmentSetting(name="MINE", value=str(i))]) for i in range(1000)]
    result = client.create_tasks(job_id, tasks)
    assert len([r for r in result.result_values if r.status == "success"]) == 1000
    wait_for(lambda: all_done(client, job_id), "1000 tasks")
    counts = client.get_job_task_counts(job_id).task_counts
    assert counts.succeeded == 1000 and counts.failed == 0
    for i in (0, 499, 999):
        task = client.get_task(job_id, f"t{i}")
        assert task.state == "completed" and task.execution_info.exit_code == 0
        assert task.execution_info.result == "success"
        out = b"".join(client.download_task_file(job_id, f"t{i}", "stdout.txt")).decode()
        assert f"t{i} {job_id} j {i}" in out
        assert "shoal-app-1.0" in out and "reference-data" in out
        assert f"/workitems/{job_id}/job-1/t{i}/wd" in out


def test_failures_retries_and_wall_clock(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client)
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="fails", command_line="/bin/sh -c 'echo nope >&2; exit 3'",
        constraints=bm.BatchTaskConstraints(max_task_retry_count=2)))
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="slow", command_line="sleep 60", constraints=bm.BatchTaskConstraints(
            max_wall_clock_time=timedelta(seconds=2))))
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="missing", command_line="/no/such/program"))
    wait_for(lambda: all_done(client, job_id), "tasks")
    fails = client.get_task(job_id, "fails")
    assert fails.execution_info.exit_code == 3 and fails.execution_info.retry_count == 2
    assert fails.execution_info.failure_info.category == "usererror"
    assert b"nope" in b"".join(client.download_task_file(job_id, "fails", "stderr.txt"))
    slow = client.get_task(job_id, "slow")
    assert slow.execution_info.failure_info.code == "MaxWallClockTimeExpiry"
    assert client.get_task(job_id, "missing").execution_info.exit_code == 127
    with pytest.raises(ResourceExistsError) as info:
        client.create_task(job_id, bm.BatchTaskCreateOptions(id="fails", command_line="true"))
    assert info.value.error.code == "TaskExists"
    client.reactivate_task(job_id, "fails")
    assert client.get_task(job_id, "fails").state in ("active", "preparing", "running", "completed")


def test_dependencies_and_terminate_job_when_all_complete(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client, uses_task_dependencies=True, all_tasks_complete_mode="terminatejob")
    client.create_tasks(job_id, [
        bm.BatchTaskCreateOptions(id="1", command_line="/bin/sh -c 'sleep 1; date +%s%N > /tmp/x; echo first'"),
        bm.BatchTaskCreateOptions(id="2", command_line="/bin/sh -c 'echo second'"),
        bm.BatchTaskCreateOptions(id="after", command_line="/bin/sh -c 'echo after'",
                                  depends_on=bm.BatchTaskDependencies(task_ids=["1"], task_id_ranges=[
                                      bm.BatchTaskIdRange(start=1, end=2)]))])
    job = wait_for(lambda: (j := client.get_job(job_id)).state == "completed" and j, "job completed")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    first, after = client.get_task(job_id, "1"), client.get_task(job_id, "after")
    assert after.execution_info.start_time >= first.execution_info.end_time


def test_bad_task_requests(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    with pytest.raises(ResourceNotFoundError) as info:
        client.create_task("no-such-job", bm.BatchTaskCreateOptions(id="x", command_line="true"))
    assert info.value.error.code == "JobNotFound"
    job_id = new_job(client)
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job_id, bm.BatchTaskCreateOptions(
            id="dep", command_line="true", depends_on=bm.BatchTaskDependencies(task_ids=["x"])))
    assert info.value.error.code == "TaskDependenciesNotSpecifiedOnJob"


def test_removing_a_busy_node_requeues_its_task(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client)
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="long", command_line="/bin/sh -c 'echo $AZ_BATCH_NODE_ID; sleep 3'"))
    first = wait_for(lambda: (t := client.get_task(job_id, "long")).state == "running" and t, "running")
    wait_for(lambda: client.get_pool("work").allocation_state == "steady", "steady pool")
    client.begin_remove_nodes("work", bm.BatchNodeRemoveOptions(node_ids=[first.node_info.node_id],
                                                                node_deallocation_option="requeue"),
                              polling_interval=1).result()
    done = wait_for(lambda: (t := client.get_task(job_id, "long")).state == "completed" and t, "rerun")
    assert done.execution_info.requeue_count == 1 and done.execution_info.exit_code == 0
    assert done.node_info.node_id != first.node_info.node_id
    # Put the pool back to four nodes for the other tests.
    client.begin_resize_pool("work", bm.BatchPoolResizeOptions(target_dedicated_nodes=4), polling_interval=1).result()


def test_exit_conditions_drive_dependents_and_the_job(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client, uses_task_dependencies=True, task_failure_mode="performexitoptionsjobaction")
    tolerated = bm.ExitConditions(exit_codes=[bm.ExitCodeMapping(code=3, exit_options=bm.ExitOptions(
        dependency_action="satisfy", job_action="none"))])
    blocking = bm.ExitConditions(exit_code_ranges=[bm.ExitCodeRangeMapping(start=4, end=9, exit_options=bm.ExitOptions(
        dependency_action="block", job_action="none"))])
    client.create_tasks(job_id, [
        bm.BatchTaskCreateOptions(id="tolerated", command_line="/bin/sh -c 'exit 3'", exit_conditions=tolerated),
        bm.BatchTaskCreateOptions(id="blocking", command_line="/bin/sh -c 'exit 5'", exit_conditions=blocking),
        bm.BatchTaskCreateOptions(id="runs", command_line="/bin/echo ran",
                                  depends_on=bm.BatchTaskDependencies(task_ids=["tolerated"])),
        bm.BatchTaskCreateOptions(id="waits", command_line="/bin/echo never",
                                  depends_on=bm.BatchTaskDependencies(task_ids=["blocking"]))])
    wait_for(lambda: client.get_task(job_id, "runs").state == "completed", "dependent of a tolerated failure")
    assert client.get_task(job_id, "tolerated").execution_info.failure_info.code == "FailureExitCode"
    assert client.get_task(job_id, "blocking").state == "completed"
    assert client.get_task(job_id, "waits").state == "active"  # blocked for good
    assert client.get_job(job_id).state == "active"  # jobAction none everywhere so far
    # Without exit conditions a failure terminates a job that performs exit-option job actions.
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="fatal", command_line="/bin/sh -c 'exit 1'"))
    job = wait_for(lambda: (j := client.get_job(job_id)).state == "completed" and j, "job terminated")
    assert job.execution_info.termination_reason == "TaskFailed"
    assert client.get_task(job_id, "waits").state == "completed"


def test_job_actions_need_a_job_that_performs_them(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client)
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job_id, bm.BatchTaskCreateOptions(
            id="t", command_line="true", exit_conditions=bm.ExitConditions(
                default=bm.ExitOptions(job_action="terminate"))))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job_id, bm.BatchTaskCreateOptions(
            id="t", command_line="true", exit_conditions=bm.ExitConditions(
                default=bm.ExitOptions(dependency_action="maybe"))))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"


def test_a_job_action_can_disable_the_job(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client, task_failure_mode="performexitoptionsjobaction")
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="t", command_line="/bin/sh -c 'exit 2'", exit_conditions=bm.ExitConditions(
            default=bm.ExitOptions(job_action="disable"))))
    wait_for(lambda: client.get_job(job_id).state == "disabled", "job disabled by the task's exit options")
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="later", command_line="true"))
    time.sleep(1)
    assert client.get_task(job_id, "later").state == "active"  # a disabled job schedules nothing
    client.begin_enable_job(job_id, polling_interval=1).result()
    wait_for(lambda: client.get_task(job_id, "later").state == "completed", "task after enable")


def test_affinity_prefers_the_named_node(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client)
    nodes = sorted(n.id for n in client.list_nodes("work"))
    target = client.get_node("work", nodes[-1])
    client.create_tasks(job_id, [bm.BatchTaskCreateOptions(
        id=f"a{i}", command_line="/bin/true", affinity_info=bm.BatchAffinityInfo(affinity_id=target.affinity_id))
        for i in range(3)])
    wait_for(lambda: all_done(client, job_id), "tasks")
    assert {client.get_task(job_id, f"a{i}").node_info.node_id for i in range(3)} == {target.id}


def test_disabling_a_job_requeues_its_running_tasks(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client)
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="long", command_line="sleep 30"))
    wait_for(lambda: client.get_task(job_id, "long").state == "running", "running")
    client.begin_disable_job(job_id, bm.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=1).result()
    wait_for(lambda: client.get_job(job_id).state == "disabled", "disabled")
    task = client.get_task(job_id, "long")
    assert task.state == "active" and task.execution_info.requeue_count == 1
    assert task.execution_info.retry_count == 0 and task.execution_info.failure_info is None
    # The node's slot was given back: nothing of this job runs anywhere.
    assert not any((n.running_tasks_count or 0) for n in client.list_nodes("work"))
    client.begin_enable_job(job_id, polling_interval=1).result()
    wait_for(lambda: client.get_task(job_id, "long").state == "running", "running again")
    client.terminate_task(job_id, "long")
    wait_for(lambda: client.get_task(job_id, "long").state == "completed", "terminated")
