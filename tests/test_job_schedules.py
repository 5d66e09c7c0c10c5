"""Job schedules through azure-batch 15 and az: a schedule makes its jobs (``<schedule>:job-<n>``) as the service
clock moves (operator fault injection, ``shoal faults set --clock-offset``), one at a time; disable, enable,
terminate and delete; ETags and conditions; a body Shoal cannot honour is refused naming the property."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from batch_fixtures import HOST, LOCATION, NODE_AGENT, create_account, wait_for
from conftest import AzCli
from harness import ShoalServer
from shoal.azure import Shoal


def host_pool(shoal: Shoal) -> Any:
    from azure.mgmt.resource.resources.models import ResourceGroup

    group = f"sched-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    client = shoal.batch_client(create_account(shoal, group).account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="work", vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher=HOST.publisher, offer=HOST.offer, sku=HOST.sku,
                                                     version=HOST.version),
            node_agent_sku_id=NODE_AGENT)))
    return client


def run_one_task(client: Any, job_id: str) -> None:
    """What a job manager (or an outside process) does with each job of the schedule: its work, after which the
    job terminates by itself (onAllTasksComplete: terminatejob)."""
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="work", command_line="/bin/sh -c 'echo $AZ_BATCH_JOB_ID'"))
    wait_for(lambda: client.get_job(job_id).state == "completed", f"{job_id} completed", timeout=120)


def test_a_schedule_with_a_5_minute_recurrence_makes_three_jobs_as_the_service_clock_moves(
        own_server: ShoalServer) -> None:
    client = host_pool(Shoal.from_env_json(own_server.env))
    client.create_job_schedule(bm.BatchJobScheduleCreateOptions(
        id="every5", display_name="every five minutes",
        schedule=bm.BatchJobScheduleConfiguration(recurrence_interval=timedelta(minutes=5)),
        job_specification=bm.BatchJobSpecification(
            pool_info=bm.BatchPoolInfo(pool_id="work"), all_tasks_complete_mode="terminatejob", priority=10,
            common_environment_settings=[bm.EnvironmentSetting(name="FROM_SCHEDULE", value="yes")]),
        metadata=[bm.BatchMetadataItem(name="owner", value="tests")]))
    created = client.get_job_schedule("every5").creation_time
    try:
        for n, offset in ((1, 0), (2, 300), (3, 600)):
            if offset:
                own_server.cli("faults", "set", "--clock-offset", str(offset))
            schedule = wait_for(lambda n=n: (s := client.get_job_schedule("every5")).execution_info.recent_job
                                and s.execution_info.recent_job.id == f"every5:job-{n}" and s, f"job {n}")
            assert schedule.execution_info.recent_job.url.endswith(f"/jobs/every5:job-{n}")
            assert schedule.execution_info.next_run_time == created + n * timedelta(minutes=5)
            job = client.get_job(f"every5:job-{n}")
            assert job.priority == 10 and job.pool_info.pool_id == "work"
            assert job.common_environment_settings[0].name == "FROM_SCHEDULE"
            if n == 1:  # job-2 is not made while job-1 is open, even when its run falls due
                own_server.cli("faults", "set", "--clock-offset", "300")
                with pytest.raises(AssertionError):
                    wait_for(lambda: client.get_job_schedule("every5").execution_info.recent_job.id != "every5:job-1",
                             "a second job while the first is open", timeout=4)
                own_server.cli("faults", "clear")
            run_one_task(client, f"every5:job-{n}")
        jobs = sorted(j.id for j in client.list_jobs_from_schedule("every5"))
        assert jobs == ["every5:job-1", "every5:job-2", "every5:job-3"]
        assert {"every5:job-1", "every5:job-2", "every5:job-3"} <= {j.id for j in client.list_jobs()}

        schedule = client.get_job_schedule("every5")
        assert schedule.state == "active" and schedule.display_name == "every five minutes"
        assert schedule.schedule.recurrence_interval == timedelta(minutes=5)
        assert schedule.metadata[0].value == "tests" and schedule.job_specification.priority == 10
        client.disable_job_schedule("every5")
        assert client.get_job_schedule("every5").state == "disabled"
        client.enable_job_schedule("every5")
        assert client.get_job_schedule("every5").state == "active"
        client.begin_terminate_job_schedule("every5", polling_interval=1).result()
        ended = client.get_job_schedule("every5")
        assert ended.state == "completed" and ended.execution_info.end_time is not None
        assert ended.execution_info.next_run_time is None
        client.begin_delete_job_schedule("every5", polling_interval=1).result()
        with pytest.raises(ResourceNotFoundError):  # the SDK's exists raises on 404 (its error policy runs first)
            client.job_schedule_exists("every5")
        wait_for(lambda: all(not j.id.startswith("every5:") for j in client.list_jobs()), "the jobs deleted")
    finally:
        own_server.cli("faults", "clear")


def test_schedule_requests_etags_and_refusals(shoal: Shoal) -> None:
    from azure.mgmt.resource.resources.models import ResourceGroup

    group = f"schedreq-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    client = shoal.batch_client(create_account(shoal, group).account_endpoint)
    later = datetime.now(UTC) + timedelta(days=1)
    spec = bm.BatchJobSpecification(pool_info=bm.BatchPoolInfo(pool_id="nowhere"))
    client.create_job_schedule(bm.BatchJobScheduleCreateOptions(
        id="Later", schedule=bm.BatchJobScheduleConfiguration(do_not_run_until=later), job_specification=spec))
    assert client.job_schedule_exists("later")  # ids are case-insensitive
    with pytest.raises(ResourceExistsError) as exists:
        client.create_job_schedule(bm.BatchJobScheduleCreateOptions(
            id="LATER", schedule=bm.BatchJobScheduleConfiguration(), job_specification=spec))
    assert exists.value.error.code == "JobScheduleExists"
    schedule = client.get_job_schedule("Later")
    assert abs(schedule.execution_info.next_run_time - later) < timedelta(milliseconds=1)
    assert schedule.execution_info.recent_job is None and list(client.list_jobs_from_schedule("Later")) == []
    assert [s.id for s in client.list_job_schedules()] == ["Later"]

    with pytest.raises(ResourceModifiedError):  # an update on a stale ETag
        client.update_job_schedule("Later", bm.BatchJobScheduleUpdateOptions(
            metadata=[bm.BatchMetadataItem(name="a", value="b")]), etag="0x1",
            match_condition=MatchConditions.IfNotModified)
    client.update_job_schedule("Later", bm.BatchJobScheduleUpdateOptions(
        schedule=bm.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=1), do_not_run_until=later)),
        etag=schedule.etag, match_condition=MatchConditions.IfNotModified)
    patched = client.get_job_schedule("Later")
    assert patched.etag != schedule.etag and patched.schedule.recurrence_interval == timedelta(hours=1)
    client.replace_job_schedule("Later", bm.BatchJobSchedule(
        schedule=bm.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=2)), job_specification=spec))
    assert client.get_job_schedule("Later").schedule.recurrence_interval == timedelta(hours=2)

    with pytest.raises(HttpResponseError) as short:
        client.create_job_schedule(bm.BatchJobScheduleCreateOptions(
            id="fast", schedule=bm.BatchJobScheduleConfiguration(recurrence_interval=timedelta(seconds=20)),
            job_specification=spec))
    assert short.value.status_code == 400
    assert {"key": "PropertyName", "value": "schedule.recurrenceInterval"} in short.value.response.json()["values"]
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_job_schedule("nope")
    assert missing.value.error.code == "JobScheduleNotFound"

    client.begin_terminate_job_schedule("Later", polling_interval=1).result()
    with pytest.raises(HttpResponseError) as done:
        client.disable_job_schedule("Later")
    assert (done.value.status_code, done.value.error.code) == (409, "JobScheduleCompleted")
    client.begin_delete_job_schedule("Later", polling_interval=1).result()
    assert list(client.list_job_schedules()) == []


def test_a_body_property_shoal_cannot_honour_is_refused_by_name(shoal: Shoal, server: ShoalServer) -> None:
    import requests
    from azure.mgmt.resource.resources.models import ResourceGroup

    group = f"schedraw-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    token = shoal.credential().get_token("https://batch.core.windows.net//.default").token
    url = f"https://{account.account_endpoint}/jobschedules?api-version=2025-06-01"
    for body, name in (
            ({"id": "x", "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}, "colour": "red"}, "colour"),
            ({"id": "x", "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}, "tint": 1}},
             "jobSpecification.tint"),
            ({"id": "x", "schedule": {}, "jobSpecification": {}}, "jobSpecification.poolInfo"),
            ({"id": "x", "schedule": {"startWindow": 5}, "jobSpecification": {"poolInfo": {"poolId": "p"}}},
             "schedule.startWindow")):
        response = requests.post(url, data=json.dumps(body), headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json; odata=minimalmetadata"},
            verify=server.ca, timeout=30)
        assert response.status_code == 400, response.text
        assert {"key": "PropertyName", "value": name} in response.json()["values"], response.text


@pytest.mark.az
def test_az_job_schedule_create_show_list_delete(az: AzCli, tmp_path: Path) -> None:
    group, name = f"azsched-{uuid.uuid4().hex[:6]}", f"azs{uuid.uuid4().hex[:10]}"
    az.run("group", "create", "-n", group, "-l", LOCATION)
    az.json("batch", "account", "create", "-g", group, "-n", name, "-l", LOCATION)
    az.run("batch", "account", "login", "-g", group, "-n", name)
    az.run("batch", "job-schedule", "create", "--id", "nightly", "--pool-id", "p", "--recurrence-interval", "PT1H",
           "--do-not-run-until", "2099-01-01T00:00:00Z", "--priority", "5")
    shown = az.json("batch", "job-schedule", "show", "--job-schedule-id", "nightly")
    assert shown["state"] == "active" and shown["schedule"]["recurrenceInterval"] in ("1:00:00", "PT1H")
    assert shown["jobSpecification"]["poolInfo"]["poolId"] == "p" and shown["jobSpecification"]["priority"] == 5
    assert shown["executionInfo"]["nextRunTime"].startswith("2099-01-01")
    spec = tmp_path / "schedule.json"
    spec.write_text(json.dumps({"id": "weekly", "schedule": {"recurrenceInterval": "P7D"},
                                "jobSpecification": {"poolInfo": {"poolId": "p"}}}))
    az.run("batch", "job-schedule", "create", "--json-file", str(spec))
    assert sorted(s["id"] for s in az.json("batch", "job-schedule", "list")) == ["nightly", "weekly"]
    az.run("batch", "job-schedule", "disable", "--job-schedule-id", "weekly")
    assert az.json("batch", "job-schedule", "show", "--job-schedule-id", "weekly")["state"] == "disabled"
    az.run("batch", "job-schedule", "delete", "--job-schedule-id", "nightly", "--yes")
    az.run("batch", "job-schedule", "delete", "--job-schedule-id", "weekly", "--yes")
    gone = az.run("batch", "job-schedule", "show", "--job-schedule-id", "nightly", check=False)
    assert gone.returncode != 0 or json.loads(gone.stdout or "{}").get("state") == "deleting"
