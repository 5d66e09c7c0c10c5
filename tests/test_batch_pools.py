"""Batch accounts, pools and nodes through azure-mgmt-batch, azure-batch 15 and the seed's REST call."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from azure.batch import models as bm
from azure.batch.models._models import BatchNodeRebootOptions  # not exported by azure-batch 15.1
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from batch_fixtures import LOCATION, NODE_AGENT, PreparedImage, create_account, prepare_image, wait_for
from harness import ShoalServer
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def image(shoal: Shoal) -> PreparedImage:
    return prepare_image(shoal)


@pytest.fixture(scope="module")
def account(shoal: Shoal, image: PreparedImage) -> Any:
    return create_account(shoal, image.group)




def arm(server: ShoalServer, shoal: Shoal, method: str, path: str, **kw: Any) -> requests.Response:
    token = shoal.credential().get_token("https://management.azure.com/.default").token
    return requests.request(method, server.base_url + path, headers={"Authorization": f"Bearer {token}"},
                            verify=server.ca, timeout=60, **kw)


def test_the_seeds_rest_call_creates_a_pool_whose_nodes_see_the_image(server: ShoalServer, shoal: Shoal,
                                                                       image: PreparedImage, account: Any) -> None:
    path = (f"/subscriptions/{shoal.subscription_id}/resourceGroups/{image.group}/providers/Microsoft.Batch/"
            f"batchAccounts/{account.name}/pools/seedpool?api-version=2020-03-01")
    body = {"properties": {"vmSize": "STANDARD_D2S_V3", "deploymentConfiguration": {"virtualMachineConfiguration": {
        "imageReference": {"id": image.image_id}, "nodeAgentSkuId": NODE_AGENT}}}}
    r = arm(server, shoal, "PUT", path, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"]
    pool = r.json()
    assert pool["properties"]["deploymentConfiguration"]["virtualMachineConfiguration"]["imageReference"]["id"] == \
        image.image_id
    assert pool["properties"]["allocationState"] == "Steady"

    # Grow it with a start task that uses the image's software and data disk.
    patch = {"properties": {
        "scaleSettings": {"fixedScale": {"targetDedicatedNodes": 2, "resizeTimeout": "PT15M"}},
        "startTask": {"commandLine": "/bin/sh -c '/opt/shoal-app/run ok; cat /datadisks/lun0/reference.txt; "
                                     "echo $AZ_BATCH_POOL_ID $AZ_BATCH_NODE_ID'",
                      "waitForSuccess": True, "userIdentity": {"autoUser": {"elevationLevel": "Admin"}}}}}
    r = arm(server, shoal, "PATCH", path, json=patch)
    assert r.status_code == 200, r.text
    client = shoal.batch_client(account.account_endpoint)
    wait_for(lambda: client.get_pool("seedpool").allocation_state == "steady", "steady")
    nodes = wait_for(lambda: [n for n in client.list_nodes("seedpool") if n.state == "idle"] or None
                     if len([n for n in client.list_nodes("seedpool") if n.state == "idle"]) == 2 else None,
                     "2 idle nodes")
    for node in nodes:
        assert node.start_task_info.exit_code == 0
        out = b"".join(client.download_node_file("seedpool", node.id, "startup/stdout.txt")).decode()
        assert "shoal-app-1.0 ok" in out and "reference-data" in out and f"seedpool {node.id}" in out
    got = arm(server, shoal, "GET", path).json()
    assert got["properties"]["currentDedicatedNodes"] == 2
    assert got["properties"]["resizeOperationStatus"]["targetDedicatedNodes"] == 2


def test_mgmt_sdk_accounts_keys_and_pools(shoal: Shoal, image: PreparedImage) -> None:
    from azure.mgmt.batch.models import (
        BatchAccountRegenerateKeyParameters,
        DeploymentConfiguration,
        FixedScaleSettings,
        ImageReference,
        Pool,
        ScaleSettings,
        VirtualMachineConfiguration,
    )

    mgmt = shoal.batch_mgmt_client()
    acct = create_account(shoal, image.group)
    assert acct.account_endpoint.endswith(f"/batch/{acct.name}")
    assert acct.pool_allocation_mode == "BatchService"
    assert acct.name in [a.name for a in mgmt.batch_account.list_by_resource_group(image.group)]
    assert acct.name in [a.name for a in mgmt.batch_account.list()]
    keys = mgmt.batch_account.get_keys(image.group, acct.name)
    new = mgmt.batch_account.regenerate_key(image.group, acct.name, BatchAccountRegenerateKeyParameters(
        key_name="Primary"))
    assert new.primary != keys.primary and new.secondary == keys.secondary

    pool = mgmt.pool.create(image.group, acct.name, "mgmtpool", Pool(
        vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
            virtual_machine_configuration=VirtualMachineConfiguration(
                image_reference=ImageReference(id=image.version_id), node_agent_sku_id=NODE_AGENT)),
        scale_settings=ScaleSettings(fixed_scale=FixedScaleSettings(target_dedicated_nodes=1))))
    assert pool.allocation_state in ("Resizing", "Steady")
    with pytest.raises(ResourceExistsError):
        mgmt.pool.create(image.group, acct.name, "mgmtpool", Pool(vm_size="STANDARD_D2S_V3"),
                         match_condition=MatchConditions.IfMissing)
    wait_for(lambda: mgmt.pool.get(image.group, acct.name, "mgmtpool").allocation_state == "Steady", "steady")
    updated = mgmt.pool.update(image.group, acct.name, "mgmtpool", Pool(
        scale_settings=ScaleSettings(fixed_scale=FixedScaleSettings(target_dedicated_nodes=3))))
    assert updated.allocation_state == "Resizing"
    wait_for(lambda: mgmt.pool.get(image.group, acct.name, "mgmtpool").current_dedicated_nodes == 3, "3 nodes")
    assert [p.name for p in mgmt.pool.list_by_batch_account(image.group, acct.name)] == ["mgmtpool"]
    mgmt.pool.begin_delete(image.group, acct.name, "mgmtpool").result()
    with pytest.raises(ResourceNotFoundError):
        mgmt.pool.get(image.group, acct.name, "mgmtpool")
    mgmt.batch_account.begin_delete(image.group, acct.name).result()
    with pytest.raises(ResourceNotFoundError):
        mgmt.batch_account.get(image.group, acct.name)


def test_batch_client_gallery_pool_resize_reboot_remove_delete(shoal: Shoal, image: PreparedImage,
                                                                account: Any) -> None:
    client = shoal.batch_client(account.account_endpoint)
    assert any(i.node_agent_sku_id == NODE_AGENT for i in client.list_supported_images())
    client.create_pool(bm.BatchPoolCreateOptions(
        id="galpool", vm_size="standard_d2s_v3", target_dedicated_nodes=2,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    with pytest.raises(ResourceExistsError):
        client.create_pool(bm.BatchPoolCreateOptions(
            id="GALPOOL", vm_size="standard_d2s_v3", virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
                node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: client.get_pool("galpool").allocation_state == "steady", "initial sizing")
    client.begin_resize_pool("galpool", bm.BatchPoolResizeOptions(target_dedicated_nodes=4),
                             polling_interval=1).result()
    pool = client.get_pool("galpool")
    assert pool.allocation_state == "steady" and pool.current_dedicated_nodes == 4
    nodes = list(client.list_nodes("galpool"))
    assert len(nodes) == 4
    wait_for(lambda: all(n.state == "idle" for n in client.list_nodes("galpool")), "idle nodes")
    first = nodes[0].id
    client.begin_reboot_node("galpool", first, BatchNodeRebootOptions(node_reboot_kind="requeue"),
                             polling_interval=1).result()
    wait_for(lambda: client.get_node("galpool", first).state == "idle", "rebooted node idle")
    client.begin_remove_nodes("galpool", bm.BatchNodeRemoveOptions(node_ids=[first]), polling_interval=1).result()
    remaining = {n.id for n in client.list_nodes("galpool")}
    assert first not in remaining and len(remaining) == 3
    assert client.get_pool("galpool").target_dedicated_nodes == 3
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}
    assert counts["galpool"].dedicated.total == 3
    client.begin_delete_pool("galpool", polling_interval=1).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_pool("galpool")


def test_resize_conflicts_stop_resize_and_failing_start_task(shoal: Shoal, image: PreparedImage,
                                                             account: Any) -> None:
    client = shoal.batch_client(account.account_endpoint)
    vmc = bm.VirtualMachineConfiguration(image_reference=bm.BatchVmImageReference(
        virtual_machine_image_id=image.definition_id), node_agent_sku_id=NODE_AGENT)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="failing", vm_size="standard_d2s_v3", target_dedicated_nodes=1, virtual_machine_configuration=vmc,
        start_task=bm.BatchStartTask(command_line="/bin/sh -c 'echo broken >&2; exit 1'", wait_for_success=True,
                                     max_task_retry_count=1)))
    # The initial sizing counts as a resize: another resize while it runs is a conflict.
    with pytest.raises(ResourceExistsError) as conflict:
        client.begin_resize_pool("failing", bm.BatchPoolResizeOptions(target_dedicated_nodes=5),
                                 polling_interval=1).result()
    assert conflict.value.status_code == 409
    node = wait_for(lambda: next((n for n in client.list_nodes("failing") if n.state == "starttaskfailed"), None),
                    "starttaskfailed")
    assert node.start_task_info.exit_code == 1 and node.start_task_info.retry_count == 1
    assert node.start_task_info.failure_info.category == "usererror"
    err = b"".join(client.download_node_file("failing", node.id, "startup/stderr.txt")).decode()
    assert "broken" in err

    with pytest.raises(HttpResponseError) as info:
        client.create_pool(bm.BatchPoolCreateOptions(
            id="tooquick", vm_size="standard_d2s_v3", target_dedicated_nodes=1, virtual_machine_configuration=vmc,
            resize_timeout=__import__("datetime").timedelta(minutes=2)))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"


def test_shared_key_auth(shoal: Shoal, image: PreparedImage, account: Any) -> None:
    from azure.core.credentials import AzureNamedKeyCredential

    keys = shoal.batch_mgmt_client().batch_account.get_keys(image.group, account.name)
    good = shoal.batch_client(account.account_endpoint, credential=AzureNamedKeyCredential(account.name,
                                                                                          keys.primary))
    assert isinstance([p.id for p in good.list_pools()], list)
    bad = shoal.batch_client(account.account_endpoint, credential=AzureNamedKeyCredential(
        account.name, __import__("base64").b64encode(b"x" * 64).decode()))
    with pytest.raises(HttpResponseError) as info:
        list(bad.list_pools())
    assert info.value.status_code == 403 and info.value.error.code == "AuthenticationFailed"
    # Custom-image pools need Entra ID: Shared Key is refused with a clear message.
    with pytest.raises(HttpResponseError) as info:
        good.create_pool(bm.BatchPoolCreateOptions(
            id=f"sk{uuid.uuid4().hex[:6]}", vm_size="standard_d2s_v3",
            virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
                node_agent_sku_id=NODE_AGENT)))
    assert info.value.status_code == 403 and "Entra ID" in info.value.error.message
    assert LOCATION


def test_the_management_plane_refuses_what_the_data_plane_refuses(server: ShoalServer, shoal: Shoal,
                                                                  image: PreparedImage, account: Any) -> None:
    path = (f"/subscriptions/{shoal.subscription_id}/resourceGroups/{image.group}/providers/Microsoft.Batch/"
            f"batchAccounts/{account.name}/pools/refused?api-version=2024-07-01")
    vmc = {"imageReference": {"id": image.image_id}, "nodeAgentSkuId": NODE_AGENT}
    for extra, name in (
            ({"extensions": [{"name": "x", "publisher": "p", "type": "t"}]}, "virtualMachineConfiguration.extensions"),
            ({"windowsConfiguration": {"enableAutomaticUpdates": False}},
             "virtualMachineConfiguration.windowsConfiguration")):
        body = {"properties": {"vmSize": "STANDARD_D2S_V3",
                               "deploymentConfiguration": {"virtualMachineConfiguration": {**vmc, **extra}}}}
        r = arm(server, shoal, "PUT", path, json=body)
        assert r.status_code == 400 and name in r.text and "not supported by Shoal" in r.text, r.text
    r = arm(server, shoal, "GET", path)
    assert r.status_code == 404, r.text  # nothing was stored
