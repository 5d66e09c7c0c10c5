"""Task files through azure-batch 15: resource files in, output files out (Shoal containers and file URLs)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError

from batch_fixtures import PreparedImage, new_job, outside_web, wait_for, work_pool
from harness import ShoalServer
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def env(shoal: Shoal) -> tuple[Any, PreparedImage]:
    return work_pool(shoal)


@pytest.fixture(scope="module")
def container(server: ShoalServer) -> str:
    name = f"files-{uuid.uuid4().hex[:8]}"
    return server.cli("container", "url", name, "--create").stdout.strip()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain HTTP server elsewhere (stands in for any download URL): outside the host, where nodes reach."""
    root = tmp_path_factory.mktemp("web")
    (root / "greeting.txt").write_text("hello from the web\n")
    with outside_web(root) as url:
        yield url


def blob_url(container_url: str, name: str) -> str:
    base, _, query = container_url.partition("?")
    return f"{base}/{name}?{query}"


def put_blob(server: ShoalServer, container_url: str, name: str, data: bytes) -> None:
    response = requests.put(blob_url(container_url, name), data=data, verify=server.ca,
                            headers={"x-ms-blob-type": "BlockBlob"})
    assert response.status_code == 201, response.text


def list_blobs(server: ShoalServer, container_url: str, prefix: str = "") -> list[str]:
    response = requests.get(f"{container_url}&restype=container&comp=list&prefix={prefix}", verify=server.ca)
    assert response.status_code == 200, response.text
    return [el.text or "" for el in ET.fromstring(response.content).iter("Name")]


def finished(client: Any, job_id: str, task_id: str) -> Any:
    return wait_for(lambda: (t := client.get_task(job_id, task_id)).state == "completed" and t, task_id)


def test_resource_files_are_downloaded_before_the_command(env: tuple[Any, PreparedImage], server: ShoalServer,
                                                          container: str, web: str) -> None:
    client, _ = env
    put_blob(server, container, "inputs/one.txt", b"first input\n")
    put_blob(server, container, "inputs/deeper/two.txt", b"second input\n")
    put_blob(server, container, "other/skip.txt", b"not selected\n")
    job_id = new_job(client)
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="reads", command_line="/bin/sh -c 'cat greeting.txt data/one.txt data/inputs/deeper/two.txt; "
                                 "ls data; stat -c %a greeting.txt; test ! -e data/other/skip.txt'",
        resource_files=[
            bm.ResourceFile(http_url=f"{web}/greeting.txt", file_path="greeting.txt", file_mode="0640"),
            bm.ResourceFile(http_url=blob_url(container, "inputs/one.txt"), file_path="data/one.txt"),
            bm.ResourceFile(storage_container_url=container, blob_prefix="inputs/deeper", file_path="data")]))
    task = finished(client, job_id, "reads")
    assert task.execution_info.exit_code == 0, task.execution_info
    out = b"".join(client.download_task_file(job_id, "reads", "stdout.txt")).decode()
    assert "hello from the web\nfirst input\nsecond input\n" in out and "640" in out


def test_a_resource_file_that_cannot_be_downloaded_fails_the_task_without_retries(
        env: tuple[Any, PreparedImage], container: str, web: str) -> None:
    client, _ = env
    job_id = new_job(client)
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="missing", command_line="/bin/echo never", constraints=bm.BatchTaskConstraints(max_task_retry_count=2),
        resource_files=[bm.ResourceFile(http_url=f"{web}/no-such-file", file_path="x")]))
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="unsigned", command_line="/bin/echo never",
        resource_files=[bm.ResourceFile(http_url=blob_url(container.split("?")[0] + "?sig=wrong", "inputs/one.txt"),
                                        file_path="x")]))
    missing = finished(client, job_id, "missing")
    assert missing.execution_info.result == "failure" and missing.execution_info.exit_code is None
    assert missing.execution_info.failure_info.code == "BlobNotFound"
    assert missing.execution_info.failure_info.category == "usererror"
    assert missing.execution_info.retry_count == 0
    unsigned = finished(client, job_id, "unsigned")
    assert unsigned.execution_info.failure_info.code == "BlobAccessDenied"
    assert "sig=" not in unsigned.execution_info.failure_info.message  # secrets stay out of messages


def test_bad_resource_and_output_files_are_refused(env: tuple[Any, PreparedImage], container: str) -> None:
    client, _ = env
    job_id = new_job(client)
    cases = [
        (dict(resource_files=[bm.ResourceFile(http_url="https://example.com/x", file_path="../escape")]),
         "InvalidPropertyValue", "resourceFiles[0].filePath"),
        (dict(resource_files=[bm.ResourceFile(http_url="https://example.com/x")]),
         "MissingRequiredProperty", "resourceFiles[0].filePath"),
        (dict(resource_files=[bm.ResourceFile(http_url="https://example.com/x", file_path="x",
                                              storage_container_url=container)]),
         "InvalidPropertyValue", "resourceFiles[0]"),
        (dict(output_files=[bm.OutputFile(file_pattern="*.txt", destination=bm.OutputFileDestination(
            container=bm.OutputFileBlobContainerDestination(container_url=container)),
            upload_options=bm.OutputFileUploadConfiguration(upload_condition="sometimes"))]),
         "InvalidPropertyValue", "outputFiles[0].uploadOptions.uploadCondition"),
    ]
    for kwargs, code, prop in cases:
        with pytest.raises(HttpResponseError) as info:
            client.create_task(job_id, bm.BatchTaskCreateOptions(id="bad", command_line="true", **kwargs))
        assert info.value.status_code == 400 and info.value.error.code == code, (kwargs, info.value.error)
        values = {d.code: d.message for d in info.value.error.details}
        assert values.get("PropertyName") == prop, values


def output(pattern: str, url: str, condition: str = "taskcompletion", path: str | None = None) -> Any:
    return bm.OutputFile(file_pattern=pattern, destination=bm.OutputFileDestination(
        container=bm.OutputFileBlobContainerDestination(container_url=url, path=path)),
        upload_options=bm.OutputFileUploadConfiguration(upload_condition=condition))


def test_output_files_go_to_containers_and_file_urls(env: tuple[Any, PreparedImage], server: ShoalServer,
                                                     container: str) -> None:
    client, _ = env
    job_id = new_job(client)
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="writes", command_line="/bin/sh -c 'mkdir -p out/sub; echo a > out/a.txt; echo b > out/sub/b.txt; "
                                  "echo skip > out/c.log; echo report > report.csv; echo to-stdout'",
        output_files=[output("out/**/*.txt", container, "tasksuccess", path=f"{job_id}/txt"),
                      output("report.csv", container, path=f"{job_id}/final/report.csv"),
                      output("../std*.txt", container, path=f"{job_id}/logs"),
                      output("out/c.log", container, "taskfailure", path=f"{job_id}/never"),
                      # file:// names a directory of the node: its shared directory here
                      output("report.csv", "file:///mnt/batch/tasks/shared", path=f"{job_id}/report.csv")]))
    task = finished(client, job_id, "writes")
    assert task.execution_info.result == "success", task.execution_info
    assert sorted(list_blobs(server, container, job_id)) == [
        f"{job_id}/final/report.csv", f"{job_id}/logs/stderr.txt", f"{job_id}/logs/stdout.txt",
        f"{job_id}/txt/a.txt", f"{job_id}/txt/sub/b.txt"]
    got = requests.get(blob_url(container, f"{job_id}/logs/stdout.txt"), verify=server.ca)
    assert got.status_code == 200 and got.content == b"to-stdout\n"
    node = client.get_task(job_id, "writes").node_info.node_id
    copied = b"".join(client.download_node_file("work", node, f"shared/{job_id}/report.csv")).decode()
    assert copied == "report\n"
    log = b"".join(client.download_task_file(job_id, "writes", "fileuploadout.txt")).decode()
    assert "report.csv" in log


def test_an_upload_that_fails_fails_the_task(env: tuple[Any, PreparedImage], server: ShoalServer,
                                              container: str) -> None:
    client, _ = env
    job_id = new_job(client)
    gone = server.cli("container", "url", f"gone-{uuid.uuid4().hex[:8]}").stdout.strip()  # never created
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="uploads", command_line="/bin/sh -c 'echo data > result.txt'",
        output_files=[output("result.txt", gone)]))
    task = finished(client, job_id, "uploads")
    assert task.execution_info.exit_code == 0 and task.execution_info.result == "failure"
    assert task.execution_info.failure_info.code == "FileUploadContainerNotFound"
    err = b"".join(client.download_task_file(job_id, "uploads", "fileuploaderr.txt")).decode()
    assert "FileUploadContainerNotFound" in err


def test_container_urls_need_their_signature(server: ShoalServer, container: str) -> None:
    base = container.split("?")[0]
    for url in (f"{base}/x.txt", f"{base}/x.txt?sig=forged"):
        response = requests.get(url, verify=server.ca)
        assert response.status_code == 403 and response.headers["x-ms-error-code"] == "AuthenticationFailed"
    response = requests.put(blob_url(container, "../escape.txt"), data=b"x", verify=server.ca)
    assert response.status_code in (400, 404)
    assert requests.get(blob_url(container, "no/such.txt"), verify=server.ca).status_code == 404


def test_transfers_run_in_the_node_with_the_tasks_rights(env: tuple[Any, PreparedImage], server: ShoalServer,
                                                          tmp_path: Path) -> None:
    """file:// URLs name the node's files, read and written as the task's user; the host's files, its loopback
    services, the metadata address and Shoal's own API are out of a transfer's reach."""
    client, _ = env
    job_id = new_job(client)
    admin = bm.UserIdentity(auto_user=bm.AutoUserSpecification(elevation_level="admin"))
    host_dir = tmp_path / "host-out"
    host_dir.mkdir()
    cases = {
        # (resource files, output files, user) -> the failure code
        "host-secret": ([bm.ResourceFile(http_url=(server.state_dir / "credentials.json").as_uri(), file_path="c")],
                        None, admin, "BlobNotFound"),
        "node-shadow": ([bm.ResourceFile(http_url="file:///etc/shadow", file_path="s")], None, None,
                        "BlobAccessDenied"),
        "host-dir": ([bm.ResourceFile(storage_container_url=server.state_dir.as_uri(), file_path="d")], None, admin,
                     "ResourceContainerAccessDenied"),
        "metadata": ([bm.ResourceFile(http_url="http://169.254.169.254/metadata/instance?api-version=2021-02-01",
                                      file_path="m")], None, admin, "BlobAccessDenied"),
        "own-api": ([bm.ResourceFile(http_url=f"{server.base_url}/subscriptions?api-version=2022-12-01",
                                     file_path="a")], None, admin, "BlobAccessDenied"),
        "host-out": (None, [output("../stdout.txt", host_dir.as_uri(), path="leak.txt")], admin,
                     "FileUploadContainerNotFound"),
    }
    for task_id, (resources, outputs, user, _) in cases.items():
        client.create_task(job_id, bm.BatchTaskCreateOptions(
            id=task_id, command_line="/bin/echo ran", resource_files=resources, output_files=outputs,
            user_identity=user))
    # A file of the node itself, readable by the task's user, is fine.
    client.create_task(job_id, bm.BatchTaskCreateOptions(
        id="node-file", command_line="/bin/cat hostname", resource_files=[
            bm.ResourceFile(http_url="file:///etc/hostname", file_path="hostname")]))
    for task_id, (*_, code) in cases.items():
        task = finished(client, job_id, task_id)
        info = task.execution_info
        assert info.result == "failure" and info.failure_info.code == code, (task_id, info.failure_info)
        assert "sig=" not in info.failure_info.message
    assert list(host_dir.iterdir()) == []  # nothing written on the host
    node_file = finished(client, job_id, "node-file")
    assert node_file.execution_info.exit_code == 0, node_file.execution_info
    out = b"".join(client.download_task_file(job_id, "node-file", "stdout.txt")).decode().strip()
    assert out.startswith("node-"), out  # the machine's own /etc/hostname


def test_a_start_task_gets_its_resource_files_before_it_runs(env: tuple[Any, PreparedImage], server: ShoalServer,
                                                               container: str) -> None:
    """A start task's resourceFiles are downloaded into its working directory first; one that cannot be
    downloaded fails the start task with the task's failure info (the node: starttaskfailed, with waitForSuccess)."""
    client, image = env
    put_blob(server, container, "start/tool.sh", b"echo tool ran\n")
    suffix = uuid.uuid4().hex[:6]
    for pool_id, name in ((f"starter-{suffix}", "start/tool.sh"), (f"starter-bad-{suffix}", "start/missing.sh")):
        client.create_pool(bm.BatchPoolCreateOptions(
            id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1,
            start_task=bm.BatchStartTask(command_line="/bin/sh tool.sh", wait_for_success=True, resource_files=[
                bm.ResourceFile(http_url=blob_url(container, name), file_path="tool.sh")]),
            virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
                node_agent_sku_id="batch.node.debian 12")))

    def settled(pool_id: str) -> Any:
        nodes = list(client.list_nodes(pool_id))
        return nodes and nodes[0].state in ("idle", "starttaskfailed") and nodes[0]

    good = wait_for(lambda: settled(f"starter-{suffix}"), "the start task's node")
    assert good.state == "idle", good.start_task_info
    assert b"".join(client.download_node_file(f"starter-{suffix}", good.id, "startup/stdout.txt")) == b"tool ran\n"
    bad = wait_for(lambda: settled(f"starter-bad-{suffix}"), "the failing start task's node")
    assert bad.state == "starttaskfailed", bad.start_task_info
    assert bad.start_task_info.failure_info.code == "BlobNotFound", bad.start_task_info
    assert bad.start_task_info.exit_code is None
    for poller in [client.begin_delete_pool(p) for p in (f"starter-{suffix}", f"starter-bad-{suffix}")]:
        poller.result()
