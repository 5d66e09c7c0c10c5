"""VM sizes as Azure publishes them (Standard_DS1_v2 and the D/E/F/H/L/M/N families), the operator's own sizes
(``--vm-sizes``), and node agent SKUs past their end of life (refused unless ``--allow-eol-node-agents``)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import HardwareProfile, StorageProfile, VirtualMachine
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import HOST, LOCATION, create_account, wait_for
from harness import ShoalServer, database_of_its_own
from shoal.azure import Shoal
from shoal.core import errors
from shoal.core.catalog import Catalog
from shoal.domain.batch import node_agents, vmsizes

HOST_POOL_IMAGE = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")
EOL_IMAGE = bm.BatchVmImageReference(publisher="canonical", offer="ubuntuserver", sku="18.04-lts",
                                     version="latest")
EOL_AGENT = "batch.node.ubuntu 18.04"


# --- the table ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "cores", "memory_mb"), [
    ("STANDARD_DS1_V2", 1, 3584), ("standard_d2s_v3", 2, 8192), ("Standard_D96s_v5", 96, 393216),
    ("Standard_D15_v2", 20, 143360), ("Standard_E104ids_v5", 104, 688128), ("Standard_F72s_v2", 72, 147456),
    ("Standard_HB120rs_v3", 120, 458752), ("Standard_HC44rs", 44, 360448), ("Standard_L80s_v3", 80, 655360),
    ("Standard_M8ms", 8, 224000), ("Standard_NC4as_T4_v3", 4, 28672), ("Standard_A1_v2", 1, 2048),
])
def test_published_sizes_keep_azures_spelling_and_are_found_in_any_case(name: str, cores: int,
                                                                       memory_mb: int) -> None:
    size = vmsizes.lookup(name)
    assert (size.name.lower(), size.cores, size.memory_mb) == (name.lower(), cores, memory_mb)
    assert size.name != size.name.lower()  # Azure's own casing, e.g. Standard_DS1_v2


def test_families_the_issue_names_are_all_there() -> None:
    names = {s.name for s in vmsizes.BUILTIN}
    for prefix in ("Standard_D2_v3", "Standard_D2s_v4", "Standard_D2ds_v5", "Standard_DS1_v2", "Standard_D1_v2",
                   "Standard_E2s_v3", "Standard_E2_v5", "Standard_F2s_v2", "Standard_HB120rs_v3",
                   "Standard_L8s_v3", "Standard_M128ms", "Standard_NC6s_v3"):
        assert prefix in names
    assert len(names) >= 200


def test_ds1_v2_limits_a_machine_to_one_core_and_3_5_gib() -> None:
    assert vmsizes.machine_limits("Standard_DS1_v2") == {"cores": 1, "memoryBytes": 3584 << 20, "pids": 5120}


def test_an_unknown_size_is_refused() -> None:
    with pytest.raises(errors.InvalidPropertyValue) as info:
        vmsizes.lookup("Standard_Nope_v9")
    assert info.value.values == {"PropertyName": "vmSize", "PropertyValue": "Standard_Nope_v9"}


def test_operator_sizes_add_to_the_table_and_accept_az_list_sizes_output() -> None:
    try:
        extra = vmsizes.parse_operator_sizes({"sizes": [
            {"name": "Custom_Lab4", "vCPUs": 4, "memoryGiB": 6},
            {"maxDataDiskCount": 4, "memoryInMB": 3584, "name": "Standard_DS1_v2", "numberOfCores": 2,
             "osDiskSizeInMB": 1047552, "resourceDiskSizeInMB": 7168}]}, "sizes.json")
        vmsizes.configure(extra)
        assert vmsizes.lookup("custom_lab4") == vmsizes.VmSize("Custom_Lab4", 4, 6144)
        assert vmsizes.lookup("standard_ds1_v2").cores == 2  # the operator's entry replaces the published one
    finally:
        vmsizes.configure()
    assert vmsizes.lookup("standard_ds1_v2").cores == 1
    with pytest.raises(errors.InvalidPropertyValue):
        vmsizes.lookup("Custom_Lab4")
    for bad in ([{"name": "X1", "vCPUs": 0, "memoryGiB": 1}], [{"name": "X1", "vCPUs": 1}],
                [{"name": "X1", "vCPUs": 1, "memoryGiB": 1, "gpus": 1}], {"size": []}):
        with pytest.raises(vmsizes.VmSizesError):
            vmsizes.parse_operator_sizes(bad, "sizes.json")


def test_retired_node_agents_are_refused_unless_allowed() -> None:
    catalog = Catalog.load(os_release={"ID": "ubuntu", "VERSION_ID": "24.04"})  # host images: another agent
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(errors.InvalidPropertyValue) as info:
        node_agents.check_new_pool("batch.node.ubuntu 18.04", catalog, now)
    assert "2024-12-31" in info.value.message
    node_agents.check_new_pool("batch.node.ubuntu 22.04", catalog, now)  # retires in 2027
    node_agents.check_new_pool("batch.node.debian 12", catalog, now)  # the catalog's image: supported to 2028
    with pytest.raises(errors.InvalidPropertyValue):
        node_agents.check_new_pool("batch.node.debian 12", catalog, datetime(2028, 7, 1, tzinfo=UTC))
    try:
        node_agents.configure(allow_eol=True)
        node_agents.check_new_pool("batch.node.ubuntu 18.04", catalog, now)
    finally:
        node_agents.configure(allow_eol=False)


# --- through the SDKs -----------------------------------------------------------------------------------------

def _files(tmp: Path) -> list[str]:
    (tmp / "sizes.toml").write_text('[[sizes]]\nname = "Custom_Lab4"\nvCPUs = 4\nmemoryGiB = 6\n')
    (tmp / "catalog.json").write_text(json.dumps([{
        "publisher": "canonical", "offer": "ubuntuserver", "sku": "18.04-lts", "version": "1.0.0",
        "nodeAgentSKUId": EOL_AGENT, "verificationType": "verified", "source": "host",
        "batchSupportEndOfLife": "2024-12-31T00:00:00Z"}]))
    return ["--vm-sizes", str(tmp / "sizes.toml"), "--catalog", str(tmp / "catalog.json")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str | None) -> Iterator[ShoalServer]:
    srv = ShoalServer(database_of_its_own(database_url), extra_args=_files(tmp_path_factory.mktemp("conf"))).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def shoal(server: ShoalServer) -> Shoal:
    return Shoal.from_env_json(server.env)


@pytest.fixture(scope="module")
def client(shoal: Shoal) -> Any:
    group = f"sizes-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    return shoal.batch_client(account.account_endpoint)


def pool(client: Any, pool_id: str, vm_size: str, nodes: int = 0, *, image: Any = HOST_POOL_IMAGE,
         agent: str = "batch.node.debian 12", slots: int = 1) -> None:
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size=vm_size, target_dedicated_nodes=nodes, task_slots_per_node=slots,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=image, node_agent_sku_id=agent)))


def _memory_limits() -> set[int]:
    """The memory limits of Shoal's machines on this host (cgroup v1 or v2)."""
    found = set()
    for pattern in ("memory/shoal/**/memory.limit_in_bytes", "shoal/**/memory.max"):
        for path in Path("/sys/fs/cgroup").glob(pattern):
            with contextlib.suppress(OSError, ValueError):
                found.add(int(path.read_text().strip()))
    return found


def test_a_ds1_v2_vm_counts_one_core(shoal: Shoal) -> None:
    group = f"vm-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    compute = shoal.compute_client()
    vm = compute.virtual_machines.begin_create_or_update(group, "small", VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_DS1_v2"),
        storage_profile=StorageProfile(image_reference=HOST))).result()
    assert vm.hardware_profile.vm_size == "Standard_DS1_v2"
    usage = {u.name.value: u for u in compute.usage.list(LOCATION)}
    assert usage["cores"].current_value == 1
    compute.virtual_machines.begin_delete(group, "small").result()


def test_a_ds1_v2_pool_gets_one_core_and_3_5_gib_nodes(client: Any) -> None:
    with pytest.raises(HttpResponseError) as info:
        pool(client, "toomany", "STANDARD_DS1_V2", slots=5)  # 4 x 1 core at most
    assert info.value.error.code == "InvalidPropertyValue"
    pool(client, "ds1", "STANDARD_DS1_V2", 1, slots=4)
    wait_for(lambda: [n for n in client.list_nodes("ds1") if n.state == "idle"], "an idle DS1_v2 node")
    assert client.get_pool("ds1").vm_size.lower() == "standard_ds1_v2"
    if os.geteuid() == 0 and Path("/sys/fs/cgroup").is_dir() and _memory_limits():
        assert 3584 << 20 in _memory_limits()
    client.begin_delete_pool("ds1", polling_interval=1).result()


def test_an_unknown_size_is_refused_and_an_operator_size_accepted(client: Any) -> None:
    with pytest.raises(HttpResponseError) as info:
        pool(client, "nope", "Standard_Nope_v9")
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"
    pool(client, "lab", "custom_lab4", slots=16)  # 4 x 4 cores
    assert client.get_pool("lab").task_slots_per_node == 16
    client.begin_delete_pool("lab", polling_interval=1).result()


def test_a_pool_with_a_retired_node_agent_is_refused(client: Any) -> None:
    with pytest.raises(HttpResponseError) as info:
        pool(client, "old", "Standard_D2s_v3", image=EOL_IMAGE, agent=EOL_AGENT)
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"
    assert EOL_AGENT in str(info.value.message)


def test_an_operator_may_allow_retired_node_agents(tmp_path: Path, database_url: str | None) -> None:
    srv = ShoalServer(database_of_its_own(database_url),
                      extra_args=[*_files(tmp_path), "--allow-eol-node-agents"]).start()
    try:
        shoal = Shoal.from_env_json(srv.env)
        group = f"eol-{uuid.uuid4().hex[:6]}"
        shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
        batch = shoal.batch_client(create_account(shoal, group).account_endpoint)
        pool(batch, "old", "Standard_D2s_v3", image=EOL_IMAGE, agent=EOL_AGENT)
        assert batch.get_pool("old").virtual_machine_configuration.node_agent_sku_id == EOL_AGENT
    finally:
        srv.cleanup()
