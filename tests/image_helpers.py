"""Helpers for the tests that prepare an image the seed's way (``az vm create`` + ``ssh``, Packer) and then run a
Batch pool from it: an SSH key pair, a VM body with an ``osProfile``, ``ssh``/``scp`` with retries while the VM's
sshd starts (on port 22, or on ``port``), and a pool of one node from a managed image through the management
plane (the seed's PUT) whose task output is returned."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from azure.batch import models as bm
from azure.mgmt.compute.models import (
    HardwareProfile,
    ImageReference,
    LinuxConfiguration,
    OSProfile,
    SshConfiguration,
    SshPublicKey,
    StorageProfile,
    VirtualMachine,
)

from batch_fixtures import create_account, wait_for
from shoal.azure import Shoal


def keypair(directory: Path, name: str = "id") -> tuple[Path, Path]:
    """A new ed25519 key pair without a passphrase: (private key, public key file)."""
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True)
    return key, directory / f"{name}.pub"


def vm_body(image: ImageReference, user: str, keys: list[str], password: str | None = None,
            location: str = "westus") -> VirtualMachine:
    """A Linux VM whose ``osProfile`` provisions ``user`` with these public keys (and password)."""
    return VirtualMachine(
        location=location, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=image),
        os_profile=OSProfile(admin_username=user, admin_password=password, linux_configuration=LinuxConfiguration(
            disable_password_authentication=password is None, ssh=SshConfiguration(public_keys=[
                SshPublicKey(path=f"/home/{user}/.ssh/authorized_keys", key_data=k) for k in keys]))))


def ssh_options(key: Path, port: int | None = None) -> list[str]:
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            *(["-p", str(port)] if port is not None else [])]


def ssh(key: Path, target: str, command: str, *, timeout: float = 300,
        port: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` over SSH; retried while the server does not answer yet (exit 255 before a session)."""
    proc: subprocess.CompletedProcess[str] | None = None
    for attempt in range(20):
        proc = subprocess.run(["ssh", *ssh_options(key, port), target, command], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        refused = proc.returncode == 255 and ("Connection refused" in proc.stderr or "timed out" in proc.stderr)
        if not refused or attempt == 19:
            break
        time.sleep(0.5)
    assert proc is not None
    assert proc.returncode == 0, f"ssh {target} {command!r}: {proc.returncode}\n{proc.stderr}\n{proc.stdout}"
    return proc


def wait_for_ssh(key: Path, target: str, timeout: float = 60, port: int | None = None) -> float:
    """Seconds until ``ssh target true`` succeeds."""
    start = time.monotonic()
    while True:
        proc = subprocess.run(["ssh", *ssh_options(key, port), "-o", "ConnectTimeout=2", target, "true"],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"ssh {target} did not answer in {timeout} s: {proc.stderr}")
        time.sleep(0.1)


def pool_task_output(shoal: Shoal, group: str, image_id: str, command_line: str,
                     node_agent: str = "batch.node.debian 12") -> tuple[str, str]:
    """A Batch account and a pool of one node from the managed image ``image_id`` (the management plane's pool
    PUT, as the seed does it), a job and one task running ``command_line``: (stdout, stderr) of the task."""
    from azure.mgmt.batch.models import (
        DeploymentConfiguration,
        FixedScaleSettings,
        ImageReference,
        Pool,
        ScaleSettings,
        VirtualMachineConfiguration,
    )

    account = create_account(shoal, group)
    shoal.batch_mgmt_client().pool.create(group, account.name, "p1", Pool(
        vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
            virtual_machine_configuration=VirtualMachineConfiguration(
                image_reference=ImageReference(id=image_id), node_agent_sku_id=node_agent)),
        scale_settings=ScaleSettings(fixed_scale=FixedScaleSettings(target_dedicated_nodes=1))))
    client = shoal.batch_client(account.account_endpoint)
    wait_for(lambda: [n.state for n in client.list_nodes("p1")] == ["idle"], "an idle node", timeout=300)
    job = f"j-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(id=job, pool_info=bm.BatchPoolInfo(pool_id="p1")))
    client.create_task(job, bm.BatchTaskCreateOptions(id="t1", command_line=command_line))
    task = wait_for(lambda: (t := client.get_task(job, "t1")).state == "completed" and t, "the task", timeout=300)

    def read(name: str) -> str:
        return b"".join(client.download_task_file(job, "t1", name)).decode()

    stdout, stderr = read("stdout.txt"), read("stderr.txt")
    assert task.execution_info.exit_code == 0, f"exit {task.execution_info.exit_code}: {stdout}\n{stderr}"
    return stdout, stderr
