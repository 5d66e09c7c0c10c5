"""Batch pools in a virtual network's subnet (``networkConfiguration.subnetId``) through azure-batch and
azure-mgmt-network against a real server: nodes take the subnet's addresses (beside a VM interface's, shared by
two pools, counted against the subnet as declared), the subnet's NSG filters traffic to them for real, a subnet in
use cannot be deleted, and bad subnets are refused with the property named."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.network.models import (
    AddressSpace,
    NetworkInterface,
    NetworkInterfaceIPConfiguration,
    NetworkSecurityGroup,
    SecurityRule,
    Subnet,
    VirtualNetwork,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from net_probes import connects, eventually
from shoal.azure import Shoal

HOST = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")
ADMIN = bm.UserIdentity(auto_user=bm.AutoUserSpecification(elevation_level="admin"))


def _rule(name: str, priority: int, port: str, access: str = "Allow") -> SecurityRule:
    return SecurityRule(name=name, protocol="Tcp", source_port_range="*", destination_port_range=port,
                        source_address_prefix="*", destination_address_prefix="*", access=access,
                        priority=priority, direction="Inbound")


def _pool(client: Any, pool_id: str, subnet_id: str, nodes: int) -> None:
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST,
                                                                     node_agent_sku_id=NODE_AGENT),
        network_configuration=bm.NetworkConfiguration(subnet_id=subnet_id)))


def _refusal(call: Callable[[], Any]) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as exc:
        call()
    return exc.value


def _run(client: Any, pool: str, command: str) -> str:
    """Run one admin task on the pool (its one node) to its end; its stdout."""
    job = f"j-{uuid.uuid4().hex[:8]}"
    client.create_job(bm.BatchJobCreateOptions(id=job, pool_info=bm.BatchPoolInfo(pool_id=pool)))
    client.create_task(job, bm.BatchTaskCreateOptions(id="t", command_line=f"/bin/sh -c '{command}'",
                                                      user_identity=ADMIN))
    task = wait_for(lambda: (t := client.get_task(job, "t")).state == "completed" and t, "the task", 120)
    out = b"".join(client.download_task_file(job, "t", "stdout.txt")).decode(errors="replace")
    assert task.execution_info.exit_code == 0, (task.execution_info, out)
    return out


def test_pools_join_a_virtual_network_subnet(shoal: Shoal) -> None:
    group = f"poolnet-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    net = shoal.network_client()
    nsg = net.network_security_groups.begin_create_or_update(group, "batch-nsg", NetworkSecurityGroup(
        location=LOCATION, security_rules=[_rule("web", 1010, "8080")])).result()
    # A /29 holds 8 addresses, 3 of them usable (Azure keeps the first four and the last).
    vnet = net.virtual_networks.begin_create_or_update(group, "batchnet", VirtualNetwork(
        location=LOCATION, address_space=AddressSpace(address_prefixes=["10.20.0.0/16"]),
        subnets=[Subnet(name="nodes", address_prefix="10.20.1.0/29", network_security_group=NetworkSecurityGroup(
            id=nsg.id))])).result()
    subnet_id = vnet.subnets[0].id
    nic = net.network_interfaces.begin_create_or_update(group, "held", NetworkInterface(
        location=LOCATION, ip_configurations=[NetworkInterfaceIPConfiguration(
            name="ipconfig1", subnet=Subnet(id=subnet_id))])).result()
    held = nic.ip_configurations[0].private_ip_address
    account = create_account(shoal, group)
    client = shoal.batch_client(account.account_endpoint)

    # Bad subnets are refused, naming the property.
    missing = subnet_id.rsplit("/", 1)[0] + "/nope"
    for bad in (missing, f"/subscriptions/{uuid.uuid4()}/resourceGroups/{group}/providers/Microsoft.Network/"
                         "virtualNetworks/batchnet/subnets/nodes", "not-an-id"):
        err = _refusal(lambda bad=bad: _pool(client, f"bad-{uuid.uuid4().hex[:6]}", bad, 1))
        assert err.status_code == 400 and err.error.code == "InvalidPropertyValue", err
        assert "networkConfiguration.subnetId" in str(err), err
    elsewhere = net.virtual_networks.begin_create_or_update(group, "eastnet", VirtualNetwork(
        location="eastus", address_space=AddressSpace(address_prefixes=["10.30.0.0/16"]),
        subnets=[Subnet(name="x", address_prefix="10.30.0.0/24")])).result()
    err = _refusal(lambda: _pool(client, "east", elsewhere.subnets[0].id, 1))
    assert err.status_code == 400 and "region" in str(err), err
    job_net = bm.BatchJobCreateOptions(id="jobnet", pool_info=bm.BatchPoolInfo(pool_id="a"),
                                       network_configuration=bm.BatchJobNetworkConfiguration(
                                           subnet_id=subnet_id, skip_withdraw_from_vnet=False))
    err = _refusal(lambda: client.create_job(job_net))
    assert err.status_code == 400 and "networkConfiguration" in str(err), err

    # Two pools share the subnet with the interface: one node each fits, then the subnet is full.
    _pool(client, "a", subnet_id, 1)
    a = wait_for(lambda: (ns := list(client.list_nodes("a"))) and ns[0].state == "idle" and ns[0], "pool a's node")
    _pool(client, "b", subnet_id, 2)
    pool_b = wait_for(lambda: (p := client.get_pool("b")).allocation_state == "steady" and p, "pool b settles")
    assert pool_b.network_configuration.subnet_id == subnet_id
    assert [e.code for e in pool_b.resize_errors or []] == ["AllocationFailed"], pool_b.resize_errors
    assert "subnet" in str(pool_b.resize_errors[0].as_dict()["values"])
    b = wait_for(lambda: (ns := list(client.list_nodes("b"))) and ns[0].state == "idle" and ns[0], "pool b's node")
    addresses = {held, a.ip_address, b.ip_address}
    assert len(addresses) == 3, addresses
    served_on = ipaddress.ip_network(f"{held}/20", strict=False)
    assert all(ipaddress.ip_address(x) in served_on for x in addresses), (addresses, served_on)

    # The subnet's NSG filters traffic to the nodes: an allowed port answers, a deny rule blocks it (from the
    # host and from the other pool's node on the subnet alike), removing the rule lets it through again.
    assert "up" in _run(client, "a", "(setsid nohup python3 -m http.server 8080 --bind 0.0.0.0 > /dev/null 2>&1 "
                                     "< /dev/null &); sleep 1; echo up")
    eventually(lambda: connects(a.ip_address, 8080), "the node's listener answers through the subnet's NSG")
    probe = f"curl -s -m 3 -o /dev/null -w code=%{{http_code}} http://{a.ip_address}:8080/; true"
    assert "code=200" in _run(client, "b", probe)
    net.security_rules.begin_create_or_update(group, "batch-nsg", "deny-web", _rule("deny-web", 500, "8080", "Deny")
                                              ).result()
    eventually(lambda: not connects(a.ip_address, 8080), "the deny rule blocks port 8080")
    assert "code=000" in _run(client, "b", probe)
    net.security_rules.begin_delete(group, "batch-nsg", "deny-web").result()
    eventually(lambda: connects(a.ip_address, 8080), "port 8080 answers again once the deny rule is gone")

    # A subnet in use by pools cannot be deleted; once the pools are gone (and the interface), it can.
    err = _refusal(lambda: net.subnets.begin_delete(group, "batchnet", "nodes").result())
    assert err.status_code == 400 and err.error.code == "InUseSubnetCannotBeDeleted", err
    net.network_interfaces.begin_delete(group, "held").result()
    err = _refusal(lambda: net.virtual_networks.begin_delete(group, "batchnet").result())
    assert err.error.code == "InUseSubnetCannotBeDeleted" and "Batch pool" in str(err), err
    for pool in ("a", "b"):
        client.begin_delete_pool(pool, polling_interval=1).result()
    net.virtual_networks.begin_delete(group, "batchnet").result()
    assert "batchnet" not in [v.name for v in net.virtual_networks.list(group)]
