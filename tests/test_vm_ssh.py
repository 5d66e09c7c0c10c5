"""SSH into VMs: osProfile provisions the admin user as Azure's guest agent does, the image's OpenSSH answers on
the VM's address, and generalize deprovisions (host keys and the user go).

The VMs are made with azure-mgmt-compute on the Debian 12 base (and the host's root when the host has
OpenSSH's server installed), and reached with the host's own ``ssh``/``scp``/``sftp`` at the VM's private
address, as Packer's azure-arm builder and ``ssh azureuser@<ip>`` reach a VM.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import (
    Image,
    ImageReference,
    NetworkInterfaceReference,
    NetworkProfile,
    RunCommandInput,
    SubResource,
)
from azure.mgmt.network.models import (
    AddressSpace,
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

from image_helpers import vm_body
from shoal.azure import Shoal
from shoal.core import errors
from shoal.domain.compute import linux_agent

DEBIAN = ImageReference(publisher="debian", offer="debian-12", sku="12", version="latest")
HOST = ImageReference(publisher="shoal", offer="host", sku="host", version="latest")
LOCATION = "westus"
PASSWORD = "Sh0al-secret!"

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client (ssh) is not installed")


# --- osProfile rules and the scripts (no server) ------------------------------------------------------------------
def keypair(directory: Path, name: str = "id") -> tuple[Path, str]:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True)
    return key, (directory / f"{name}.pub").read_text().strip()


def profile(user: str = "azureuser", keys: list[str] | None = None, password: str | None = None,
            disabled: bool | None = None, path: str | None = None) -> dict[str, Any]:
    linux: dict[str, Any] = {}
    if keys is not None:
        linux["ssh"] = {"publicKeys": [{"path": path or f"/home/{user}/.ssh/authorized_keys", "keyData": k}
                                       for k in keys]}
    if disabled is not None:
        linux["disablePasswordAuthentication"] = disabled
    return {"adminUsername": user, **({"adminPassword": password} if password else {}),
            **({"linuxConfiguration": linux} if linux else {})}


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_os_profile_rules_follow_azure(tmp_path: Path) -> None:
    _, pub = keypair(tmp_path)
    plan = linux_agent.plan(profile(keys=[pub], disabled=True))
    assert plan == {"adminUsername": "azureuser", "publicKeys": [pub], "disablePasswordAuthentication": True,
                    "passwordHash": None}
    assert linux_agent.plan(None) is None
    assert linux_agent.plan({"computerName": "vm"}) is None
    with_password = linux_agent.plan(profile(password=PASSWORD))
    assert with_password is not None and with_password["passwordHash"].startswith("$6$")
    assert PASSWORD not in repr(with_password)

    bad: list[tuple[dict[str, Any], str]] = [
        (profile(user="root", keys=[pub]), "adminUsername"),
        (profile(user="admin", keys=[pub]), "adminUsername"),
        (profile(user="bad name", keys=[pub]), "adminUsername"),
        (profile(user="-dash", keys=[pub]), "adminUsername"),
        (profile(user="ends.", keys=[pub]), "adminUsername"),
        (profile(user="x" * 65, keys=[pub]), "adminUsername"),
        (profile(disabled=True), "linuxConfiguration"),
        (profile(keys=[], disabled=True), "linuxConfiguration"),
        (profile(keys=["ssh-ed25519 AAAA"]), "linuxConfiguration.ssh.publicKeys.keyData"),
        (profile(keys=["not a key"]), "linuxConfiguration.ssh.publicKeys.keyData"),
        (profile(keys=[pub.replace("ssh-ed25519", "ssh-rsa", 1)]), "linuxConfiguration.ssh.publicKeys.keyData"),
        (profile(keys=[pub + "\ncommand=\"sh\" " + pub]), "linuxConfiguration.ssh.publicKeys.keyData"),
        (profile(keys=[pub], path="/root/.ssh/authorized_keys"), "linuxConfiguration.ssh.publicKeys.path"),
        (profile(password="short"), "adminPassword"),
        (profile(password="alllowercaseletters"), "adminPassword"),
        (profile(password="P@ssw0rd"), "adminPassword"),
        (profile(keys=[pub], password=PASSWORD, disabled=True), "adminPassword"),
        ({"adminPassword": PASSWORD}, "adminUsername"),
    ]
    for body, target in bad:
        with pytest.raises(errors.InvalidParameter) as info:
            linux_agent.plan(body)
        assert info.value.target == target, body


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("password", ["Sh0al-secret!", "x", "a" * 100, "ünïcödé-Pässwörd1"])
def test_password_hash_is_the_shadow_format(password: str) -> None:
    salt = "saltsaltSALT0123"
    expected = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, password], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert linux_agent.sha512_crypt(password, salt) == expected
    assert linux_agent.sha512_crypt(password) != linux_agent.sha512_crypt(password)  # a fresh salt each time


def test_scripts_quote_what_they_are_given() -> None:
    script = linux_agent.first_boot_script({"adminUsername": "azureuser", "publicKeys": ["ssh-ed25519 AAAA x'y"],
                                            "passwordHash": "$6$a$b", "disablePasswordAuthentication": False})
    assert "'ssh-ed25519 AAAA x'\"'\"'y'" in script
    assert "usermod --password '$6$a$b'" in script
    assert "PasswordAuthentication yes" in script
    assert "PasswordAuthentication no" in linux_agent.first_boot_script(
        {"adminUsername": "u1", "publicKeys": [], "passwordHash": None, "disablePasswordAuthentication": False})
    assert "userdel" in linux_agent.deprovision_script("azureuser")
    assert "userdel" not in linux_agent.deprovision_script(None)


# --- real VMs -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def group(shoal: Shoal) -> str:
    name = f"ssh-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(name, ResourceGroup(location=LOCATION))
    return name


def run(compute: Any, group: str, vm: str, *lines: str) -> str:
    result = compute.virtual_machines.begin_run_command(
        group, vm, RunCommandInput(command_id="RunShellScript", script=list(lines))).result()
    assert result.value[1].code == "ComponentStatus/ExitCode/0", result.value[0].message
    message = str(result.value[0].message)
    return message.split("[stdout]\n", 1)[1].split("\n[stderr]", 1)[0]


def address(compute: Any, group: str, vm: str) -> str:
    """The VM's private address (what its NIC would show on Azure), read inside it."""
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", run(compute, group, vm, "ip -4 -o addr show eth0"))
    assert found, "the VM has no address of its own"
    return found.group(1)


def ssh_options(key: Path) -> list[str]:
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]


def ssh(key: Path, target: str, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    for attempt in range(10):
        proc = subprocess.run(["ssh", *ssh_options(key), target, command], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        # 255 with "Connection refused": sshd not listening yet (retry); anything else is the answer.
        if proc.returncode != 255 or "Connection refused" not in proc.stderr or attempt == 9:
            break
        time.sleep(0.5)
    if check:
        assert proc.returncode == 0, f"ssh {target} {command!r}: {proc.returncode}\n{proc.stderr}"
    return proc


@needs_ssh
def test_ssh_with_the_key_scp_sftp_and_sudo(shoal: Shoal, group: str, tmp_path: Path) -> None:
    compute = shoal.compute_client()
    key, pub = keypair(tmp_path)
    vm = compute.virtual_machines.begin_create_or_update(group, "sshvm", vm_body(DEBIAN, "azureuser", [pub],
                                                                                 PASSWORD)).result()
    assert vm.provisioning_state == "Succeeded"
    assert vm.os_profile.admin_username == "azureuser" and vm.os_profile.admin_password is None
    ip = address(compute, group, "sshvm")
    target = f"azureuser@{ip}"

    out = ssh(key, target, "id -un; pwd; stat -c '%a %U' ~/.ssh ~/.ssh/authorized_keys; "
                           "sudo -n true && echo sudo-ok; sudo -n id -u").stdout.split("\n")
    assert out[:6] == ["azureuser", "/home/azureuser", "700 azureuser", "600 azureuser", "sudo-ok", "0"], out

    # Packer's shell provisioner: upload a script (scp, legacy scp and sftp), then run it with sudo.
    script = tmp_path / "provision.sh"
    script.write_text("#!/bin/sh\nset -e\necho provisioned-by-script > /etc/provisioned\n")
    for argv in (["scp", *ssh_options(key), str(script), f"{target}:/tmp/a.sh"],
                 ["scp", "-O", *ssh_options(key), str(script), f"{target}:/tmp/b.sh"]):
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    subprocess.run(["sftp", *ssh_options(key), "-b", "-", target], input=f"put {script} /tmp/c.sh\n",
                   check=True, capture_output=True, text=True, timeout=60)
    assert ssh(key, target, "cmp /tmp/a.sh /tmp/b.sh && cmp /tmp/a.sh /tmp/c.sh && chmod +x /tmp/a.sh && "
                            "sudo -n /tmp/a.sh && cat /etc/provisioned").stdout == "provisioned-by-script\n"
    scp_back = tmp_path / "back.txt"
    subprocess.run(["scp", *ssh_options(key), f"{target}:/etc/provisioned", str(scp_back)], check=True,
                   capture_output=True, timeout=60)
    assert scp_back.read_text() == "provisioned-by-script\n"

    # The password is set (as a SHA-512 crypt hash) and password logins are on, as asked.
    shadow = run(compute, group, "sshvm", "getent shadow azureuser | cut -d: -f2",
                 "sshd -T 2>/dev/null | grep -i '^passwordauthentication'")
    hashed, setting = shadow.strip().split("\n")
    assert hashed.startswith("$6$") and linux_agent.sha512_crypt(PASSWORD, hashed.split("$")[2]) == hashed
    assert setting == "passwordauthentication yes"

    # A key that was not given is refused; so is a user that was not provisioned.
    other, _ = keypair(tmp_path, "other")
    refused = ssh(other, target, "true", check=False)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    assert ssh(key, f"root@{ip}", "true", check=False).returncode == 255

    # sshd comes back after a restart (the machine's processes do not survive it).
    compute.virtual_machines.begin_restart(group, "sshvm").result()
    assert ssh(key, target, "sudo -n cat /etc/provisioned").stdout == "provisioned-by-script\n"


@needs_ssh
def test_generalize_removes_the_user_and_host_keys(shoal: Shoal, group: str, tmp_path: Path) -> None:
    compute = shoal.compute_client()
    key, pub = keypair(tmp_path)
    compute.virtual_machines.begin_create_or_update(group, "gen", vm_body(DEBIAN, "azureuser", [pub])).result()
    ip = address(compute, group, "gen")
    host_key = ssh(key, f"azureuser@{ip}", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
    assert run(compute, group, "gen", "sshd -T 2>/dev/null | grep -i '^passwordauthentication'").strip() == \
        "passwordauthentication no"
    ssh(key, f"azureuser@{ip}", "sudo -n sh -c 'echo kept > /opt/app.txt'")
    compute.virtual_machines.begin_deallocate(group, "gen").result()
    compute.virtual_machines.generalize(group, "gen")
    image = compute.images.begin_create_or_update(group, "gen-img", Image(
        location=LOCATION, source_virtual_machine=SubResource(id=compute.virtual_machines.get(group, "gen").id))
    ).result()
    assert image.provisioning_state == "Succeeded"

    # A VM from the image: what was installed is there; the old user, its keys and the host keys are not.
    key2, pub2 = keypair(tmp_path, "packer")
    compute.virtual_machines.begin_create_or_update(group, "from-gen", vm_body(
        ImageReference(id=image.id), "packer", [pub2])).result()
    ip2 = address(compute, group, "from-gen")
    refused = ssh(key, f"azureuser@{ip2}", "true", check=False)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    out = ssh(key2, f"packer@{ip2}", "cat /opt/app.txt; id azureuser >/dev/null 2>&1 || echo no-azureuser; "
                                     "ls /home; cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split("\n")
    assert out[:3] == ["kept", "no-azureuser", "packer"], out
    assert out[3] + "\n" != host_key  # host keys of its own


@needs_ssh
def test_ssh_into_a_vm_on_the_host_base(shoal: Shoal, group: str, tmp_path: Path) -> None:
    if not Path("/usr/sbin/sshd").exists() or not Path("/usr/bin/sudo").exists():
        if os.environ.get("CI"):
            pytest.fail("CI installs openssh-server and sudo on the host (.ci/run): VMs on the host base use them")
        pytest.skip("the host has no OpenSSH server or sudo (apt-get install openssh-server sudo)")
    compute = shoal.compute_client()
    key, pub = keypair(tmp_path)
    compute.virtual_machines.begin_create_or_update(group, "hostvm", vm_body(HOST, "azureuser", [pub])).result()
    ip = address(compute, group, "hostvm")
    out = ssh(key, f"azureuser@{ip}", "id -un; sudo -n id -u; hostname; cat /etc/ssh/ssh_host_ed25519_key.pub")
    user, uid, hostname, host_key = out.stdout.split("\n")[:4]
    assert (user, uid, hostname) == ("azureuser", "0", "hostvm")
    own = Path("/etc/ssh/ssh_host_ed25519_key.pub")
    assert not own.exists() or own.read_text().strip() != host_key.strip()  # never the host's own identity


@needs_ssh
def test_ssh_at_the_public_ip_through_the_nsg(shoal: Shoal, group: str, tmp_path: Path) -> None:
    """What `az vm create --ssh-key-values` makes (a NIC with a public IP, an NSG allowing 22), reached as
    `ssh azureuser@<publicIp>`; Packer's azure-arm builder connects the same way."""
    net, compute = shoal.network_client(), shoal.compute_client()
    vnet = net.virtual_networks.begin_create_or_update(group, "sshnet", VirtualNetwork(
        location=LOCATION, address_space=AddressSpace(address_prefixes=["10.0.0.0/16"]),
        subnets=[Subnet(name="default", address_prefix="10.0.0.0/24")])).result()
    nsg = net.network_security_groups.begin_create_or_update(group, "ssh-nsg", NetworkSecurityGroup(
        location=LOCATION, security_rules=[SecurityRule(
            name="default-allow-ssh", protocol="Tcp", source_port_range="*", destination_port_range="22",
            source_address_prefix="*", destination_address_prefix="*", access="Allow", priority=1000,
            direction="Inbound")])).result()
    pip = net.public_ip_addresses.begin_create_or_update(group, "ssh-pip", PublicIPAddress(
        location=LOCATION, sku=PublicIPAddressSku(name="Standard"), public_ip_allocation_method="Static")).result()
    nic = net.network_interfaces.begin_create_or_update(group, "ssh-nic", NetworkInterface(
        location=LOCATION, network_security_group=NetworkSecurityGroup(id=nsg.id),
        ip_configurations=[NetworkInterfaceIPConfiguration(
            name="ipconfig1", subnet=Subnet(id=vnet.subnets[0].id),
            public_ip_address=PublicIPAddress(id=pip.id))])).result()
    key, pub = keypair(tmp_path)
    body = vm_body(DEBIAN, "azureuser", [pub])
    body.network_profile = NetworkProfile(network_interfaces=[NetworkInterfaceReference(id=nic.id, primary=True)])
    compute.virtual_machines.begin_create_or_update(group, "pipvm", body).result()
    public = str(pip.ip_address)
    deadline = time.monotonic() + 60
    while True:  # the NSG and the public IP's NAT are published by a loop, moments after the VM is up
        proc = ssh(key, f"azureuser@{public}", "hostname; sudo -n true && echo sudo-ok", check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert proc.stdout.split() == ["pipvm", "sudo-ok"], proc.stderr


def test_bad_os_profiles_are_refused_with_azures_codes(shoal: Shoal, group: str, tmp_path: Path) -> None:
    compute = shoal.compute_client()
    cases = [(vm_body(HOST, "root", []), "adminUsername"),
             (vm_body(HOST, "azureuser", []), "linuxConfiguration"),
             (vm_body(HOST, "azureuser", ["ssh-rsa not-base64!"]), "linuxConfiguration.ssh.publicKeys.keyData"),
             (vm_body(HOST, "azureuser", [], password="weak"), "adminPassword")]
    for i, (body, target) in enumerate(cases):
        name = f"bad{i}"
        with pytest.raises(HttpResponseError) as info:
            compute.virtual_machines.begin_create_or_update(group, name, body).result()
        assert info.value.status_code == 400 and info.value.error.code == "InvalidParameter", info.value.message
        assert info.value.error.target == target
        assert name not in [v.name for v in compute.virtual_machines.list(group)]
