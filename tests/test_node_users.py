"""Remote access to compute nodes: node users (add, replace, delete, expiry) and remote login settings, through
azure-batch and az batch; ``ssh -p port user@address`` logs in through the pool's default SSH endpoint (frontend
port 50000+ on the pool's public address, to the node's own sshd)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm
from azure.batch.models._models import BatchNodeRebootOptions  # not exported by azure-batch 15.1
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from conftest import AzCli
from harness import ShoalServer
from shoal.azure import Shoal

HOST = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")
pytestmark = pytest.mark.skipif(shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists(),
                                reason="OpenSSH (client and server) is not installed")


def keypair(directory: Path, name: str) -> tuple[Path, str]:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True)
    return key, (directory / f"{name}.pub").read_text().strip()


def ssh(key: Path, user: str, login: Any, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-i", str(key), "-p", str(login.remote_login_port), "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                           f"{user}@{login.remote_login_ip_address}", command],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def setup(shoal: Shoal) -> tuple[Any, Any, str, list[Any]]:
    """(the account, a data-plane client, the resource group, the pool's two idle nodes)."""
    group = f"users-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="remote", vm_size="standard_d2s_v3", target_dedicated_nodes=2,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST,
                                                                     node_agent_sku_id=NODE_AGENT)))
    nodes = wait_for(lambda: (ns := list(client.list_nodes("remote"))) and len(ns) == 2
                     and all(n.state == "idle" for n in ns) and ns, "two idle nodes")
    return account, client, group, nodes


def test_ssh_with_a_key_through_the_default_ssh_endpoint(setup: tuple[Any, Any, str, list[Any]],
                                                        tmp_path: Path) -> None:
    _, client, _, nodes = setup
    a, b = nodes
    # Azure's default SSH endpoint: frontend ports 50000+ on the pool's public address, backend port 22.
    endpoint = a.endpoint_configuration.inbound_endpoints[0]
    assert endpoint.name.startswith("SSHRule.") and endpoint.backend_port == 22 and endpoint.frontend_port >= 50000
    key, public = keypair(tmp_path, "alice")
    client.create_node_user("remote", a.id, bm.BatchNodeUserCreateOptions(name="alice", ssh_public_key=public))
    login = client.get_node_remote_login_settings("remote", a.id)
    assert (login.remote_login_ip_address, login.remote_login_port) == (endpoint.public_ip_address,
                                                                       endpoint.frontend_port)
    done = ssh(key, "alice", login, "hostname; id -un; touch /mnt/batch/tasks/shared/alice-was-here; "
               "sudo -n true && echo sudo-ok || echo no-sudo")
    assert done.returncode == 0, done.stderr
    hostname, user, sudo = done.stdout.split()
    assert user == "alice" and sudo == "no-sudo"
    # It is that node: the file is in its shared directory, not in the other node's.
    assert "shared/alice-was-here" in {f.name for f in client.list_node_files("remote", a.id, recursive=True)}
    assert "shared/alice-was-here" not in {f.name for f in client.list_node_files("remote", b.id, recursive=True)}
    # The other node is another machine (its own hostname); alice is not a user there.
    other = client.get_node_remote_login_settings("remote", b.id)
    assert other.remote_login_port != login.remote_login_port
    assert ssh(key, "alice", other, "true").returncode != 0

    # An admin can sudo without a password; its password is set too.
    admin_key, admin_public = keypair(tmp_path, "root-ish")
    client.create_node_user("remote", b.id, bm.BatchNodeUserCreateOptions(
        name="boss", is_admin=True, ssh_public_key=admin_public, password="Sh0al-secret!"))
    done = ssh(admin_key, "boss", other, "hostname; sudo -n id -u")
    assert done.returncode == 0, done.stderr
    other_hostname, uid = done.stdout.split()
    assert uid == "0" and other_hostname != hostname

    # Replace: the new key works, the old one no longer does.
    new_key, new_public = keypair(tmp_path, "alice2")
    client.replace_node_user("remote", a.id, "alice", bm.BatchNodeUserReplaceOptions(ssh_public_key=new_public))
    assert ssh(new_key, "alice", login, "id -un").stdout.strip() == "alice"
    assert ssh(key, "alice", login, "true").returncode != 0

    # Delete: no more access; deleting again is NodeUserNotFound.
    client.delete_node_user("remote", a.id, "alice")
    assert ssh(new_key, "alice", login, "true").returncode != 0
    with pytest.raises(HttpResponseError) as info:
        client.delete_node_user("remote", a.id, "alice")
    assert info.value.status_code == 404 and info.value.error.code == "NodeUserNotFound"
    client.delete_node_user("remote", b.id, "boss")


def test_bad_requests_get_azures_errors(setup: tuple[Any, Any, str, list[Any]], tmp_path: Path) -> None:
    _, client, _, nodes = setup
    _, public = keypair(tmp_path, "dup")
    client.create_node_user("remote", nodes[0].id, bm.BatchNodeUserCreateOptions(name="dup", ssh_public_key=public))
    cases = [
        (lambda: client.create_node_user("remote", nodes[0].id, bm.BatchNodeUserCreateOptions(name="dup")),
         409, "NodeUserExists"),
        (lambda: client.create_node_user("remote", nodes[0].id, bm.BatchNodeUserCreateOptions(name="root")),
         400, "InvalidPropertyValue"),
        (lambda: client.create_node_user("remote", nodes[0].id, bm.BatchNodeUserCreateOptions(
            name="k", ssh_public_key="ssh-ed25519 not-a-key")), 400, "InvalidPropertyValue"),
        (lambda: client.create_node_user("remote", nodes[0].id, bm.BatchNodeUserCreateOptions(
            name="past", expiry_time=dt.datetime(2001, 1, 1, tzinfo=dt.UTC))), 400, "InvalidPropertyValue"),
        (lambda: client.create_node_user("remote", "tvmps_nope", bm.BatchNodeUserCreateOptions(name="x")),
         404, "NodeNotFound"),
        (lambda: client.replace_node_user("remote", nodes[0].id, "ghost", bm.BatchNodeUserReplaceOptions()),
         404, "NodeUserNotFound"),
    ]
    for call, status, code in cases:
        with pytest.raises(HttpResponseError) as info:
            call()
        assert (info.value.status_code, info.value.error.code) == (status, code), info.value.message
    client.delete_node_user("remote", nodes[0].id, "dup")


def test_a_rebooting_node_refuses_users_and_its_users_log_in_after_the_reboot(
        setup: tuple[Any, Any, str, list[Any]], tmp_path: Path) -> None:
    _, client, _, nodes = setup
    key, public = keypair(tmp_path, "stays")
    client.create_node_user("remote", nodes[1].id, bm.BatchNodeUserCreateOptions(name="stays", ssh_public_key=public))
    login = client.get_node_remote_login_settings("remote", nodes[1].id)
    client.begin_reboot_node("remote", nodes[1].id, BatchNodeRebootOptions(node_reboot_kind="requeue"),
                             polling_interval=1)  # sent; not waited for
    with pytest.raises(HttpResponseError) as info:
        client.create_node_user("remote", nodes[1].id, bm.BatchNodeUserCreateOptions(name="early"))
    assert info.value.status_code == 409 and info.value.error.code in ("NodeBeingRebooted", "NodeBeingStarted")
    wait_for(lambda: client.get_node("remote", nodes[1].id).state == "idle", "the node back")
    # The node's sshd starts again at boot (with the host keys it had).
    done = wait_for(lambda: (r := ssh(key, "stays", login, "id -un")).returncode == 0 and r, "ssh after reboot",
                    timeout=30)
    assert done.stdout.strip() == "stays"
    client.delete_node_user("remote", nodes[1].id, "stays")


def test_users_expire_by_the_service_clock(server: ShoalServer, setup: tuple[Any, Any, str, list[Any]],
                                           tmp_path: Path) -> None:
    _, client, _, nodes = setup
    key, public = keypair(tmp_path, "brief")
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    client.create_node_user("remote", nodes[0].id, bm.BatchNodeUserCreateOptions(
        name="brief", ssh_public_key=public, expiry_time=expiry))
    login = client.get_node_remote_login_settings("remote", nodes[0].id)
    assert ssh(key, "brief", login, "true").returncode == 0
    server.cli("faults", "set", "--clock-offset", str(3 * 3600))  # three hours later
    try:
        wait_for(lambda: ssh(key, "brief", login, "true").returncode != 0, "the user to expire", timeout=30)
    finally:
        server.cli("faults", "clear")  # (tokens would be expired too, three hours later)
    with pytest.raises(HttpResponseError) as info:
        client.delete_node_user("remote", nodes[0].id, "brief")
    assert info.value.error.code == "NodeUserNotFound"


def test_az_batch_node_user_create_and_remote_login_settings(az: AzCli, setup: tuple[Any, Any, str, list[Any]],
                                                             tmp_path: Path) -> None:
    account, _, group, nodes = setup
    key, public = keypair(tmp_path, "azuser")
    az.run("batch", "account", "login", "-g", group, "-n", account.name)
    az.run("batch", "node", "user", "create", "--pool-id", "remote", "--node-id", nodes[0].id, "--name", "azuser",
           "--ssh-public-key", public, "--is-admin")
    settings = az.json("batch", "node", "remote-login-settings", "show", "--pool-id", "remote",
                       "--node-id", nodes[0].id)
    login = bm.BatchNodeRemoteLoginSettings(remote_login_ip_address=settings["remoteLoginIpAddress"],
                                            remote_login_port=settings["remoteLoginPort"])
    done = ssh(key, "azuser", login, "id -un; sudo -n true && echo sudo-ok")
    assert done.returncode == 0 and done.stdout.split() == ["azuser", "sudo-ok"], done.stderr
    az.run("batch", "node", "user", "delete", "--pool-id", "remote", "--node-id", nodes[0].id, "--user-name",
           "azuser", "--yes")
    assert ssh(key, "azuser", login, "true").returncode != 0
