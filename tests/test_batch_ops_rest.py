"""The rest of the Batch operations list through azure-batch: pool usage metrics, uploadbatchservicelogs, node
extensions, node deallocate/start, pool updateproperties and upgradeos (refused as Azure refuses it)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError

from batch_fixtures import NODE_AGENT, create_account, prepare_image, wait_for
from harness import ShoalServer, database_of_its_own
from shoal.azure import Shoal

POOL = "ops"
REQUEUE = bm._models.BatchNodeDeallocateOptions(node_deallocate_option="requeue")  # (not exported in 15.1)


@pytest.fixture(scope="module")
def server(database_url: str | None) -> Iterator[ShoalServer]:
    srv = ShoalServer(database_of_its_own(database_url)).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def client(server: ShoalServer) -> Any:
    shoal = Shoal.from_env_json(server.env)
    image = prepare_image(shoal)
    batch = shoal.batch_client(create_account(shoal, image.group).account_endpoint)
    batch.create_pool(bm.BatchPoolCreateOptions(
        id=POOL, vm_size="Standard_D2s_v3", target_dedicated_nodes=2,
        start_task=bm.BatchStartTask(command_line="/bin/sh -c 'echo started'", wait_for_success=True),
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    try:
        wait_for(lambda: [n.state for n in batch.list_nodes(POOL)] == ["idle", "idle"], "2 idle nodes", 120)
    except AssertionError:
        raise AssertionError([(n.state, n.errors, n.start_task_info) for n in batch.list_nodes(POOL)]) from None
    return batch


def test_node_extensions_are_the_pools_and_the_data_plane_refuses_extensions(client: Any) -> None:
    """No extension handler runs in Shoal's nodes, so a pool asking for extensions is refused (400 naming the
    property) rather than created with extensions reported as provisioned; a node lists none."""
    node = next(iter(client.list_nodes(POOL))).id
    assert list(client.list_node_extensions(POOL, node)) == []
    with pytest.raises(HttpResponseError) as err:
        client.get_node_extension(POOL, node, "missing")
    assert err.value.status_code == 404
    ext = bm.VMExtension(name="hello", publisher="Contoso", type="HelloExt", type_handler_version="1.0")
    with pytest.raises(HttpResponseError) as err:
        client.create_pool(bm.BatchPoolCreateOptions(
            id="with-ext", vm_size="Standard_D2s_v3", virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(virtual_machine_image_id="x"), node_agent_sku_id=NODE_AGENT,
                extensions=[ext])))
    assert err.value.status_code == 400 and "virtualMachineConfiguration.extensions" in str(err.value)


def test_upload_batch_service_logs_writes_the_agent_and_task_logs_to_the_container(
        server: ShoalServer, client: Any) -> None:
    name = f"logs-{uuid.uuid4().hex[:8]}"
    url = server.cli("container", "url", name, "--create").stdout.strip()
    node = next(iter(client.list_nodes(POOL))).id
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    result = client.upload_node_logs(POOL, node, bm.UploadBatchServiceLogsOptions(container_url=url,
                                                                                  start_time=since))
    assert result.virtual_directory_name.startswith(f"{POOL}/{node}/")
    assert result.number_of_files_uploaded >= 3  # the agent log, the start task's stdout.txt and stderr.txt
    root = server.state_dir / "containers" / name / result.virtual_directory_name
    uploaded = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert len(uploaded) == result.number_of_files_uploaded
    assert "shoal-agent.log" in uploaded and "startup/stdout.txt" in uploaded, uploaded
    assert (root / "startup" / "stdout.txt").read_text() == "started\n"
    assert f"node {node} of pool {POOL}" in (root / "shoal-agent.log").read_text()
    with pytest.raises(HttpResponseError) as err:  # not a Shoal container URL (no signature)
        client.upload_node_logs(POOL, node, bm.UploadBatchServiceLogsOptions(
            container_url=url.split("?")[0], start_time=since))
    assert err.value.status_code == 400


def test_deallocate_then_start_a_node(client: Any) -> None:
    node = sorted(n.id for n in client.list_nodes(POOL))[1]
    client.begin_deallocate_node(POOL, node, REQUEUE, polling_interval=1).result()
    assert client.get_node(POOL, node).state == "deallocated"
    with pytest.raises(HttpResponseError) as err:  # only an idle or running node can be deallocated
        client.begin_deallocate_node(POOL, node, REQUEUE, polling_interval=1).result()
    assert err.value.status_code == 409 and err.value.error.code == "OperationInvalidForCurrentState"
    client.begin_start_node(POOL, node, polling_interval=1).result()
    wait_for(lambda: client.get_node(POOL, node).state == "idle", "the started node idle", 60)
    assert client.get_node(POOL, node).start_task_info.exit_code == 0  # its start task ran again
    with pytest.raises(HttpResponseError) as err:  # only a deallocated node can be started
        client.begin_start_node(POOL, node, polling_interval=1).result()
    assert err.value.status_code == 409


def test_update_properties_replaces_the_updatable_properties(client: Any) -> None:
    client.replace_pool_properties(POOL, bm.BatchPoolReplaceOptions(
        start_task=bm.BatchStartTask(command_line="/bin/true"),
        application_package_references=[], metadata=[bm.BatchMetadataItem(name="k", value="v")]))
    pool = client.get_pool(POOL)
    assert pool.start_task.command_line == "/bin/true" and [(m.name, m.value) for m in pool.metadata] == [("k", "v")]
    client.replace_pool_properties(POOL, bm.BatchPoolReplaceOptions(
        application_package_references=[], metadata=[]))
    pool = client.get_pool(POOL)
    assert pool.start_task is None and not pool.metadata  # not given: cleared


def test_upgrade_os_is_refused_as_azure_refuses_it(server: ShoalServer, client: Any) -> None:
    from azure.core.rest import HttpRequest

    request = HttpRequest("POST", f"/pools/{POOL}/upgradeos?api-version=2024-07-01.20.0",
                          json={"targetOSVersion": "*"})
    with pytest.raises(HttpResponseError) as err:  # (this client raises for an error status)
        client.send_request(request)
    assert err.value.status_code == 409 and err.value.error.code == "PoolNotEligibleForOSVersionUpgrade"


def test_pool_usage_metrics_count_core_hours_by_vm_size_in_30_minute_intervals(
        server: ShoalServer, client: Any) -> None:
    allocated = [n.allocation_time for n in client.list_nodes(POOL)]
    # Later by the service's clock (within the access token's hour): the interval the nodes started in has ended.
    server.cli("faults", "set", "--clock-offset", "1900")
    try:
        metrics = list(client.list_pool_usage_metrics())  # the last interval that has ended
        assert len(metrics) == 1, metrics
        m = metrics[0]
        assert m.pool_id == POOL and m.vm_size.lower() == "standard_d2s_v3"
        assert m.end_time - m.start_time == dt.timedelta(minutes=30) and m.start_time.minute in (0, 30)
        node_hours = sum(max(0.0, (m.end_time - max(a, m.start_time)).total_seconds()) for a in allocated) / 3600
        assert node_hours > 0 and m.total_core_hours == pytest.approx(2 * node_hours, rel=0.01)  # 2 cores each
        wide = list(client.list_pool_usage_metrics(start_time=m.start_time - dt.timedelta(hours=2),
                                                   end_time=m.end_time))
        assert wide[-1].start_time == m.start_time and wide[-1].total_core_hours == pytest.approx(m.total_core_hours)
        assert all(w.pool_id == POOL for w in client.list_pool_usage_metrics(filter=f"poolId eq '{POOL}'"))
        assert not list(client.list_pool_usage_metrics(filter="poolId eq 'other'"))
    finally:
        server.cli("faults", "clear")
