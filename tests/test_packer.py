"""The seed's Packer route: Packer's ``azure-arm`` builder (Debian's packer 1.6.6, JSON template) builds a managed
image against Shoal through ``shoal serve --proxy-port`` (``HTTPS_PROXY`` and ``SSL_CERT_FILE`` set to Shoal's
CA; Packer talks to management.azure.com and login.microsoftonline.com as it always does), with a ``shell``
provisioner over SSH; then a Batch pool from that image runs a task that sees what the provisioner installed.

Packer on its own does: a temporary resource group, a template deployment (VNet, subnet, NSG, public IP, NIC,
VM), SSH at the public IP, the provisioner, deallocate, generalize, the managed image from the VM, deletion of
the deployment and of the temporary group. CI installs packer (``.ci/run``); without it the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.resource.resources.models import ResourceGroup

from harness import ShoalServer, free_port
from image_helpers import pool_task_output
from shoal.azure import Shoal

pytestmark = pytest.mark.skipif(
    shutil.which("packer") is None,
    reason="packer is not installed (apt-get install packer: Debian's 1.6.6; .ci/run installs it)")
LOCATION = "westus"


@pytest.fixture(scope="module")
def proxied() -> Iterator[ShoalServer]:
    srv = ShoalServer(extra_args=["--proxy-port", str(free_port())]).start()
    yield srv
    srv.cleanup()


def proxy_port(srv: ShoalServer) -> int:
    return int(srv.extra_args[srv.extra_args.index("--proxy-port") + 1])


def template(env: dict[str, Any], group: str, image: str, *, inline: list[str],
             vm_size: str = "Standard_DS1_v2") -> dict[str, Any]:
    """A Packer 1.6.6 JSON template as the azure-arm builder's documentation writes it, on Shoal's Debian base."""
    return {
        "builders": [{
            "type": "azure-arm",
            "client_id": env["clientId"], "client_secret": env["clientSecret"],
            "tenant_id": env["tenantId"], "subscription_id": env["subscriptionId"],
            "managed_image_name": image, "managed_image_resource_group_name": group,
            "os_type": "Linux", "image_publisher": "debian", "image_offer": "debian-12", "image_sku": "12",
            "location": LOCATION, "vm_size": vm_size,
        }],
        "provisioners": [{
            "type": "shell", "inline": inline,
            "execute_command": "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'",
        }],
    }


def packer_build(srv: ShoalServer, path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ARM_"))}
    env.update({"HTTPS_PROXY": f"http://127.0.0.1:{proxy_port(srv)}", "SSL_CERT_FILE": srv.ca,
                "CHECKPOINT_DISABLE": "1", "PACKER_LOG": "1", "PACKER_LOG_PATH": str(cwd / "packer.log"),
                "PACKER_CACHE_DIR": str(cwd / "cache"), "HOME": str(cwd), "NO_PROXY": ""})
    return subprocess.run(["packer", "build", "-color=false", str(path)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)


def test_packer_azure_arm_builds_a_managed_image_and_a_pool_runs_from_it(proxied: ShoalServer,
                                                                        tmp_path: Path) -> None:
    shoal = Shoal.from_env_json(proxied.env)
    group = "packer-images"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    path = tmp_path / "debian-hello.json"
    path.write_text(json.dumps(template(proxied.env, group, "debian-hello", inline=[
        "apt-get update -qq", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello >/dev/null",
        "mkdir -p /opt/app && echo built-by-packer > /opt/app/ORIGIN", "hello"]), indent=1))
    done = packer_build(proxied, path, tmp_path)
    log = (tmp_path / "packer.log").read_text() if (tmp_path / "packer.log").exists() else ""
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}\n{log[-6000:]}"
    assert "Hello, world!" in done.stdout  # the provisioner's output, over SSH
    assert "ManagedImageName: debian-hello" in done.stdout

    image = shoal.compute_client().images.get(group, "debian-hello")
    assert image.storage_profile.os_disk.os_state == "Generalized"
    assert image.source_virtual_machine is not None and "pkr-Resource-Group-" in image.source_virtual_machine.id
    temporary = image.source_virtual_machine.id.split("/")[4]
    with pytest.raises(ResourceNotFoundError):  # Packer deleted its temporary group (and the VM in it)
        shoal.resource_client().resource_groups.get(temporary)

    stdout, _ = pool_task_output(shoal, group, image.id, "/bin/sh -c 'hello && cat /opt/app/ORIGIN'")
    assert stdout == "Hello, world!\nbuilt-by-packer\n", stdout
