"""Rule 1 (image lifetime) and rule 4 (resize timeout bounds): deleting what a pool was made from is allowed; the
pool keeps its nodes and tasks, and only its next growth fails, with Azure's AllocationFailed."""

from __future__ import annotations

from typing import Any

import pytest
from azure.batch import models as bm
from azure.batch.models._models import BatchNodeReimageOptions  # not exported by azure-batch 15.1
from azure.core.exceptions import HttpResponseError
from azure.mgmt.batch.models import (
    DeploymentConfiguration,
    FixedScaleSettings,
    ImageReference,
    Pool,
    ScaleSettings,
    VirtualMachineConfiguration,
)

from batch_fixtures import NODE_AGENT, create_account, prepare_image, wait_for
from shoal.azure import Shoal

FAILED = "There was an error encountered while performing the last resize on the pool. Please try resizing the pool " \
         "again."


def make_pool(client: Any, pool_id: str, image_id: str, nodes: int) -> None:
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image_id),
            node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: len([n for n in client.list_nodes(pool_id) if n.state == "idle"]) == nodes, "idle nodes")


def test_deleting_the_image_of_a_pool_fails_only_its_next_growth(shoal: Shoal) -> None:
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    compute = shoal.compute_client()
    make_pool(client, "lifetime", image.version_id, 1)
    node = next(iter(client.list_nodes("lifetime")))
    job = "lifetime-job"
    client.create_job(bm.BatchJobCreateOptions(id=job, pool_info=bm.BatchPoolInfo(pool_id="lifetime")))
    client.create_task(job, bm.BatchTaskCreateOptions(id="busy", command_line="/bin/sh -c 'sleep 3; echo done'"))
    wait_for(lambda: client.get_task(job, "busy").state == "running", "running task")

    # Deleting the gallery version (and the image and snapshots it came from) is allowed while the pool uses it.
    compute.gallery_image_versions.begin_delete(image.group, "gal", "def", "1.0.0").result()
    compute.images.begin_delete(image.group, "img").result()
    compute.snapshots.begin_delete(image.group, "os-snap").result()

    client.begin_resize_pool("lifetime", bm.BatchPoolResizeOptions(target_dedicated_nodes=2),
                             polling_interval=1).result()
    pool = wait_for(lambda: (p := client.get_pool("lifetime")).allocation_state == "steady" and p, "steady")
    assert pool.current_dedicated_nodes == 1
    assert [(e.code, e.message) for e in pool.resize_errors] == [("AllocationFailed", FAILED)]
    reason = {v.name: v.value for v in pool.resize_errors[0].error_values}["Reason"]
    assert image.version_id.lower() in reason.lower()
    # The management plane shows the same failure in resizeOperationStatus.
    mgmt_pool = shoal.batch_mgmt_client().pool.get(image.group, account.name, "lifetime")
    errors = mgmt_pool.resize_operation_status.errors
    assert errors[0].code == "AllocationFailed" and image.version_id.lower() in str(errors[0].details).lower()

    # The node and its running task were not disturbed.
    done = wait_for(lambda: (t := client.get_task(job, "busy")).state == "completed" and t, "task completes")
    assert done.execution_info.exit_code == 0 and done.node_info.node_id == node.id
    assert client.get_node("lifetime", node.id).state == "idle"

    # Reimaging a node whose image is gone leaves it unusable, saying why.
    client.begin_reimage_node("lifetime", node.id, BatchNodeReimageOptions(node_reimage_option="requeue"),
                              polling_interval=1).result()
    failed = wait_for(lambda: (n := client.get_node("lifetime", node.id)).state == "unusable" and n, "unusable")
    assert failed.errors and image.version_id.lower() in failed.errors[0].message.lower()

    # Once the pool is gone, deleting what is left of the image's lineage has no consequences.
    client.begin_delete_pool("lifetime", polling_interval=1).result()
    compute.snapshots.begin_delete(image.group, "data-snap").result()
    compute.gallery_images.begin_delete(image.group, "gal", "def").result()


@pytest.mark.parametrize("timeout", ["PT4M59S", "PT1M"])
def test_resize_timeouts_below_five_minutes_are_refused(shoal: Shoal, timeout: str) -> None:
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    mgmt = shoal.batch_mgmt_client()
    with pytest.raises(HttpResponseError) as info:
        mgmt.pool.create(image.group, account.name, "short", Pool(
            vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
                virtual_machine_configuration=VirtualMachineConfiguration(
                    image_reference=ImageReference(id=image.image_id), node_agent_sku_id=NODE_AGENT)),
            scale_settings=ScaleSettings(fixed_scale=FixedScaleSettings(target_dedicated_nodes=1,
                                                                        resize_timeout=timeout))))
    assert info.value.status_code == 400 and "PT5M" in info.value.message
    assert list(mgmt.pool.list_by_batch_account(image.group, account.name)) == []
    client = shoal.batch_client(account.account_endpoint)
    with pytest.raises(HttpResponseError) as info:
        client.create_pool(bm.BatchPoolCreateOptions(
            id="short", vm_size="standard_d2s_v3", target_dedicated_nodes=1, resize_timeout=timeout,
            virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
                node_agent_sku_id=NODE_AGENT)))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"
    assert list(client.list_pools()) == []
