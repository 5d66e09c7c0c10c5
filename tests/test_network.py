"""Microsoft.Network with azure-mgmt-network against a real server: records, their errors, and what they do to
real machines (a NIC's address is the VM's, a public IP reaches the VM from the host, NSG rules filter it,
deleteOption on VM deletion), and VMs from images with their data disks."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import (
    CreationData,
    DataDisk,
    HardwareProfile,
    Image,
    ImageDataDisk,
    ImageOSDisk,
    ImageReference,
    ImageStorageProfile,
    NetworkInterfaceReference,
    NetworkProfile,
    RunCommandInput,
    Snapshot,
    StorageProfile,
    SubResource,
    VirtualMachine,
)
from azure.mgmt.network.models import (
    AddressSpace,
    IPAllocationMethod,
    NetworkInterface,
    NetworkInterfaceIPConfiguration,
    NetworkSecurityGroup,
    PublicIPAddress,
    PublicIPAddressSku,
    SecurityRule,
    Subnet,
    VirtualNetwork,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import HOST, LOCATION
from net_probes import connects, eventually
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def group(shoal: Shoal) -> str:
    name = f"net-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(name, ResourceGroup(location=LOCATION))
    return name


def _code(exc: pytest.ExceptionInfo[HttpResponseError]) -> str:
    return str(exc.value.error.code if exc.value.error else "")


def _vnet(prefix: str = "10.0.0.0/16", subnets: dict[str, str] | None = None) -> VirtualNetwork:
    return VirtualNetwork(location=LOCATION, address_space=AddressSpace(address_prefixes=[prefix]),
                          subnets=[Subnet(name=n, address_prefix=p) for n, p in (subnets or {}).items()])


def _rule(name: str, priority: int, port: str, access: str = "Allow") -> SecurityRule:
    return SecurityRule(name=name, protocol="Tcp", source_port_range="*", destination_port_range=port,
                        source_address_prefix="*", destination_address_prefix="*", access=access,
                        priority=priority, direction="Inbound")


def test_records_and_bad_input(shoal: Shoal, group: str) -> None:
    net = shoal.network_client()
    vnet = net.virtual_networks.begin_create_or_update(group, "vnet", _vnet(subnets={"default": "10.0.0.0/24"})
                                                       ).result()
    assert vnet.provisioning_state == "Succeeded"
    assert [s.name for s in vnet.subnets] == ["default"]
    assert vnet.subnets[0].id.endswith("/virtualNetworks/vnet/subnets/default")
    # subnets as child resources
    second = net.subnets.begin_create_or_update(group, "vnet", "second", Subnet(address_prefix="10.0.1.0/24")).result()
    assert second.address_prefix == "10.0.1.0/24" and second.provisioning_state == "Succeeded"
    assert sorted(s.name for s in net.subnets.list(group, "vnet")) == ["default", "second"]
    # an overlapping subnet, one outside the address space, a malformed prefix: clear 400s, never a 500
    with pytest.raises(HttpResponseError) as exc:
        net.subnets.begin_create_or_update(group, "vnet", "overlap", Subnet(address_prefix="10.0.0.128/25")).result()
    assert exc.value.status_code == 400 and _code(exc) == "NetcfgSubnetRangesOverlap"
    with pytest.raises(HttpResponseError) as exc:
        net.subnets.begin_create_or_update(group, "vnet", "outside", Subnet(address_prefix="10.9.0.0/24")).result()
    assert exc.value.status_code == 400 and _code(exc) == "NetcfgSubnetRangeOutsideVnet"
    with pytest.raises(HttpResponseError) as exc:
        net.virtual_networks.begin_create_or_update(group, "bad", _vnet(subnets={"a": "10.0.0.0/24",
                                                                                 "b": "10.0.0.0/23"})).result()
    assert exc.value.status_code == 400 and _code(exc) == "NetcfgSubnetRangesOverlap"
    with pytest.raises(HttpResponseError) as exc:
        net.subnets.begin_create_or_update(group, "vnet", "junk", Subnet(address_prefix="10.0.2.7/24")).result()
    assert exc.value.status_code == 400 and _code(exc) == "NetcfgInvalidSubnet"
    # NSG with rules inline and as children; Azure's default rules are shown
    nsg = net.network_security_groups.begin_create_or_update(group, "nsg", NetworkSecurityGroup(
        location=LOCATION, security_rules=[_rule("ssh", 1000, "22")])).result()
    assert [r.name for r in nsg.security_rules] == ["ssh"]
    assert {r.name for r in nsg.default_security_rules} >= {"AllowVnetInBound", "DenyAllInBound"}
    net.security_rules.begin_create_or_update(group, "nsg", "web", _rule("web", 1010, "8000-8100")).result()
    assert sorted(r.name for r in net.security_rules.list(group, "nsg")) == ["ssh", "web"]
    with pytest.raises(HttpResponseError) as exc:
        net.security_rules.begin_create_or_update(group, "nsg", "bad", _rule("bad", 1020, "70000")).result()
    assert exc.value.status_code == 400 and _code(exc) == "SecurityRuleInvalidPortRange"
    # public IP: a real address at once
    pip = net.public_ip_addresses.begin_create_or_update(group, "pip", PublicIPAddress(
        location=LOCATION, sku=PublicIPAddressSku(name="Standard"),
        public_ip_allocation_method=IPAllocationMethod.STATIC)).result()
    assert pip.ip_address and pip.provisioning_state == "Succeeded"
    # NIC: a missing subnet is a clear 400; a good one gets an address, and holds its subnet and public IP
    with pytest.raises(HttpResponseError) as exc:
        net.network_interfaces.begin_create_or_update(group, "nic-bad", NetworkInterface(
            location=LOCATION, ip_configurations=[NetworkInterfaceIPConfiguration(
                name="ipconfig1", subnet=Subnet(id=vnet.id + "/subnets/nope"))])).result()
    assert exc.value.status_code == 400 and _code(exc) == "InvalidResourceReference"
    nic = net.network_interfaces.begin_create_or_update(group, "nic", NetworkInterface(
        location=LOCATION, network_security_group=NetworkSecurityGroup(id=nsg.id),
        ip_configurations=[NetworkInterfaceIPConfiguration(
            name="ipconfig1", subnet=Subnet(id=second.id), public_ip_address=PublicIPAddress(id=pip.id))])).result()
    address = nic.ip_configurations[0].private_ip_address
    assert address and nic.ip_configurations[0].primary
    assert net.network_interfaces.get(group, "nic").ip_configurations[0].private_ip_address == address
    assert net.public_ip_addresses.get(group, "pip").ip_configuration.id.lower() == \
        nic.ip_configurations[0].id.lower()
    assert [c.id for c in net.subnets.get(group, "vnet", "second").ip_configurations] == \
        [nic.ip_configurations[0].id]
    for delete in (lambda: net.subnets.begin_delete(group, "vnet", "second").result(),
                   lambda: net.public_ip_addresses.begin_delete(group, "pip").result(),
                   lambda: net.network_security_groups.begin_delete(group, "nsg").result()):
        with pytest.raises(HttpResponseError) as exc:
            delete()
        assert exc.value.status_code == 400, exc.value
    assert "nic" in [n.name for n in net.network_interfaces.list(group)]
    assert "vnet" in [v.name for v in net.virtual_networks.list_all()]
    net.network_interfaces.begin_delete(group, "nic").result()
    net.subnets.begin_delete(group, "vnet", "second").result()
    net.public_ip_addresses.begin_delete(group, "pip").result()
    net.network_security_groups.begin_delete(group, "nsg").result()
    assert [s.name for s in net.virtual_networks.get(group, "vnet").subnets] == ["default"]
    net.virtual_networks.begin_delete(group, "vnet").result()
    with pytest.raises(HttpResponseError) as exc:
        net.virtual_networks.get(group, "vnet")
    assert exc.value.status_code == 404


def _run(shoal: Shoal, group: str, vm: str, script: str) -> str:
    result = shoal.compute_client().virtual_machines.begin_run_command(group, vm, RunCommandInput(
        command_id="RunShellScript", script=[script])).result()
    assert result.value[1].code == "ComponentStatus/ExitCode/0", result.value[0].message
    return str(result.value[0].message)


def test_vm_on_a_nic_public_ip_and_nsg(shoal: Shoal, group: str) -> None:
    net, compute = shoal.network_client(), shoal.compute_client()
    vnet = net.virtual_networks.begin_create_or_update(group, "vmnet", _vnet(subnets={"default": "10.0.0.0/24"})
                                                       ).result()
    nsg = net.network_security_groups.begin_create_or_update(group, "vm-nsg", NetworkSecurityGroup(
        location=LOCATION, security_rules=[_rule("ssh", 1000, "22"), _rule("web", 1010, "8080")])).result()
    pip = net.public_ip_addresses.begin_create_or_update(group, "vm-pip", PublicIPAddress(
        location=LOCATION, sku=PublicIPAddressSku(name="Standard"), public_ip_allocation_method="Static",
        delete_option="Delete")).result()
    nic = net.network_interfaces.begin_create_or_update(group, "vm-nic", NetworkInterface(
        location=LOCATION, network_security_group=NetworkSecurityGroup(id=nsg.id),
        ip_configurations=[NetworkInterfaceIPConfiguration(
            name="ipconfig1", subnet=Subnet(id=vnet.subnets[0].id),
            public_ip_address=PublicIPAddress(id=pip.id))])).result()
    private = nic.ip_configurations[0].private_ip_address
    vm = compute.virtual_machines.begin_create_or_update(group, "netvm", VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=HOST),
        network_profile=NetworkProfile(network_interfaces=[
            NetworkInterfaceReference(id=nic.id, primary=True, delete_option="Delete")]))).result()
    assert vm.network_profile.network_interfaces[0].id.lower() == nic.id.lower()
    assert net.network_interfaces.get(group, "vm-nic").virtual_machine.id.lower() == vm.id.lower()
    # the NIC's private IP is the machine's real address
    assert f"inet {private}/" in _run(shoal, group, "netvm", "ip -4 -o addr show")
    _run(shoal, group, "netvm", "setsid python3 -m http.server 8080 --bind 0.0.0.0 "
                                "</dev/null >/dev/null 2>&1 &")
    public = str(pip.ip_address)
    eventually(lambda: connects(public, 8080), "the VM's listener answers on its public IP")
    # a rule denying 8080 (before the allow rule) blocks new connections; removing it allows them again
    net.security_rules.begin_create_or_update(group, "vm-nsg", "deny-web", _rule("deny-web", 500, "8080", "Deny")
                                              ).result()
    eventually(lambda: not connects(public, 8080), "the deny rule blocks port 8080")
    net.security_rules.begin_delete(group, "vm-nsg", "deny-web").result()
    eventually(lambda: connects(public, 8080), "port 8080 answers again once the deny rule is gone")
    # without an allow rule, Azure's DenyAllInBound applies
    net.security_rules.begin_delete(group, "vm-nsg", "web").result()
    eventually(lambda: not connects(public, 8080), "DenyAllInBound blocks port 8080")
    # the NIC cannot be deleted while the VM uses it; deleting the VM deletes it and its public IP (deleteOption)
    with pytest.raises(HttpResponseError) as exc:
        net.network_interfaces.begin_delete(group, "vm-nic").result()
    assert exc.value.status_code == 400 and _code(exc) == "NicInUse"
    compute.virtual_machines.begin_delete(group, "netvm").result()
    assert "vm-nic" not in [n.name for n in net.network_interfaces.list(group)]
    assert "vm-pip" not in [p.name for p in net.public_ip_addresses.list(group)]
    assert net.network_security_groups.get(group, "vm-nsg").network_interfaces is None


def test_vm_from_image_gets_its_data_disks(shoal: Shoal, group: str) -> None:
    compute = shoal.compute_client()

    def vm(name: str, image: ImageReference, data_disks: list[DataDisk] | None) -> VirtualMachine:
        return compute.virtual_machines.begin_create_or_update(group, name, VirtualMachine(
            location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
            storage_profile=StorageProfile(image_reference=image, data_disks=data_disks))).result()

    src = vm("disksrc", HOST, [DataDisk(lun=0, create_option="Empty", disk_size_gb=4),
                               DataDisk(lun=3, create_option="Empty", disk_size_gb=4)])
    _run(shoal, group, "disksrc", "echo zero > /datadisks/lun0/data.txt && echo three > /datadisks/lun3/data.txt")
    snaps = {}
    for key, disk_id in (("os", src.storage_profile.os_disk.managed_disk.id),
                         ("0", src.storage_profile.data_disks[0].managed_disk.id),
                         ("3", src.storage_profile.data_disks[1].managed_disk.id)):
        snaps[key] = compute.snapshots.begin_create_or_update(group, f"dd-{key}", Snapshot(
            location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk_id))).result()
    image = compute.images.begin_create_or_update(group, "dd-img", Image(location=LOCATION, storage_profile=(
        ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snaps["os"].id)),
            data_disks=[ImageDataDisk(lun=int(k), snapshot=SubResource(id=snaps[k].id)) for k in ("0", "3")])))
    ).result()
    ref = ImageReference(id=image.id)
    # dataDisks omitted: the image's data disks at their LUNs, with their contents
    omitted = vm("from-img", ref, None)
    assert sorted((d.lun, d.create_option) for d in omitted.storage_profile.data_disks) == \
        [(0, "FromImage"), (3, "FromImage")]
    out = _run(shoal, group, "from-img", "cat /datadisks/lun0/data.txt /datadisks/lun3/data.txt")
    assert "zero" in out and "three" in out
    # given as FromImage entries: those, with their contents
    given = vm("from-img2", ref, [DataDisk(lun=3, create_option="FromImage")])
    assert [d.lun for d in given.storage_profile.data_disks] == [3]
    assert "three" in _run(shoal, group, "from-img2", "cat /datadisks/lun3/data.txt")
    for name in ("from-img", "from-img2", "disksrc"):
        compute.virtual_machines.begin_delete(group, name).result()
