"""Batch application packages: az uploads and activates a zip, pools and tasks that reference it run its script
through ``$AZ_BATCH_APP_PACKAGE_*``; the management plane through azure-mgmt-batch; Azure's errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from batch_fixtures import NODE_AGENT, create_account, prepare_image, wait_for
from conftest import AzCli
from shoal.azure import Shoal

pytestmark = pytest.mark.az


def _zip(path: Path, text: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("bin/hello.sh")
        info.external_attr = 0o755 << 16
        z.writestr(info, f"#!/bin/sh\necho {text} \"$@\"\n")
    return path


def _done(client: object, job: str, task: str) -> bm.BatchTask:
    return wait_for(lambda: (t := client.get_task(job, task)).state == "completed" and t,  # type: ignore[attr-defined]
                    f"task {task}", 180)


def test_packages_through_az_and_sdks(az: AzCli, shoal: Shoal, tmp_path: Path) -> None:
    image = prepare_image(shoal)
    from azure.mgmt.batch.models import AutoStorageBaseProperties

    # az asks for auto-storage before it uploads; Shoal keeps packages in its own containers whatever it names
    storage = f"/subscriptions/{shoal.subscription_id}/resourceGroups/{image.group}/providers/Microsoft.Storage/" \
              "storageAccounts/pkgs"
    account = create_account(shoal, image.group, auto_storage=AutoStorageBaseProperties(storage_account_id=storage))
    group, name = image.group, account.name
    mgmt = shoal.batch_mgmt_client()

    # az: upload a zip to the version's storageUrl and activate it (creates the application on the way)
    shown = az.json("batch", "application", "package", "create", "-g", group, "-n", name, "--application-name",
                    "my-app", "--version-name", "1.0", "--package-file", str(_zip(tmp_path / "a.zip", "v1")))
    assert shown["state"] == "Active" and shown["format"] == "zip" and shown["storageUrl"]
    az.json("batch", "application", "package", "create", "-g", group, "-n", name, "--application-name",
            "my-app", "--version-name", "2.0", "--package-file", str(_zip(tmp_path / "b.zip", "v2")))
    app = az.json("batch", "application", "set", "-g", group, "-n", name, "--application-name", "my-app",
                  "--default-version", "2.0", "--display-name", "My app")
    assert app["defaultVersion"] == "2.0" and app["displayName"] == "My app" and app["allowUpdates"] is True

    # management plane through azure-mgmt-batch
    versions = {p.name: p for p in mgmt.application_package.list(group, name, "my-app")}
    assert set(versions) == {"1.0", "2.0"} and versions["1.0"].state == "Active"
    pending = mgmt.application_package.create(group, name, "my-app", "3.0")
    assert pending.state == "Pending" and pending.storage_url and pending.storage_url_expiry
    with pytest.raises(HttpResponseError) as err:
        mgmt.application_package.activate(group, name, "my-app", "3.0", {"format": "zip"})
    assert err.value.status_code == 409
    mgmt.application_package.delete(group, name, "my-app", "3.0")
    with pytest.raises(ResourceNotFoundError):
        mgmt.application_package.get(group, name, "my-app", "3.0")
    mgmt.application.create(group, name, "other", {"properties": {"displayName": "Other", "allowUpdates": False}})
    assert {a.name for a in mgmt.application.list(group, name)} == {"my-app", "other"}
    assert mgmt.application.get(group, name, "other").allow_updates is False
    mgmt.application.delete(group, name, "other")

    # data plane: only active packages
    client = shoal.batch_client(account.account_endpoint)
    apps = list(client.list_applications())
    assert [(a.id, sorted(a.versions)) for a in apps] == [("my-app", ["1.0", "2.0"])]
    assert client.get_application("my-app").display_name == "My app"
    with pytest.raises(HttpResponseError) as err:
        client.get_application("nope")
    assert err.value.status_code == 404

    vm = bm.VirtualMachineConfiguration(
        image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
        node_agent_sku_id=NODE_AGENT)
    # a pool that references a package that does not exist is refused (409)
    with pytest.raises(HttpResponseError) as err:
        client.create_pool(bm.BatchPoolCreateOptions(
            id="bad", vm_size="standard_d2s_v3", target_dedicated_nodes=1, virtual_machine_configuration=vm,
            application_package_references=[bm.BatchApplicationPackageReference(application_id="nope")]))
    assert err.value.status_code == 409 and "InvalidApplicationPackageReferences" in str(err.value)

    # a pool with the package: every node has it before it is idle
    client.create_pool(bm.BatchPoolCreateOptions(
        id="apps", vm_size="standard_d2s_v3", target_dedicated_nodes=1, virtual_machine_configuration=vm,
        application_package_references=[bm.BatchApplicationPackageReference(application_id="my-app",
                                                                            version="1.0")]))
    wait_for(lambda: [n for n in client.list_nodes("apps") if n.state == "idle"], "an idle node", 240)
    client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="apps")))
    client.create_task("j", bm.BatchTaskCreateOptions(
        id="pool-ref", command_line="/bin/sh -c '$AZ_BATCH_APP_PACKAGE_my_app_1_0/bin/hello.sh pool'"))
    # a task-level reference to the default version (both variables), and one to a missing package
    client.create_task("j", bm.BatchTaskCreateOptions(
        id="task-ref", command_line="/bin/sh -c '$AZ_BATCH_APP_PACKAGE_my_app/bin/hello.sh task && "
                                    "$AZ_BATCH_APP_PACKAGE_my_app_2_0/bin/hello.sh again'",
        application_package_references=[bm.BatchApplicationPackageReference(application_id="my-app")]))
    client.create_task("j", bm.BatchTaskCreateOptions(
        id="missing", command_line="/bin/true",
        application_package_references=[bm.BatchApplicationPackageReference(application_id="my-app",
                                                                            version="9.9")]))
    for task_id, out in (("pool-ref", "v1 pool\n"), ("task-ref", "v2 task\nv2 again\n")):
        task = _done(client, "j", task_id)
        assert task.execution_info.exit_code == 0, task.execution_info
        assert b"".join(client.download_task_file("j", task_id, "stdout.txt")).decode() == out
    failed = _done(client, "j", "missing")
    assert failed.execution_info.result == "failure"
    assert failed.execution_info.failure_info.code == "ApplicationPackageError"

    # a package deleted after the pool was made: a new node cannot install it and is unusable
    mgmt.application_package.delete(group, name, "my-app", "1.0")
    client.begin_resize_pool("apps", bm.BatchPoolResizeOptions(target_dedicated_nodes=2))
    node = wait_for(lambda: [n for n in client.list_nodes("apps") if n.state == "unusable"], "an unusable node",
                    240)[0]
    assert node.errors[0].code == "ApplicationPackageError"
