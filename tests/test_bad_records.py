"""A record that cannot be processed fails alone: corrupt task and job rows planted straight in the database
(as a bug of an older version, or a hand edit, would leave them) complete with a clear failureInfo, and every
other task, of this account and of others, still runs."""

from __future__ import annotations

import uuid
from typing import Any

from azure.batch import models as bm
from azure.mgmt.resource.resources.models import ResourceGroup
from sqlalchemy import select

from batch_fixtures import HOST, LOCATION, NODE_AGENT, create_account, wait_for
from harness import ShoalServer
from shoal.azure import Shoal
from shoal.store import models
from shoal.store.db import Database

CORRUPT = {
    "bad-env": {"environmentSettings": "abc"},
    "bad-user": {"userIdentity": "x"},
    "bad-constraints": {"constraints": "x"},
    "bad-ranges": {"environmentSettings": [{"value": "no name"}]},
}


def account_with_job(shoal: Shoal, pool_id: str) -> Any:
    group = f"bad-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    client = shoal.batch_client(create_account(shoal, group).account_endpoint)
    # The job's pool does not exist yet: its tasks wait (and can be spoiled) until it does.
    client.create_job(bm.BatchJobCreateOptions(id="job", pool_info=bm.BatchPoolInfo(pool_id=pool_id)))
    return client


def create_pool(client: Any, pool_id: str) -> None:
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=bm.BatchVmImageReference(
            publisher=HOST.publisher, offer=HOST.offer, sku=HOST.sku, version=HOST.version),
            node_agent_sku_id=NODE_AGENT)))


def completed(client: Any, task_id: str) -> Any:
    return wait_for(lambda: (t := client.get_task("job", task_id)).state == "completed" and t, task_id)


def test_corrupt_rows_fail_alone_and_other_accounts_tasks_still_run(server: ShoalServer, shoal: Shoal) -> None:
    spoiled, other = account_with_job(shoal, "pa"), account_with_job(shoal, "pb")
    for task_id in [*CORRUPT, "bad-retries", "good"]:
        spoiled.create_task("job", bm.BatchTaskCreateOptions(
            id=task_id, command_line="/bin/false" if task_id == "bad-retries" else "/bin/echo fine"))
    spoiled.create_job(bm.BatchJobCreateOptions(id="bad-job", pool_info=bm.BatchPoolInfo(pool_id="pa")))
    spoiled.create_task("bad-job", bm.BatchTaskCreateOptions(id="of-bad-job", command_line="/bin/echo fine"))
    db = Database(server.database_url or f"sqlite:///{server.state_dir / 'shoal.db'}")
    try:
        with db.write() as s:
            rows = {t.task_id: t for t in s.scalars(select(models.Task).where(models.Task.task_id.in_(
                [*CORRUPT, "bad-retries"])))}
            for task_id, change in CORRUPT.items():
                rows[task_id].spec = {**rows[task_id].spec, **change}
            rows["bad-retries"].spec = {**rows["bad-retries"].spec, "constraints": {"maxTaskRetryCount": "y"}}
            job = s.scalars(select(models.Job).where(models.Job.job_id == "bad-job")).one()
            job.spec = {**job.spec, "commonEnvironmentSettings": "x"}
    finally:
        db.dispose()
    create_pool(spoiled, "pa")
    create_pool(other, "pb")
    other.create_task("job", bm.BatchTaskCreateOptions(id="good", command_line="/bin/echo fine"))
    for client in (spoiled, other):
        good = completed(client, "good")
        assert good.execution_info.result == "success", good.execution_info
    for task_id in CORRUPT:
        task = completed(spoiled, task_id)  # and its GET answers (no 500 for a record it cannot read)
        assert task.execution_info.result == "failure"
        assert task.execution_info.failure_info.code == "TaskRecordInvalid", task.execution_info.failure_info
    of_bad_job = wait_for(lambda: (t := spoiled.get_task("bad-job", "of-bad-job")).state == "completed" and t, "x")
    assert of_bad_job.execution_info.failure_info.code == "TaskRecordInvalid"
    assert "commonEnvironmentSettings" in of_bad_job.execution_info.failure_info.message
    assert spoiled.get_job("bad-job").id == "bad-job"
    retried = completed(spoiled, "bad-retries")  # it ends: a retry count that is not a number means none
    assert retried.execution_info.exit_code == 1 and retried.execution_info.retry_count == 0
