"""A pool's mountConfiguration through azure-batch 15 on a real (hardened) server: a Shoal container mounted on
two nodes, an NFS mount on a host kernel without the client, and what is refused or fails as on Azure."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import requests
from azure.batch import models as bm
from azure.batch.models._models import BatchNodeRebootOptions  # not exported by azure-batch 15.1
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from harness import ShoalServer
from shoal.azure import Shoal

HOST = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")
ADMIN = bm.UserIdentity(auto_user=bm.AutoUserSpecification(elevation_level="admin"))
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="machines with mounts need root")


@pytest.fixture(scope="module")
def container(server: ShoalServer) -> tuple[str, str]:
    """A Shoal container with one blob uploaded before any node exists: (name, its signed URL)."""
    name = f"mnt-{uuid.uuid4().hex[:8]}"
    url = server.cli("container", "url", name, "--create").stdout.strip()
    response = requests.put(_blob_url(url, "before.txt"), data=b"uploaded before\n", verify=server.ca,
                            headers={"x-ms-blob-type": "BlockBlob"})
    assert response.status_code == 201, response.text
    return name, url


def _blob_url(container_url: str, blob: str) -> str:
    base, _, query = container_url.partition("?")
    return f"{base}/{blob}?{query}"


def _blob_mount(name: str, sas: str, path: str) -> bm.MountConfiguration:
    return bm.MountConfiguration(azure_blob_file_system_configuration=bm.AzureBlobFileSystemConfiguration(
        account_name="shoal", container_name=name, sas_key=sas, relative_mount_path=path))


def _pool(pool_id: str, nodes: int, mount: list[bm.MountConfiguration]) -> bm.BatchPoolCreateOptions:
    return bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes, mount_configuration=mount,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST,
                                                                      node_agent_sku_id=NODE_AGENT))


@pytest.fixture(scope="module")
def client(shoal: Shoal, container: tuple[str, str]) -> Any:
    """One account; every pool is created at once so that they boot side by side."""
    name, url = container
    sas = url.partition("?")[2]
    group = f"mounts-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    batch = shoal.batch_client(create_account(shoal, group).account_endpoint)
    batch.create_pool(_pool("blob", 2, [_blob_mount(name, sas, "data")]))
    batch.create_pool(_pool("deep", 1, [_blob_mount(name, sas, "deep/data")]))
    batch.create_pool(_pool("badsas", 1, [_blob_mount(name, "sig=not-the-signature", "data")]))
    batch.create_pool(_pool("nfs", 1, [bm.MountConfiguration(nfs_mount_configuration=bm.NfsMountConfiguration(
        source="10.0.0.4:/exports/data", relative_mount_path="shared", mount_options="vers=4.1"))]))
    batch.create_job(bm.BatchJobCreateOptions(id="mounts", pool_info=bm.BatchPoolInfo(pool_id="blob")))
    batch.create_job(bm.BatchJobCreateOptions(id="deep", pool_info=bm.BatchPoolInfo(pool_id="deep")))
    return batch


def _settled(client: Any, pool: str, count: int) -> list[Any]:
    return wait_for(lambda: (ns := sorted(client.list_nodes(pool), key=lambda n: n.id)) and len(ns) == count
                    and all(n.state in ("idle", "unusable") for n in ns) and ns, f"nodes of {pool}", 300)


def _run(client: Any, job: str, command: str, node: str, *, admin: bool = True) -> tuple[Any, str]:
    task_id = f"t-{uuid.uuid4().hex[:10]}"
    client.create_task(job, bm.BatchTaskCreateOptions(
        id=task_id, command_line=f"/bin/sh -c '{command}'", user_identity=ADMIN if admin else None,
        affinity_info=bm.BatchAffinityInfo(affinity_id=node)))
    task = wait_for(lambda: (t := client.get_task(job, task_id)).state == "completed" and t, f"task {task_id}")
    out = b"".join(client.download_task_file(job, task_id, "stdout.txt")).decode(errors="replace")
    err = b"".join(client.download_task_file(job, task_id, "stderr.txt")).decode(errors="replace")
    assert task.execution_info.exit_code == 0, (out, err)
    return task, out


def test_a_shoal_container_is_readable_and_writable_from_two_nodes(client: Any, container: tuple[str, str],
                                                                    server: ShoalServer) -> None:
    first, second = _settled(client, "blob", 2)
    assert (first.state, second.state) == ("idle", "idle"), (first.errors, second.errors)
    _, out = _run(client, "mounts", 'echo "$AZ_BATCH_NODE_MOUNTS_DIR"; '
                  'cat "$AZ_BATCH_NODE_MOUNTS_DIR/data/before.txt"; mkdir -p "$AZ_BATCH_NODE_MOUNTS_DIR/data/out" && '
                  'echo "written by $AZ_BATCH_NODE_ID" > "$AZ_BATCH_NODE_MOUNTS_DIR/data/out/result.txt"', first.id)
    assert out.splitlines() == ["/mnt/batch/tasks/fsmounts", "uploaded before"]
    # The other node reads it at once (nonadmin tasks read too), and it is a blob of the container.
    _, out = _run(client, "mounts", 'cat "$AZ_BATCH_NODE_MOUNTS_DIR/data/out/result.txt" '
                  '"$AZ_BATCH_NODE_MOUNTS_DIR/data/before.txt"', second.id, admin=False)
    assert out.splitlines() == [f"written by {first.id}", "uploaded before"]
    response = requests.get(_blob_url(container[1], "out/result.txt"), verify=server.ca)
    assert response.status_code == 200 and response.text.strip() == f"written by {first.id}"
    # Id-mapped: the node's root wrote it as the host's root, not as the node's unprivileged host range.
    assert (server.state_dir / "containers" / container[0] / "out" / "result.txt").stat().st_uid == 0


def test_a_link_left_in_the_mount_path_fails_the_mount_at_the_next_boot(client: Any) -> None:
    [node] = _settled(client, "deep", 1)
    assert node.state == "idle", node.errors
    # The node's root swaps a directory of the mount path for a link to the host's /etc, then reboots.
    _run(client, "deep", 'cd "$AZ_BATCH_NODE_MOUNTS_DIR" && test -f deep/data/before.txt && mv deep moved && '
         "ln -s /etc deep", node.id)
    client.begin_reboot_node("deep", node.id, BatchNodeRebootOptions(node_reboot_kind="requeue"),
                             polling_interval=1)  # not waited for: the poller waits for a usable node
    node = wait_for(lambda: (n := client.get_node("deep", node.id)).state == "unusable" and n, "unusable node")
    [error] = node.errors
    assert error.code == "MountConfigurationError"
    assert "/mnt/batch/tasks/fsmounts/deep/data" in error.message and "not a directory" in error.message


def test_a_wrong_sas_key_makes_the_node_unusable_naming_the_container(client: Any, container: tuple[str, str]) -> None:
    [node] = _settled(client, "badsas", 1)
    assert node.state == "unusable"
    [error] = node.errors
    assert error.code == "MountConfigurationError"
    assert f"'{container[0]}'" in error.message and "sasKey" in error.message


def test_an_nfs_mount_without_the_kernel_client_makes_the_node_unusable(client: Any) -> None:
    with open("/proc/filesystems") as f:
        if "nfs" in f.read():
            pytest.skip("this host kernel has an NFS client")
    [node] = _settled(client, "nfs", 1)
    assert node.state == "unusable"
    [error] = node.errors
    assert error.code == "MountConfigurationError"
    assert "no NFS client" in error.message and "/mnt/batch/tasks/fsmounts/shared" in error.message
    assert {d.name for d in error.error_details} >= {"MountPath", "Reason"}


@pytest.mark.parametrize(("mount", "prop"), [
    (_blob_mount("data", "sig=x", "../../escape"), "relativeMountPath"),
    (_blob_mount("data", "sig=x", "/etc"), "relativeMountPath"),
    (bm.MountConfiguration(azure_blob_file_system_configuration=bm.AzureBlobFileSystemConfiguration(
        account_name="someoneelse", container_name="data", sas_key="sig=x", relative_mount_path="d")), "accountName"),
])
def test_a_mount_shoal_cannot_honour_is_refused_naming_the_property(client: Any, mount: Any, prop: str) -> None:
    with pytest.raises(HttpResponseError) as refused:
        client.create_pool(_pool(f"bad-{uuid.uuid4().hex[:6]}", 0, [mount]))
    assert refused.value.status_code == 400
    assert prop in str(refused.value)
