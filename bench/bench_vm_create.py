"""The seed's image preparation, timed end to end against a fresh ``shoal serve --proxy-port``:

1. ``az vm create`` (Debian base, Standard_D2s_v3, az's own template: VNet, NSG, public IP, NIC, VM) until
   ``ssh azureuser@<publicIpAddress> true`` succeeds, broken down into az's steps (from its --debug log: the
   image look-ups, validate, the deployment until it succeeded, reading the VM back) and the wait for SSH;
2. a Packer build (Debian's packer 1.6.6, ``azure-arm``, Debian base, Standard_DS1_v2, a trivial ``shell``
   provisioner) through the proxy, broken down by Packer's own steps (from the time stamps of its log).

Target: the Packer Linux build with a trivial provisioner in under 60 s. Prints hit or miss.

    .venv/bin/python bench/bench_vm_create.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import AzCli, az_executable
from harness import ShoalServer, free_port
from image_helpers import keypair, wait_for_ssh

PACKER_TARGET_S = 60.0


def run_az_vm_create(az: AzCli, group: str, name: str, pub: Path, key: Path) -> dict[str, float]:
    start = time.monotonic()
    proc = az.run("vm", "create", "-g", group, "-n", name, "--image", "debian:debian-12:12:latest", "--size",
                  "Standard_D2s_v3", "--admin-username", "azureuser", "--ssh-key-values", str(pub), "-o", "json")
    created = time.monotonic()
    vm = json.loads(proc.stdout)
    ssh_wait = wait_for_ssh(key, f"azureuser@{vm['publicIpAddress']}")
    total = time.monotonic() - start
    deployment = az.json("deployment", "group", "list", "-g", group, "--query",
                         "[?starts_with(name, 'vm_deploy')] | [-1].name")
    steps: dict[str, float] = {}
    ops = az.json("deployment", "operation", "group", "list", "-g", group, "-n", deployment)
    for op in ops:
        props = op["properties"]
        kind = props["targetResource"]["resourceType"].split("/")[-1]
        steps[f"deploy {kind}"] = _duration(props.get("duration", "PT0S"))
    shown = az.json("deployment", "group", "show", "-g", group, "-n", deployment)
    steps["deployment (whole)"] = _duration(shown["properties"]["duration"])
    steps["az vm create (command)"] = created - start
    steps["az outside the deployment"] = (created - start) - steps["deployment (whole)"]
    steps["created -> ssh ready"] = ssh_wait
    steps["total: az vm create -> ssh ready"] = total
    return steps


def _duration(text: str) -> float:
    m = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", text)
    if not m:
        return 0.0
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60 + float(m.group(3) or 0)


PACKER_MARKERS = [  # (step name, the line of Packer's output that starts it)
    ("tokens", "Getting tokens using client secret"),
    ("resource group", "Creating resource group ..."),
    ("validate template", "Validating deployment template ..."),
    ("deploy VNet/PIP/NIC/VM", "Deploying deployment template ..."),
    ("public IP lookup", "Getting the VM's IP address ..."),
    ("wait for SSH", "Waiting for SSH to become available..."),
    ("provisioner", "Provisioning with shell script"),
    ("query VM and disks", "Querying the machine's properties ..."),
    ("power off (deallocate)", "Powering off machine ..."),
    ("generalize + capture image", "Capturing image ..."),
    ("delete deployment + group", "Removing the created Deployment object"),
]


def run_packer(srv: ShoalServer, proxy_port: int, workdir: Path, name: str) -> tuple[bool, dict[str, float]]:
    env = srv.env
    template = {"builders": [{
        "type": "azure-arm", "client_id": env["clientId"], "client_secret": env["clientSecret"],
        "tenant_id": env["tenantId"], "subscription_id": env["subscriptionId"], "managed_image_name": name,
        "managed_image_resource_group_name": "bench", "os_type": "Linux", "image_publisher": "debian",
        "image_offer": "debian-12", "image_sku": "12", "location": "westus", "vm_size": "Standard_DS1_v2"}],
        "provisioners": [{"type": "shell", "inline": ["echo provisioned > /tmp/marker"]}]}
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(template))
    log = workdir / f"{name}.log"
    penv = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ARM_"))}
    penv.update({"HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}", "SSL_CERT_FILE": srv.ca, "CHECKPOINT_DISABLE": "1",
                 "PACKER_LOG": "1", "PACKER_LOG_PATH": str(log), "HOME": str(workdir)})
    start = time.monotonic()
    proc = subprocess.run(["packer", "build", "-color=false", "-timestamp-ui", str(path)], cwd=workdir, env=penv,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    total = time.monotonic() - start
    stamps: list[tuple[str, datetime]] = []
    for line in proc.stdout.splitlines():
        m = re.match(r"^(\S+Z): (.*)$", line)
        if not m:
            continue
        when = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        for step, marker in PACKER_MARKERS:
            if marker in m.group(2) and step not in [s for s, _ in stamps]:
                stamps.append((step, when))
        if "Builds finished" in m.group(2) or "Build 'azure-arm' finished" in m.group(2):
            stamps.append(("end", when))
    steps: dict[str, float] = {}
    for (step, at), (_, nxt) in itertools.pairwise(stamps):
        steps[step] = (nxt - at).total_seconds()
    steps["total: packer build"] = total
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
    return proc.returncode == 0, steps


def table(title: str, rounds: list[dict[str, float]]) -> None:
    print(f"\n{title} (median of {len(rounds)} round(s), seconds)")
    keys: list[str] = []
    for r in rounds:
        keys += [k for k in r if k not in keys]
    for k in keys:
        values = [r[k] for r in rounds if k in r]
        print(f"  {k:<36} {statistics.median(values):7.2f}   [{', '.join(f'{v:.2f}' for v in values)}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    exe = az_executable()
    if exe is None or shutil.which("ssh") is None:
        sys.exit("needs az (make test installs .venv-az) and ssh")
    proxy = free_port()
    srv = ShoalServer(extra_args=["--proxy-port", str(proxy)]).start()
    work = Path(tempfile.mkdtemp(prefix="bench-vm-"))
    try:
        az = AzCli(exe, work / "az", srv.ca)
        az.run("cloud", "register", "-n", "Shoal", "--endpoint-resource-manager", srv.env["resourceManagerUrl"])
        az.run("cloud", "set", "-n", "Shoal")
        az.run("login", "--service-principal", "-u", srv.env["clientId"],
               f"--password={srv.env['clientSecret']}", "--tenant", srv.env["tenantId"])
        az.run("group", "create", "-n", "bench", "-l", "westus")
        key, pub = keypair(work)
        # Warm-up (not counted): the first VM imports the Debian base into this server's store.
        run_az_vm_create(az, "bench", "warm", pub, key)
        vm_rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            group = f"vm{i}"
            az.run("group", "create", "-n", group, "-l", "westus")
            vm_rounds.append(run_az_vm_create(az, group, f"vm{i}", pub, key))
        table("az vm create -> SSH ready", vm_rounds)

        if shutil.which("packer") is None:
            print("\nPacker build: SKIPPED (packer is not installed: apt-get install packer)")
            return
        packer_rounds, ok = [], True
        for i in range(args.rounds):
            good, steps = run_packer(srv, proxy, work, f"img{i}")
            ok = ok and good
            packer_rounds.append(steps)
        table("Packer build (azure-arm, Debian base, trivial shell provisioner)", packer_rounds)
        median = statistics.median(r["total: packer build"] for r in packer_rounds)
        verdict = "HIT" if ok and median < PACKER_TARGET_S else "MISS"
        print(f"\nPacker build median {median:.1f} s against the target {PACKER_TARGET_S:.0f} s: {verdict}"
              + ("" if ok else " (a build failed)"))
    finally:
        srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
