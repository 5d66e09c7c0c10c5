"""Inbound NAT pools through the official clients: refusals on both planes, and the endpoints nodes report."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from shoal.azure import Shoal

PATH = "networkConfiguration.endpointConfiguration.inboundNATPools"
HOST = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")


@pytest.fixture(scope="module")
def setup(shoal: Shoal) -> tuple[Any, Any, str]:
    """(the account, a data-plane client, the resource group)."""
    group = f"nat-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    return account, shoal.batch_client(account.account_endpoint), group




def nat(name: str, backend: int, start: int, end: int, **kw: Any) -> bm.BatchInboundNatPool:
    return bm.BatchInboundNatPool(name=name, protocol="tcp", backend_port=backend, frontend_port_range_start=start,
                                  frontend_port_range_end=end, **kw)


def pool_with(pool_id: str, *nat_pools: bm.BatchInboundNatPool, nodes: int = 0) -> bm.BatchPoolCreateOptions:
    return bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST,
                                                                     node_agent_sku_id=NODE_AGENT),
        network_configuration=bm.NetworkConfiguration(endpoint_configuration=bm.BatchPoolEndpointConfiguration(
            inbound_nat_pools=list(nat_pools))))


def test_bad_inbound_nat_pools_are_refused_with_the_property_named_and_no_pool_is_made(
        setup: tuple[Any, Any, str]) -> None:
    _, client, _ = setup
    allow = bm.NetworkSecurityGroupRule(priority=150, access="allow", source_address_prefix="*")
    cases = [
        ([nat(f"p{i}", 1000 + i, 1000 + 100 * i, 1099 + 100 * i) for i in range(6)], PATH, "at most 5"),
        ([nat("ssh", 22, 15000, 15099), nat("web", 80, 15050, 15149)], f"{PATH}[1].frontendPortRangeStart",
         "must not overlap"),
        ([nat("ssh", 22, 50000, 50099)], f"{PATH}[0].frontendPortRangeStart", "reserved by Batch"),
        ([nat("ssh", 22, 15000, 15010)], f"{PATH}[0].frontendPortRangeEnd", "at least 40 ports"),
        ([nat("ssh", 29876, 15000, 15099)], f"{PATH}[0].backendPort", "reserved by Batch"),
        ([nat("ssh-", 22, 15000, 15099)], f"{PATH}[0].name", "ending with a letter, digit or underscore"),
        ([nat("ssh", 22, 15000, 15099, network_security_group_rules=[allow])],  # (they would not be enforced)
         f"{PATH}.networkSecurityGroupRules", "not supported by Shoal"),
    ]
    for nat_pools, prop, reason in cases:
        with pytest.raises(HttpResponseError) as info:
            client.create_pool(pool_with("natbad", *nat_pools, nodes=1))
        err = info.value.error
        assert info.value.status_code == 400 and err.code == "InvalidPropertyValue", (prop, err)
        values = {d.code: d.message for d in err.details}
        assert values.get("PropertyName") == prop, values
        assert reason in err.message and prop in err.message, err.message
    assert "natbad" not in [p.id for p in client.list_pools()]
    with pytest.raises(ResourceNotFoundError):
        client.get_pool("natbad")


def test_nodes_report_distinct_frontend_ports_from_each_nat_pool_and_reuse_them(setup: tuple[Any, Any, str]) -> None:
    _, client, _ = setup
    client.create_pool(pool_with("natpool", nat("ssh", 22, 15000, 15099),
                                 nat("web.v2", 8080, 20000, 20039), nodes=3))
    pool = client.get_pool("natpool")
    got = pool.network_configuration.endpoint_configuration.inbound_nat_pools
    assert [(n.name, n.protocol, n.backend_port) for n in got] == [("ssh", "tcp", 22), ("web.v2", "tcp", 8080)]

    def idle(count: int) -> list[Any] | None:
        nodes = list(client.list_nodes("natpool"))
        return nodes if len(nodes) == count and all(n.state == "idle" for n in nodes) else None

    nodes = wait_for(lambda: idle(3), "3 idle nodes")
    ports = {}
    for node in nodes:
        endpoints = node.endpoint_configuration.inbound_endpoints
        assert [e.backend_port for e in endpoints] == [22, 8080]
        ssh, web = endpoints
        index = ssh.frontend_port - 15000
        assert ssh.name == f"ssh.{index}" and web.name == f"web.v2.{index}" and web.frontend_port == 20000 + index
        assert all(e.protocol == "tcp" and e.public_ip_address and e.public_fqdn for e in endpoints)
        ports[node.id] = (ssh.frontend_port, web.frontend_port)
        assert client.get_node("natpool", node.id).endpoint_configuration.inbound_endpoints == endpoints
    assert sorted(ports.values()) == [(15000, 20000), (15001, 20001), (15002, 20002)]

    # A node that leaves frees its ports for the next node; the others keep theirs.
    leaving = next(n for n, p in ports.items() if p == (15001, 20001))
    client.begin_remove_nodes("natpool", bm.BatchNodeRemoveOptions(node_ids=[leaving]), polling_interval=1).result()
    wait_for(lambda: client.get_pool("natpool").allocation_state == "steady" and idle(2), "2 nodes")
    client.begin_resize_pool("natpool", bm.BatchPoolResizeOptions(target_dedicated_nodes=3), polling_interval=1
                             ).result()
    after = {n.id: (n.endpoint_configuration.inbound_endpoints[0].frontend_port,
                    n.endpoint_configuration.inbound_endpoints[1].frontend_port) for n in wait_for(lambda: idle(3),
                                                                                                   "3 idle nodes")}
    assert leaving not in after
    assert {k: v for k, v in after.items() if k in ports} == {k: v for k, v in ports.items() if k != leaving}
    assert sorted(after.values()) == [(15000, 20000), (15001, 20001), (15002, 20002)]
    client.begin_delete_pool("natpool", polling_interval=1).result()


def test_management_plane_refuses_a_reserved_backend_port(shoal: Shoal, setup: tuple[Any, Any, str]) -> None:
    from azure.mgmt.batch.models import (
        DeploymentConfiguration,
        ImageReference,
        InboundNatPool,
        NetworkConfiguration,
        NetworkSecurityGroupRule,
        Pool,
        PoolEndpointConfiguration,
        VirtualMachineConfiguration,
    )

    account, _, group = setup
    mgmt = shoal.batch_mgmt_client()

    def pool(backend: int, rules: list[NetworkSecurityGroupRule] | None = None) -> Pool:
        return Pool(vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
            virtual_machine_configuration=VirtualMachineConfiguration(
                image_reference=ImageReference(publisher="shoal", offer="host", sku="host", version="latest"),
                node_agent_sku_id=NODE_AGENT)),
            network_configuration=NetworkConfiguration(endpoint_configuration=PoolEndpointConfiguration(
                inbound_nat_pools=[InboundNatPool(
                    name="ssh", protocol="TCP", backend_port=backend, frontend_port_range_start=15000,
                    frontend_port_range_end=15100, network_security_group_rules=rules)])))

    # NAT-pool NSG rules would not be enforced: refused on this plane as on the data plane.
    with pytest.raises(HttpResponseError) as info:
        mgmt.pool.create(group, account.name, "mgmtnat", pool(22, [NetworkSecurityGroupRule(
            priority=150, access="Allow", source_address_prefix="*")]))
    assert info.value.status_code == 400 and "networkSecurityGroupRules" in info.value.error.message
    with pytest.raises(HttpResponseError) as info:
        mgmt.pool.create(group, account.name, "mgmtnat", pool(29877))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"
    details = {d.code: d.message for d in info.value.error.details}
    assert details["PropertyName"] == f"{PATH}[0].backendPort"
    assert "29876 and 29877 are reserved by Batch" in info.value.error.message
    with pytest.raises(ResourceNotFoundError):
        mgmt.pool.get(group, account.name, "mgmtnat")

    made = mgmt.pool.create(group, account.name, "mgmtnat", pool(22))
    nat_pool = made.network_configuration.endpoint_configuration.inbound_nat_pools[0]
    assert (nat_pool.name, nat_pool.protocol, nat_pool.backend_port) == ("ssh", "TCP", 22)
    mgmt.pool.begin_delete(group, account.name, "mgmtnat").result()


def test_nat_port_ranges_cap_the_pool_size(setup: tuple[Any, Any, str]) -> None:
    _, client, _ = setup
    # Every node needs a frontend port in every range: 40 ports leave room for 40 nodes.
    with pytest.raises(HttpResponseError) as info:
        client.create_pool(pool_with("natcap", nat("ssh", 22, 30000, 30039), nat("web", 80, 31000, 31999), nodes=41))
    assert info.value.status_code == 400 and "room for 40 nodes" in info.value.error.message
    assert "natcap" not in [p.id for p in client.list_pools()]
    client.create_pool(pool_with("natcap", nat("ssh", 22, 30000, 30039), nodes=0))
    with pytest.raises(HttpResponseError) as info:
        client.begin_resize_pool("natcap", bm.BatchPoolResizeOptions(target_dedicated_nodes=30,
                                                                     target_low_priority_nodes=11),
                                 polling_interval=1).result()
    assert info.value.status_code == 400 and "room for 40 nodes" in info.value.error.message
    client.begin_delete_pool("natcap", polling_interval=1).result()
