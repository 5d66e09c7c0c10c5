"""Logs outlive their nodes: a task's stdout/stderr and a node's start-task logs stay readable through the file
API after the node is gone (resized away, its pool deleted), until the task's retention time. Azure answers
404 here and the logs are lost; Shoal keeps answering, on purpose."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import HOST, LOCATION, NODE_AGENT, create_account, wait_for
from harness import ShoalServer
from shoal.azure import Shoal


def _client(shoal: Shoal) -> Any:
    group = f"logs-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    return shoal.batch_client(create_account(shoal, group).account_endpoint)


def _pool(client: Any, pool_id: str) -> str:
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        start_task=bm.BatchStartTask(command_line="/bin/sh -c 'echo started on $AZ_BATCH_NODE_ID'",
                                     wait_for_success=True),
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=bm.BatchVmImageReference(
            publisher=HOST.publisher, offer=HOST.offer, sku=HOST.sku, version=HOST.version),
            node_agent_sku_id=NODE_AGENT)))
    node = wait_for(lambda: next((n for n in client.list_nodes(pool_id) if n.state == "idle"), None), "idle node")
    return str(node.id)


def _run(client: Any, pool_id: str, job_id: str, tasks: list[bm.BatchTaskCreateOptions]) -> None:
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=pool_id)))
    client.create_tasks(job_id, tasks)
    wait_for(lambda: all(t.state == "completed" for t in client.list_tasks(job_id)), "tasks completed")


def _read(download: Any) -> bytes:
    return b"".join(download)


def test_task_and_start_task_logs_stay_readable_after_the_node_is_resized_away(shoal: Shoal) -> None:
    client = _client(shoal)
    node_id = _pool(client, "shrinks")
    _run(client, "shrinks", "job", [
        bm.BatchTaskCreateOptions(id="t1", command_line="/bin/sh -c 'echo out-of-t1; echo err-of-t1 >&2'"),
        bm.BatchTaskCreateOptions(id="brief", command_line="/bin/echo brief",
                                  constraints=bm.BatchTaskConstraints(retention_time=timedelta(seconds=3)))])
    client.begin_resize_pool("shrinks", bm.BatchPoolResizeOptions(target_dedicated_nodes=0),
                             polling_interval=1).result()
    wait_for(lambda: not list(client.list_nodes("shrinks")), "the node removed")

    with pytest.raises(ResourceNotFoundError):
        client.get_node("shrinks", node_id)  # the node itself is gone, as on Azure
    assert _read(client.download_task_file("job", "t1", "stdout.txt")) == b"out-of-t1\n"
    assert _read(client.download_task_file("job", "t1", "stderr.txt")) == b"err-of-t1\n"
    names = {f.name for f in client.list_task_files("job", "t1")}
    assert {"stdout.txt", "stderr.txt"} <= names and not any(n.startswith("wd/") for n in names)  # logs only
    assert _read(client.download_node_file("shrinks", node_id, "startup/stdout.txt")) == \
        f"started on {node_id}\n".encode()
    # What was not a log went with the node.
    with pytest.raises(HttpResponseError) as info:
        _read(client.download_node_file("shrinks", node_id, "startup/wd/none"))
    assert info.value.status_code == 404

    # A task's retention time still ends its logs.
    def cleaned() -> bool:
        try:
            list(client.list_task_files("job", "brief"))
        except ResourceExistsError as exc:
            return exc.error.code == "TaskFilesCleanedup"
        return False

    wait_for(cleaned, "the brief task's logs cleaned up", timeout=60)
    assert _read(client.download_task_file("job", "t1", "stdout.txt")) == b"out-of-t1\n"


def test_logs_stay_readable_after_the_pool_is_deleted(server: ShoalServer, shoal: Shoal) -> None:
    client = _client(shoal)
    node_id = _pool(client, "doomed")
    _run(client, "doomed", "job2", [bm.BatchTaskCreateOptions(id="t", command_line="/bin/echo from-doomed")])
    client.begin_delete_pool("doomed", polling_interval=1).result()
    assert _read(client.download_task_file("job2", "t", "stdout.txt")) == b"from-doomed\n"
    assert _read(client.download_node_file("doomed", node_id, "startup/stdout.txt")) == \
        f"started on {node_id}\n".encode()
    # Nothing of the node is left on the host but its logs.
    logs = list((server.state_dir / "store" / "logs").rglob("*"))
    assert logs and all(p.is_dir() or p.name in ("stdout.txt", "stderr.txt", "fileuploadout.txt",
                                                 "fileuploaderr.txt") for p in logs)
