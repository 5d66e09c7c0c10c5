"""Autoscale through azure-batch and azure-mgmt-batch: formulas run unchanged on the pool's live metrics, at
the pool's interval, with the service clock moved forward instead of waiting (operator fault injection)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.batch.models import (
    AutoScaleSettings,
    DeploymentConfiguration,
    ImageReference,
    Pool,
    ScaleSettings,
    VirtualMachineConfiguration,
)

from batch_fixtures import NODE_AGENT, create_account, prepare_image, wait_for
from harness import ShoalServer
from shoal.azure import Shoal

# Grow to 3 nodes while tasks are pending, back to 0 when none are (Azure's pending-tasks pattern).
FORMULA = """
$pending = $PendingTasks.GetSample(1);
$TargetDedicatedNodes = len($pending) > 0 && max($pending) > 0 ? 3 : 0;
$NodeDeallocationOption = taskcompletion;
"""


def vmc(image_id: str) -> Any:
    return bm.VirtualMachineConfiguration(image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image_id),
                                          node_agent_sku_id=NODE_AGENT)


def test_pending_tasks_grow_a_pool_and_idleness_shrinks_it(own_server: ShoalServer) -> None:
    shoal = Shoal.from_env_json(own_server.env)
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="auto", vm_size="standard_d2s_v3", enable_auto_scale=True, auto_scale_formula=FORMULA,
        auto_scale_evaluation_interval=timedelta(minutes=5), task_slots_per_node=4,
        virtual_machine_configuration=vmc(image.version_id)))
    pool = wait_for(lambda: (p := client.get_pool("auto")).auto_scale_run is not None and p, "first evaluation")
    assert pool.enable_auto_scale and pool.auto_scale_run.error is None
    assert "$TargetDedicatedNodes=0" in pool.auto_scale_run.results
    assert pool.auto_scale_evaluation_interval == timedelta(minutes=5)
    with pytest.raises(HttpResponseError) as info:  # autoscale pools are not resized by hand
        client.begin_resize_pool("auto", bm.BatchPoolResizeOptions(target_dedicated_nodes=1),
                                 polling_interval=1).result()
    assert info.value.status_code == 409

    client.create_job(bm.BatchJobCreateOptions(id="work", pool_info=bm.BatchPoolInfo(pool_id="auto")))
    client.create_tasks("work", [bm.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sh -c 'sleep 0.1'")
                                 for i in range(200)])
    try:
        own_server.cli("faults", "set", "--clock-offset", str(330))  # the next evaluation is due
        wait_for(lambda: client.get_pool("auto").current_dedicated_nodes == 3, "grown to 3 nodes", timeout=120)
        run = client.get_pool("auto").auto_scale_run
        assert "$TargetDedicatedNodes=3" in run.results and "$NodeDeallocationOption=taskcompletion" in run.results
        wait_for(lambda: client.get_job_task_counts("work").task_counts.completed == 200, "tasks done",
                 timeout=300)
        own_server.cli("faults", "set", "--clock-offset", str(330 + 360))  # one more interval, nothing pending
        wait_for(lambda: (p := client.get_pool("auto")).current_dedicated_nodes == 0
                 and p.allocation_state == "steady", "shrunk to 0", timeout=120)
    finally:
        own_server.cli("faults", "clear")
    assert client.get_job_task_counts("work").task_counts.succeeded == 200


def test_autoscale_requests_and_errors(shoal: Shoal) -> None:
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    with pytest.raises(HttpResponseError) as info:  # a syntax error is refused up front, with its position
        client.create_pool(bm.BatchPoolCreateOptions(
            id="bad", vm_size="standard_d2s_v3", enable_auto_scale=True,
            auto_scale_formula="$TargetDedicatedNodes = 1 +;", virtual_machine_configuration=vmc(image.version_id)))
    assert info.value.status_code == 400 and info.value.error.code == "AutoScalingFormulaSyntaxError"
    assert "column" in info.value.error.message
    client.create_pool(bm.BatchPoolCreateOptions(id="fixed", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
                                                 virtual_machine_configuration=vmc(image.version_id)))
    with pytest.raises(HttpResponseError) as info:  # evaluate needs autoscale enabled
        client.evaluate_pool_auto_scale("fixed", bm.BatchPoolEvaluateAutoScaleOptions(
            auto_scale_formula="$TargetDedicatedNodes = 1;"))
    assert info.value.status_code == 409
    for interval in (timedelta(minutes=4), timedelta(hours=169)):
        with pytest.raises(HttpResponseError) as info:
            client.enable_pool_auto_scale("fixed", bm.BatchPoolEnableAutoScaleOptions(
                auto_scale_formula="$TargetDedicatedNodes = 0;", auto_scale_evaluation_interval=interval))
        assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"
    client.enable_pool_auto_scale("fixed", bm.BatchPoolEnableAutoScaleOptions(
        auto_scale_formula="$TargetDedicatedNodes = 0;", auto_scale_evaluation_interval=timedelta(minutes=5)))
    assert client.get_pool("fixed").enable_auto_scale

    run = client.evaluate_pool_auto_scale("fixed", bm.BatchPoolEvaluateAutoScaleOptions(
        auto_scale_formula="$x = 2; $TargetDedicatedNodes = $x * 2;"))
    assert run.error is None and "$TargetDedicatedNodes=4" in run.results and "$x=2" in run.results
    assert client.get_pool("fixed").target_dedicated_nodes == 0  # evaluated, not applied
    bad = client.evaluate_pool_auto_scale("fixed", bm.BatchPoolEvaluateAutoScaleOptions(
        auto_scale_formula="$TargetDedicatedNodes = max(;"))
    assert bad.error is not None and bad.error.code and "column" in bad.error.message
    assert {v.name for v in bad.error.error_values or []} >= {"Line", "Column"}

    client.disable_pool_auto_scale("fixed")
    assert not client.get_pool("fixed").enable_auto_scale
    client.begin_resize_pool("fixed", bm.BatchPoolResizeOptions(target_dedicated_nodes=0),
                             polling_interval=1).result()


def test_management_plane_autoscale(shoal: Shoal) -> None:
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    mgmt = shoal.batch_mgmt_client()
    pool = mgmt.pool.create(image.group, account.name, "mauto", Pool(
        vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
            virtual_machine_configuration=VirtualMachineConfiguration(
                image_reference=ImageReference(id=image.version_id), node_agent_sku_id=NODE_AGENT)),
        scale_settings=ScaleSettings(auto_scale=AutoScaleSettings(formula="$TargetDedicatedNodes = 1;",
                                                                  evaluation_interval=timedelta(minutes=5)))))
    assert pool.scale_settings.auto_scale.formula == "$TargetDedicatedNodes = 1;"
    got = wait_for(lambda: (p := mgmt.pool.get(image.group, account.name, "mauto")).current_dedicated_nodes == 1
                   and p, "autoscaled to 1")
    assert "$TargetDedicatedNodes=1" in got.auto_scale_run.results
    off = mgmt.pool.disable_auto_scale(image.group, account.name, "mauto")
    assert off.scale_settings.auto_scale is None and off.scale_settings.fixed_scale.target_dedicated_nodes == 1
