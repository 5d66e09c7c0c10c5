"""Jobs and tasks through azure-batch 15: many tasks, environment, files, failures, retries, dependencies."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from azure.batch import models as bm
from azure.batch.models._models import BatchNodeRebootOptions  # not exported by azure-batch 15.1
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from batch_fixtures import PreparedImage, new_job, wait_for, work_pool
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def env(shoal: Shoal) -> tuple[Any, PreparedImage]:
    return work_pool(shoal)


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


def test_a_collection_refuses_ids_taken_in_any_case_alone(env: tuple[Any, PreparedImage]) -> None:
    """Task ids are case-insensitive: an id already in the job, or twice in the collection, fails alone."""
    client, _ = env
    job_id = new_job(client)
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="Taken", command_line="true"))
    result = client.create_task_collection(job_id, bm.BatchTaskGroup(task_values=[
        bm.BatchTaskCreateOptions(id=i, command_line="true") for i in ("tAKEN", "fresh", "FRESH", "other")]))
    status = {r.task_id: (r.status, r.error.code if r.error else None) for r in result.result_values}
    assert status == {"tAKEN": ("clienterror", "TaskExists"), "fresh": ("success", None),
                      "FRESH": ("clienterror", "TaskExists"), "other": ("success", None)}
    assert sorted(t.id for t in client.list_tasks(job_id)) == ["Taken", "fresh", "other"]


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


def test_job_preparation_runs_once_per_node_and_release_when_the_job_ends(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = f"prep-{uuid.uuid4().hex[:6]}"
    marker = "$AZ_BATCH_NODE_SHARED_DIR/" + job_id
    client.create_job(bm.BatchJobCreateOptions(
        id=job_id, pool_info=bm.BatchPoolInfo(pool_id="work"), all_tasks_complete_mode="terminatejob",
        job_preparation_task=bm.BatchJobPreparationTask(
            command_line=f"/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> {marker}-prep; sleep 0.5; echo ok > ready'"),
        job_release_task=bm.BatchJobReleaseTask(
            command_line=f"/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> {marker}-release'")))
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job_id, bm.BatchTaskCreateOptions(id="jobpreparation", command_line="true"))
    assert info.value.error.code == "TaskIdSameAsJobPreparationTask"
    client.create_tasks(job_id, [bm.BatchTaskCreateOptions(
        id=f"p{i}", command_line="/bin/sh -c 'cat $AZ_BATCH_JOB_PREP_WORKING_DIR/ready'") for i in range(12)])
    wait_for(lambda: client.get_job(job_id).state == "completed", "job completed after its release tasks")
    used = {client.get_task(job_id, f"p{i}").node_info.node_id for i in range(12)}
    assert all(client.get_task(job_id, f"p{i}").execution_info.exit_code == 0 for i in range(12))
    statuses = list(client.list_job_preparation_and_release_task_status(job_id))
    assert {s.node_id for s in statuses} == used
    for status in statuses:
        prep, rel = status.job_preparation_task_execution_info, status.job_release_task_execution_info
        assert prep.state == "completed" and prep.exit_code == 0 and prep.result == "success"
        assert prep.task_root_directory == f"workitems/{job_id}/job-1/jobpreparation"
        assert rel is not None and rel.state == "completed" and rel.exit_code == 0
        runs = b"".join(client.download_node_file("work", status.node_id, f"shared/{job_id}-prep")).decode()
        assert runs.split() == ["jobpreparation"]  # once per node, however many tasks ran there
        released = b"".join(client.download_node_file("work", status.node_id, f"shared/{job_id}-release"))
        assert released.decode().split() == ["jobrelease"]


def test_preparation_runs_again_after_a_reboot_unless_told_not_to(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    node = sorted(n.id for n in client.list_nodes("work"))[0]
    jobs = {}
    for rerun in (True, False):
        job_id = f"reboot-{uuid.uuid4().hex[:6]}"
        client.create_job(bm.BatchJobCreateOptions(
            id=job_id, pool_info=bm.BatchPoolInfo(pool_id="work"),
            job_preparation_task=bm.BatchJobPreparationTask(
                command_line=f"/bin/sh -c 'echo run >> $AZ_BATCH_NODE_SHARED_DIR/{job_id}'",
                rerun_on_node_reboot_after_success=rerun)))
        jobs[rerun] = job_id

    def run_on_node(job_id: str, task_id: str) -> None:
        client.create_task(job_id, bm.BatchTaskCreateOptions(
            id=task_id, command_line="/bin/true", affinity_info=bm.BatchAffinityInfo(affinity_id=node)))
        task = wait_for(lambda: (t := client.get_task(job_id, task_id)).state == "completed" and t, task_id)
        assert task.node_info.node_id == node

    for job_id in jobs.values():
        run_on_node(job_id, "before")
    client.begin_reboot_node("work", node, BatchNodeRebootOptions(node_reboot_kind="requeue"),
                             polling_interval=1).result()
    wait_for(lambda: client.get_node("work", node).state == "idle", "the rebooted node is idle")
    for job_id in jobs.values():
        run_on_node(job_id, "after")
    for rerun, job_id in jobs.items():
        runs = b"".join(client.download_node_file("work", node, f"shared/{job_id}")).decode().split()
        assert runs == (["run", "run"] if rerun else ["run"]), (rerun, runs)


def test_a_failed_preparation_keeps_the_jobs_tasks_off_the_node(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client, job_preparation_task=bm.BatchJobPreparationTask(command_line="/bin/sh -c 'exit 7'"))
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="blocked", command_line="/bin/true"))
    wait_for(lambda: len(list(client.list_job_preparation_and_release_task_status(job_id))) == 4,
             "the preparation task tried on every node")
    statuses = list(client.list_job_preparation_and_release_task_status(job_id))
    assert all(s.job_preparation_task_execution_info.exit_code == 7 for s in statuses)
    assert all(s.job_preparation_task_execution_info.failure_info.code == "FailureExitCode" for s in statuses)
    time.sleep(1)
    task = client.get_task(job_id, "blocked")
    assert task.state == "active" and task.execution_info.exit_code is None
    plain = new_job(client)
    with pytest.raises(ResourceExistsError) as info:
        list(client.list_job_preparation_and_release_task_status(plain))
    assert info.value.error.code == "JobPreparationTaskNotSpecified"
    with pytest.raises(HttpResponseError) as info:
        new_job(client, job_release_task=bm.BatchJobReleaseTask(command_line="true"))
    assert info.value.status_code == 400


def test_task_directories_go_after_their_retention_time(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client)
    client.create_tasks(job_id, [
        bm.BatchTaskCreateOptions(id="brief", command_line="/bin/echo brief", constraints=bm.BatchTaskConstraints(
            retention_time=timedelta(seconds=1))),
        bm.BatchTaskCreateOptions(id="kept", command_line="/bin/echo kept")])
    wait_for(lambda: all_done(client, job_id), "tasks")

    def cleaned() -> bool:
        try:
            list(client.list_task_files(job_id, "brief"))
        except ResourceExistsError as exc:
            return exc.error.code == "TaskFilesCleanedup"
        return False

    wait_for(cleaned, "the brief task's files cleaned up", timeout=60)
    brief = client.get_task(job_id, "brief")
    assert brief.node_info.node_id and brief.execution_info.exit_code == 0  # the record stays
    node_files = [f.name for f in client.list_node_files("work", brief.node_info.node_id, recursive=True)]
    assert not any(f"workitems/{job_id}/job-1/brief" in name for name in node_files)
    with pytest.raises(ResourceExistsError):  # a streamed download: the status is what the SDK reports
        b"".join(client.download_task_file(job_id, "brief", "stdout.txt"))
    assert b"".join(client.download_task_file(job_id, "kept", "stdout.txt")) == b"kept\n"


def test_a_job_past_its_wall_clock_time_is_terminated(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client, constraints=bm.BatchJobConstraints(max_wall_clock_time=timedelta(seconds=2)))
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="long", command_line="sleep 60"))
    job = wait_for(lambda: (j := client.get_job(job_id)).state == "completed" and j, "job terminated")
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    task = client.get_task(job_id, "long")
    assert task.state == "completed"


def test_max_parallel_tasks_limits_a_job_s_running_tasks(env: tuple[Any, PreparedImage]) -> None:
    client, _ = env
    job_id = new_job(client, max_parallel_tasks=2)
    assert client.get_job(job_id).max_parallel_tasks == 2
    client.create_tasks(job_id, [bm.BatchTaskCreateOptions(id=f"m{i}", command_line="/bin/sh -c 'sleep 1'")
                                 for i in range(6)])
    wait_for(lambda: all_done(client, job_id), "the job's tasks")
    spans = [(t.execution_info.start_time, t.execution_info.end_time) for t in client.list_tasks(job_id)]
    assert all(t.execution_info.exit_code == 0 for t in client.list_tasks(job_id))
    # The pool has 16 free slots; never more than two of the job's tasks ran at once.
    most = max(sum(1 for s, e in spans if s <= at < e) for at, _ in spans)
    assert most <= 2, spans
    with pytest.raises(HttpResponseError) as info:
        new_job(client, max_parallel_tasks=0)
    assert info.value.status_code == 400 and "maxParallelTasks" in str(info.value)
