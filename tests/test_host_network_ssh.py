"""``shoal serve --node-network host``: machines keep the host's network, so a VM's public IP address is the host's
address and every sshd (a VM's, a node's) listens on a port of the host that is its machine's own; ``ssh -p
<port> user@<host address>`` logs in to that machine. One server for the module (it is started with the option)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm
from azure.mgmt.compute.models import ImageReference, NetworkInterfaceReference, NetworkProfile
from azure.mgmt.network.models import (
    AddressSpace,
    NetworkInterface,
    NetworkInterfaceIPConfiguration,
    PublicIPAddress,
    PublicIPAddressSku,
    Subnet,
    VirtualNetwork,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from harness import ShoalServer
from image_helpers import keypair, ssh, vm_body
from shoal.azure import Shoal
from shoal.core import errors
from shoal.domain import host_ssh
from shoal.domain.batch import node_users
from shoal.domain.compute import linux_agent
from shoal.runtime import hostports
from test_deployments import client as deployments_client
from test_deployments import deployment

DEBIAN = ImageReference(publisher="debian", offer="debian-12", sku="12", version="latest")
HOST_IMAGE = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")
HOST_ADDRESS = "127.0.0.1"  # the test server listens there (ShoalServer.base_url)
needs_openssh = pytest.mark.skipif(shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists(),
                                   reason="OpenSSH (client and server) is not installed")


# --- the rules (no server) ----------------------------------------------------------------------------------------
def test_ssh_ports_are_the_lowest_free_of_the_range_and_never_a_listening_one() -> None:
    first = host_ssh.PORTS[0]
    assert first == 40022 and host_ssh.PORTS[-1] < 50000  # below Batch's NAT pool frontends (50000+)
    assert host_ssh.choose_port(set(), set()) == first
    assert host_ssh.choose_port({first}, set()) == first + 1  # another machine has it
    assert host_ssh.choose_port({first}, {first + 1, 22}) == first + 2  # something on the host listens there
    with pytest.raises(errors.AllocationFailed):
        host_ssh.choose_port(set(host_ssh.PORTS[:-1]), {host_ssh.PORTS[-1]})
    assert host_ssh.endpoint_port(None) is None
    endpoints = [{"name": "ssh.0", "frontendPort": 50000, "backendPort": 22},
                 {"name": host_ssh.ENDPOINT, "frontendPort": 40023, "backendPort": 40023}]
    assert host_ssh.endpoint_port(endpoints) == 40023


def test_sshd_gets_its_port_only_when_given_one() -> None:
    assert linux_agent.boot_script().rstrip().endswith("sshd -E /var/log/auth.log")  # port 22, as configured
    assert node_users.sshd_script().rstrip().endswith("-o PidFile=/run/sshd.pid")
    assert linux_agent.boot_script(40022).rstrip().endswith("-p 40022")
    assert node_users.sshd_script(40023).rstrip().endswith("-p 40023")


def test_listening_ports_are_read_from_proc_net(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (tmp_path / "tcp").write_text(header
                                  + "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
                                  + "   1: 0100007F:9C56 0100007F:20FB 01 00000000:00000000 00:00000000 00000000\n")
    (tmp_path / "tcp6").write_text(header + "   0: 00000000000000000000000000000000:9C57 "
                                   "00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 0\n")
    # 22 and 40023 listen; 40022 is only a connection's local port.
    assert hostports.listening_ports(tmp_path) == [22, 40023]
    assert hostports.listening_ports(tmp_path / "missing") == []


# --- a server with --node-network host ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[ShoalServer]:
    srv = ShoalServer(extra_args=["--node-network", "host"]).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def shoal(server: ShoalServer) -> Shoal:
    return Shoal.from_env_json(server.env)


@pytest.fixture(scope="module")
def group(shoal: Shoal) -> str:
    name = f"hostnet-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(name, ResourceGroup(location=LOCATION))
    shoal.network_client().virtual_networks.begin_create_or_update(name, "net", VirtualNetwork(
        location=LOCATION, address_space=AddressSpace(address_prefixes=["10.0.0.0/16"]),
        subnets=[Subnet(name="default", address_prefix="10.0.0.0/24")])).result()
    return name


def start_vm_with_public_ip(shoal: Shoal, group: str, name: str, public_key: str) -> Any:
    """What ``az vm create --ssh-key-values`` makes: a public IP on the VM's NIC. Returns the VM's poller."""
    net = shoal.network_client()
    subnet = net.subnets.get(group, "net", "default")
    pip = net.public_ip_addresses.begin_create_or_update(group, f"{name}-ip", PublicIPAddress(
        location=LOCATION, sku=PublicIPAddressSku(name="Standard"), public_ip_allocation_method="Static")).result()
    nic = net.network_interfaces.begin_create_or_update(group, f"{name}-nic", NetworkInterface(
        location=LOCATION, ip_configurations=[NetworkInterfaceIPConfiguration(
            name="ipconfig1", subnet=Subnet(id=subnet.id), public_ip_address=PublicIPAddress(id=pip.id))])).result()
    body = vm_body(DEBIAN, "azureuser", [public_key])
    body.network_profile = NetworkProfile(network_interfaces=[NetworkInterfaceReference(id=nic.id, primary=True)])
    return shoal.compute_client().virtual_machines.begin_create_or_update(group, name, body)


def ssh_port(compute: Any, group: str, vm: str) -> int:
    """The VM's SSH port, as its instance view tells it."""
    codes = [s.code for s in compute.virtual_machines.instance_view(group, vm).statuses]
    found = [int(c.rsplit("/", 1)[1]) for c in codes if c.startswith("SSH/port/")]
    assert len(found) == 1, codes
    return found[0]


@needs_openssh
def test_two_vms_answer_ssh_at_the_host_address_each_on_its_own_port(shoal: Shoal, group: str,
                                                                     tmp_path: Path) -> None:
    compute, net = shoal.compute_client(), shoal.network_client()
    key, public = keypair(tmp_path)
    pollers = {name: start_vm_with_public_ip(shoal, group, name, public.read_text().strip())
               for name in ("vm-a", "vm-b")}
    for poller in pollers.values():
        assert poller.result().provisioning_state == "Succeeded"
    ports = {name: ssh_port(compute, group, name) for name in pollers}
    assert len(set(ports.values())) == 2 and all(p in host_ssh.PORTS for p in ports.values()), ports
    for name, port in ports.items():
        address = net.public_ip_addresses.get(group, f"{name}-ip").ip_address
        assert address == HOST_ADDRESS  # nothing routes the node space's addresses: the host's is the public one
        out = ssh(key, f"azureuser@{address}", "hostname; sudo -n id -u", port=port, timeout=60).stdout.split()
        assert out == [name, "0"], out

    # The port is the VM's: it keeps it across a restart, and its sshd is back on it.
    compute.virtual_machines.begin_restart(group, "vm-a").result()
    assert ssh_port(compute, group, "vm-a") == ports["vm-a"]
    assert ssh(key, f"azureuser@{HOST_ADDRESS}", "hostname", port=ports["vm-a"], timeout=60).stdout.strip() == "vm-a"


def test_a_public_ip_made_by_a_template_is_the_host_address(shoal: Shoal, group: str) -> None:
    """``az vm create`` makes its public IP through a template deployment: that path shows the host's too."""
    pip = {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "2024-05-01", "name": "tpl-ip",
           "location": "[resourceGroup().location]", "sku": {"name": "Standard"},
           "properties": {"publicIPAllocationMethod": "Static"}}
    template = {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                "contentVersion": "1.0.0.0", "resources": [pip]}
    deployments_client(shoal).deployments.begin_create_or_update(group, "pip", deployment(template)).result()
    assert shoal.network_client().public_ip_addresses.get(group, "tpl-ip").ip_address == HOST_ADDRESS


@needs_openssh
def test_a_node_user_logs_in_through_the_remote_login_settings(shoal: Shoal, group: str, tmp_path: Path) -> None:
    client = shoal.batch_client(create_account(shoal, group).account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="hostnet", vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST_IMAGE,
                                                                     node_agent_sku_id=NODE_AGENT)))
    node = wait_for(lambda: (ns := list(client.list_nodes("hostnet"))) and ns[0].state == "idle" and ns[0],
                    "an idle node")
    key, public = keypair(tmp_path, "alice")
    client.create_node_user("hostnet", node.id, bm.BatchNodeUserCreateOptions(
        name="alice", ssh_public_key=public.read_text().strip()))
    login = client.get_node_remote_login_settings("hostnet", node.id)
    assert login.remote_login_ip_address == HOST_ADDRESS and login.remote_login_port in host_ssh.PORTS
    # The node shows the same endpoint (backend port = frontend port: its sshd listens on the host itself).
    endpoint = client.get_node("hostnet", node.id).endpoint_configuration.inbound_endpoints[-1]
    assert (endpoint.name, endpoint.public_ip_address, endpoint.frontend_port, endpoint.backend_port) == \
        (host_ssh.ENDPOINT, HOST_ADDRESS, login.remote_login_port, login.remote_login_port)

    done = ssh(key, f"alice@{login.remote_login_ip_address}", "id -un; touch /mnt/batch/tasks/shared/alice-was-here",
               port=login.remote_login_port, timeout=60)
    assert done.stdout.strip() == "alice"
    # It is that node: the file is in its shared directory.
    assert "shared/alice-was-here" in {f.name for f in client.list_node_files("hostnet", node.id, recursive=True)}
