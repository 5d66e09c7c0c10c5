"""The seed's preparation of an image the way it tells it: ``az vm create``, SSH into the VM, install software,
then ``az vm deallocate``, ``az snapshot create`` of the OS and data disks, ``az image create``, and a Batch pool
from the image whose task sees what was installed.

``az vm create`` validates and deploys a template of its own (a virtual network with a subnet, a network security
group with an SSH rule, a public IP address, a NIC and the VM): these tests go through Shoal's template deployments
and its ``Microsoft.Network`` records, and reach the VM at the public IP address az prints.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import AzCli
from image_helpers import keypair, pool_task_output, ssh, wait_for_ssh
from shoal.azure import Shoal
from shoal.core.catalog import node_agent_for_os, read_os_release

pytestmark = [pytest.mark.az,
              pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client (ssh) is not installed")]
LOCATION = "westus"


def new_group(az: AzCli) -> str:
    group = f"azvm-{uuid.uuid4().hex[:6]}"
    az.json("group", "create", "-n", group, "-l", LOCATION)
    return group


def test_az_vm_create_ssh_apt_get_snapshots_image_and_a_pool(az: AzCli, shoal: Shoal, tmp_path: Path) -> None:
    group = new_group(az)
    key, pub = keypair(tmp_path)
    vm = az.json("vm", "create", "-g", group, "-n", "vm1", "--image", "debian:debian-12:12:latest",
                 "--size", "Standard_D2s_v3", "--admin-username", "azureuser", "--ssh-key-values", str(pub),
                 "--data-disk-sizes-gb", "4")
    assert vm["powerState"] == "VM running" and vm["location"] == LOCATION
    assert vm["publicIpAddress"] and vm["privateIpAddress"], vm
    shown = az.json("vm", "show", "-g", group, "-n", "vm1")
    assert shown["hardwareProfile"]["vmSize"] == "Standard_D2s_v3"
    assert shown["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    # What az's template made, as Microsoft.Network records tied to the VM.
    nic = az.json("network", "nic", "show", "-g", group, "-n", "vm1VMNic")
    assert nic["ipConfigurations"][0]["privateIPAddress"] == vm["privateIpAddress"]
    assert nic["virtualMachine"]["id"].lower() == shown["id"].lower()
    rules = az.json("network", "nsg", "rule", "list", "-g", group, "--nsg-name", "vm1NSG")
    assert [(r["name"], r["destinationPortRange"], r["access"]) for r in rules] == [
        ("default-allow-ssh", "22", "Allow")]
    assert az.json("network", "public-ip", "show", "-g", group, "-n", "vm1PublicIP")["ipAddress"] == \
        vm["publicIpAddress"]

    # SSH in at the public address; install a package from Debian's mirror (the node network's NAT) and data.
    target = f"azureuser@{vm['publicIpAddress']}"
    wait_for_ssh(key, target)
    out = ssh(key, target, "id -un && sudo -n apt-get update -qq && "
                           "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello >/dev/null && "
                           "hello && seq 1 100 | sudo tee /datadisks/lun0/numbers.txt >/dev/null").stdout
    assert out.split("\n")[:2] == ["azureuser", "Hello, world!"], out

    # The seed's path on: deallocate, snapshots of both disks, an image from them, a pool from the image.
    az.run("vm", "deallocate", "-g", group, "-n", "vm1")
    assert az.json("vm", "get-instance-view", "-g", group, "-n", "vm1",
                   "--query", "instanceView.statuses[1].code") == "PowerState/deallocated"
    os_disk = az.json("vm", "show", "-g", group, "-n", "vm1", "--query", "storageProfile.osDisk.managedDisk.id")
    data_disk = az.json("vm", "show", "-g", group, "-n", "vm1",
                        "--query", "storageProfile.dataDisks[0].managedDisk.id")
    az.json("snapshot", "create", "-g", group, "-n", "os-snap", "--source", os_disk)
    az.json("snapshot", "create", "-g", group, "-n", "data-snap", "--source", data_disk)
    image = az.json("image", "create", "-g", group, "-n", "img", "--source", "os-snap",
                    "--data-disk-sources", "data-snap", "--os-type", "Linux")
    assert image["provisioningState"] == "Succeeded"
    stdout, _ = pool_task_output(shoal, group, image["id"],
                                 "/bin/sh -c 'hello && dpkg -s hello | grep ^Status && "
                                 "tail -1 /datadisks/lun0/numbers.txt'")
    assert stdout == "Hello, world!\nStatus: install ok installed\n100\n", stdout
    az.run("group", "delete", "-n", group, "--yes")


def test_az_vm_create_default_size_on_the_host_base_then_generalize_and_image(az: AzCli, shoal: Shoal,
                                                                              tmp_path: Path) -> None:
    """Without ``--size`` az 2.91 asks for its default, Standard_D2s_v5 (older az: Standard_DS1_v2, which the
    first test's size list also has); the host's root as the base; the other branch of the seed:
    ``az vm generalize`` and ``az image create --source <vm>``."""
    group = new_group(az)
    key, pub = keypair(tmp_path)
    vm = az.json("vm", "create", "-g", group, "-n", "vm2", "--image", "shoal:host:host:latest",
                 "--admin-username", "azureuser", "--ssh-key-values", str(pub))
    assert vm["powerState"] == "VM running", vm
    assert az.json("vm", "show", "-g", group, "-n", "vm2", "--query", "hardwareProfile.vmSize") == "Standard_D2s_v5"
    target = f"azureuser@{vm['publicIpAddress']}"
    wait_for_ssh(key, target)
    out = ssh(key, target, "sudo -n mkdir -p /opt/app && echo app-1.0 | sudo -n tee /opt/app/VERSION").stdout
    assert out == "app-1.0\n", out

    az.run("vm", "deallocate", "-g", group, "-n", "vm2")
    az.run("vm", "generalize", "-g", group, "-n", "vm2")
    image = az.json("image", "create", "-g", group, "-n", "img2", "--source", "vm2")
    assert image["storageProfile"]["osDisk"]["osState"] == "Generalized"
    stdout, _ = pool_task_output(shoal, group, image["id"], "cat /opt/app/VERSION",
                                 node_agent=node_agent_for_os(read_os_release()))
    assert stdout == "app-1.0\n"
    az.run("group", "delete", "-n", group, "--yes")


def test_a_template_deploys_network_records_with_child_resources(az: AzCli, tmp_path: Path) -> None:
    """Subnets and security rules as resources of their own (``virtualNetworks/subnets``,
    ``networkSecurityGroups/securityRules``) go through the parent's record, as the child routes do."""
    group = new_group(az)
    net = "Microsoft.Network"
    template = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "resources": [
            {"type": f"{net}/virtualNetworks", "apiVersion": "2022-01-01", "name": "vnet", "location": LOCATION,
             "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}},
            {"type": f"{net}/virtualNetworks/subnets", "apiVersion": "2022-01-01", "name": "vnet/front",
             "dependsOn": [f"[resourceId('{net}/virtualNetworks', 'vnet')]"],
             "properties": {"addressPrefix": "10.1.2.0/24"}},
            {"type": f"{net}/networkSecurityGroups", "apiVersion": "2022-01-01", "name": "nsg", "location": LOCATION,
             "properties": {}},
            {"type": f"{net}/networkSecurityGroups/securityRules", "apiVersion": "2022-01-01", "name": "nsg/ssh",
             "dependsOn": [f"[resourceId('{net}/networkSecurityGroups', 'nsg')]"],
             "properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
                            "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Allow",
                            "priority": 300, "direction": "Inbound"}},
            {"type": f"{net}/publicIPAddresses", "apiVersion": "2022-01-01", "name": "pip", "location": LOCATION,
             "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}},
            {"type": f"{net}/networkInterfaces", "apiVersion": "2022-01-01", "name": "nic", "location": LOCATION,
             "dependsOn": [f"[resourceId('{net}/virtualNetworks/subnets', 'vnet', 'front')]",
                           f"[resourceId('{net}/publicIPAddresses', 'pip')]"],
             "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
                 "subnet": {"id": f"[resourceId('{net}/virtualNetworks/subnets', 'vnet', 'front')]"},
                 "publicIPAddress": {"id": f"[resourceId('{net}/publicIPAddresses', 'pip')]"}}}]}},
        ],
        "outputs": {
            "address": {"type": "string", "value": f"[reference(resourceId('{net}/networkInterfaces', 'nic'))"
                                                   ".ipConfigurations[0].properties.privateIPAddress]"},
            "public": {"type": "string",
                       "value": f"[reference(resourceId('{net}/publicIPAddresses', 'pip')).ipAddress]"},
            "rule": {"type": "int", "value": f"[reference(resourceId('{net}/networkSecurityGroups/securityRules', "
                                             "'nsg', 'ssh')).priority]"},
        },
    }
    path = tmp_path / "net.json"
    path.write_text(json.dumps(template))
    done = az.json("deployment", "group", "create", "-g", group, "-n", "net", "--template-file", str(path))
    assert done["properties"]["provisioningState"] == "Succeeded"
    outputs = {k: v["value"] for k, v in done["properties"]["outputs"].items()}
    assert outputs["rule"] == 300 and outputs["address"] and outputs["public"]
    subnets = az.json("network", "vnet", "subnet", "list", "-g", group, "--vnet-name", "vnet")
    assert [(s["name"], s["addressPrefix"]) for s in subnets] == [("front", "10.1.2.0/24")]
    assert az.json("network", "nic", "show", "-g", group, "-n", "nic")["ipConfigurations"][0][
        "privateIPAddress"] == outputs["address"]
    rules = az.json("network", "nsg", "rule", "list", "-g", group, "--nsg-name", "nsg")
    assert [r["name"] for r in rules] == ["ssh"]
    az.run("group", "delete", "-n", group, "--yes")
