"""Nodes hold hostile code: what an admin task tries, and what it must still be able to do, through azure-batch.

Every task here runs on a pool from the Debian 12 marketplace base on a default (hardened) `shoal serve`: each
node in a user namespace of its own with the seccomp profile and the cut capability set, its own network
namespace and address, and cgroup limits from its VM size.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.batch import models as bm
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import LOCATION, create_account, outside_web, wait_for
from harness import REPO, ShoalServer
from shoal.azure import Shoal

DEBIAN = bm.BatchVmImageReference(publisher="debian", offer="debian-12", sku="12", version="latest")
AGENT = "batch.node.debian 12"
ADMIN = bm.UserIdentity(auto_user=bm.AutoUserSpecification(elevation_level="admin"))
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hardened nodes need root")


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory the operator shares with every node (read-only)."""
    shared = tmp_path_factory.mktemp("shared")
    shared.chmod(0o755)  # nodes see the host's files as "others" do: world-readable is what they can read
    (shared / "reference.txt").write_text("shared reference data\n")
    return shared


@pytest.fixture(scope="module")
def server(shared_dir: Path) -> Iterator[ShoalServer]:
    srv = ShoalServer(extra_args=["--share-host-dir", str(shared_dir)]).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def escape_url(server: ShoalServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The escape helper (tests/sandbox/escape.c), built static and put in a Shoal container."""
    out = tmp_path_factory.mktemp("escape") / "escape"
    subprocess.run(["cc", "-O2", "-static", "-o", str(out), str(REPO / "tests" / "sandbox" / "escape.c")], check=True)
    container = server.cli("container", "url", f"sandbox-{uuid.uuid4().hex[:8]}", "--create").stdout.strip()
    base, _, query = container.partition("?")
    url = f"{base}/escape?{query}"
    response = requests.put(url, data=out.read_bytes(), verify=server.ca, headers={"x-ms-blob-type": "BlockBlob"})
    assert response.status_code == 201, response.text
    return url


@pytest.fixture(scope="module")
def client(server: ShoalServer) -> Any:
    shoal = Shoal.from_env_json(server.env)
    group = f"sandbox-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    batch = shoal.batch_client(account.account_endpoint)
    batch.create_pool(bm.BatchPoolCreateOptions(
        id="box", vm_size="standard_d2s_v3", target_dedicated_nodes=2, task_slots_per_node=4,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=DEBIAN, node_agent_sku_id=AGENT),
        network_configuration=bm.NetworkConfiguration(endpoint_configuration=bm.BatchPoolEndpointConfiguration(
            inbound_nat_pools=[bm.BatchInboundNatPool(name="web", protocol="tcp", backend_port=8080,
                                                      frontend_port_range_start=15000,
                                                      frontend_port_range_end=15099)]))))
    wait_for(lambda: len([n for n in batch.list_nodes("box") if n.state == "idle"]) == 2, "idle nodes", 600)
    batch.create_job(bm.BatchJobCreateOptions(id="box", pool_info=bm.BatchPoolInfo(pool_id="box")))
    return batch


def run(client: Any, command: str, *, pool: str = "box", node: str | None = None, admin: bool = True,
        files: list[bm.ResourceFile] | None = None, timeout: float = 300) -> tuple[Any, str, str]:
    """Run one task to its end: (execution info, stdout, stderr)."""
    task_id = f"t-{uuid.uuid4().hex[:10]}"
    client.create_task(pool, bm.BatchTaskCreateOptions(
        id=task_id, command_line=f"/bin/sh -c '{command}'", user_identity=ADMIN if admin else None,
        resource_files=files, affinity_info=bm.BatchAffinityInfo(affinity_id=f"TVM:{node}") if node else None))
    task = wait_for(lambda: (t := client.get_task(pool, task_id)).state == "completed" and t, f"task {task_id}",
                    timeout)
    if task.execution_info.failure_info is not None and task.execution_info.exit_code is None:
        return task, "", str(task.execution_info.failure_info)  # it never ran (its resource files failed)
    out = b"".join(client.download_task_file(pool, task_id, "stdout.txt")).decode(errors="replace")
    err = b"".join(client.download_task_file(pool, task_id, "stderr.txt")).decode(errors="replace")
    return task, out, err


def nodes(client: Any, pool: str = "box") -> list[Any]:
    return sorted(client.list_nodes(pool), key=lambda n: n.id)


# --- escapes ---------------------------------------------------------------------------------------------------

def test_an_admin_task_cannot_read_or_write_host_files(client: Any, escape_url: str, server: ShoalServer) -> None:
    token = secrets.token_hex(16)
    secret = Path("/root") / f".shoal-sandbox-secret-{token[:8]}"
    secret.write_text(token)
    state_secret = server.state_dir / "host-secret.txt"
    state_secret.write_text(token)
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    disk = os.stat("/").st_dev
    script = "; ".join([
        "chmod +x escape", "./escape handles", "./escape module", f"./escape mknod {os.major(disk)} {os.minor(disk)}",
        # Every process the node can see, through its root link: the host's files are not there.
        f"for p in /proc/[0-9]*; do cat $p/root{secret} $p/root{state_secret} "
        f"$p/root{server.state_dir}/credentials.json 2>/dev/null; done",
        f"cat /proc/1/root{secret} 2>/dev/null; ls {server.state_dir} 2>/dev/null",
        # The helper that started this task runs as the host's root in the node's pid namespace: not traceable.
        "for p in $(pgrep -f \"^/.*/shoal-machine-[0-9a-f]+ join\"); do ./escape ptrace $p; done",
        "echo /tmp/core > /proc/sys/kernel/core_pattern 2>/dev/null && echo core_pattern ok "
        "|| echo core_pattern denied",
        "echo 0 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo sysctl ok || echo sysctl denied",
        "cat /proc/kcore 2>/dev/null | head -c 1 | wc -c",
        "echo finished"])
    try:
        _, out, err = run(client, script, files=[bm.ResourceFile(http_url=escape_url, file_path="escape")])
    finally:
        secret.unlink()
        state_secret.unlink()
    lines = out.splitlines()
    assert "finished" in lines, (out, err)
    assert token not in out and "clientSecret" not in out
    probes = [line for line in lines if line.split()[0] in ("name_to_handle_at", "open_by_handle_at", "finit_module",
                                                               "init_module", "mknod", "ptrace")]
    assert any(p.startswith("open_by_handle_at") for p in probes) and any(p.startswith("ptrace") for p in probes)
    assert all(not p.endswith(" ok") for p in probes), probes
    assert "core_pattern denied" in lines and "sysctl denied" in lines
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"


def test_an_admin_task_keeps_root_powers_inside_its_node(client: Any, server: ShoalServer) -> None:
    node = nodes(client)[0].id
    task, out, err = run(client, "; ".join([
        "set -e", "mkdir -p /srv/scratch", "mount -t tmpfs tmpfs /srv/scratch", "echo mounted",
        "touch /srv/owned", "chown 1000:1000 /srv/owned", "stat -c owner=%u /srv/owned",
        "apt-get update -qq", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello > /dev/null", "hello",
        "(setsid nohup sleep 1000000 > /dev/null 2>&1 < /dev/null &)", "echo started"]), node=node, timeout=600)
    assert task.execution_info.exit_code == 0, (out, err)
    assert "mounted" in out and "owner=1000" in out and "Hello, world!" in out
    later, out, err = run(client, "ps ax -o args | grep -c \"^sleep 1000000\"", node=node, admin=False)
    assert later.execution_info.exit_code == 0 and out.strip() == "1", (out, err)
    # What the task wrote belongs to the node's id range on the host, never to the host's root.
    temp = server.state_dir / "store" / "temp"
    written = next(temp.glob(f"*/batch/tasks/workitems/box/job-1/{task.id}/stdout.txt"))
    assert written.stat().st_uid >= 1 << 20


def test_the_next_task_gets_a_sound_proc_whatever_the_last_one_did(client: Any) -> None:
    node = nodes(client)[1].id
    _, out, err = run(client, "umount -l /proc; mount -t tmpfs tmpfs /proc; mount -t tmpfs tmpfs /dev; echo done",
                      node=node)
    assert "done" in out, (out, err)
    later, out, err = run(client, "ps ax | head -n 2; test -c /dev/null && echo devnull", node=node, admin=False)
    assert later.execution_info.exit_code == 0, (out, err)
    assert "PID" in out and "devnull" in out


def test_links_a_nonadmin_task_leaves_in_its_directory_are_never_followed(client: Any) -> None:
    """A nonadmin task owns its task directory. The links its first attempt leaves there for the node's root (its
    output file, its working directory) are removed or refused on the retry, never followed out of it."""
    node = nodes(client)[0].id

    def attempt_twice(first: str) -> Any:
        task_id = f"links-{uuid.uuid4().hex[:8]}"
        script = f"if [ ! -e ../first ]; then touch ../first; {first}; exit 3; fi; echo second attempt"
        client.create_task("box", bm.BatchTaskCreateOptions(
            id=task_id, command_line=f"/bin/sh -c '{script}'", constraints=bm.BatchTaskConstraints(
                max_task_retry_count=1), affinity_info=bm.BatchAffinityInfo(affinity_id=f"TVM:{node}")))
        return wait_for(lambda: (t := client.get_task("box", task_id)).state == "completed" and t, task_id, 300)

    output_link = attempt_twice("rm -f ../stdout.txt; ln -s /etc/passwd ../stdout.txt")
    assert output_link.execution_info.retry_count == 1 and output_link.execution_info.exit_code == 0
    out = b"".join(client.download_task_file("box", output_link.id, "stdout.txt")).decode()
    assert out == "second attempt\n"  # a new file took the link's place
    wd_link = attempt_twice("cd ..; rm -rf wd; ln -s /etc wd")
    assert wd_link.execution_info.retry_count == 1 and wd_link.execution_info.result == "failure"
    _, out, err = run(client, "grep -c ^root: /etc/passwd; stat -c %U:%a /etc", node=node)
    assert out.split() == ["1", "root:755"], (out, err)


# --- networks ------------------------------------------------------------------------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Iterator[str]:
    """A host outside Shoal's address space with a web server on port 8081 (its address)."""
    with outside_web(tmp_path) as url:
        yield url.split("//")[1].split(":")[0]


def test_nodes_have_networks_of_their_own(client: Any, outside: str) -> None:
    a, b = nodes(client)
    assert a.ip_address != b.ip_address
    for node in (a, b):  # both listen on the same port: each node has its own
        _task, out, err = run(client, f"mkdir -p /srv/web && echo {node.id} > /srv/web/index.html && "
                             "cd /srv/web && (setsid nohup python3 -m http.server 8080 > /dev/null 2>&1 < /dev/null &) "
                             "&& sleep 1 && echo listening", node=node.id)
        assert "listening" in out, (out, err)
    # The host's loopback services, and its other addresses, are out of reach; counted on the host's side.
    accepted: list[Any] = []
    loopback = socket.create_server(("127.0.0.1", 0))
    anywhere = socket.create_server(("0.0.0.0", 0))
    def accept(sock: socket.socket) -> None:
        # OSError: closed at the end of the test with nobody having connected, as it should be.
        with contextlib.suppress(OSError):
            accepted.append(sock.accept())

    for sock in (loopback, anywhere):
        threading.Thread(target=accept, args=(sock,), daemon=True).start()
    host_ip = subprocess.run(["ip", "-4", "route", "get", "192.168.251.2"], capture_output=True, text=True).stdout
    _, out, err = run(client, "; ".join([
        f"curl -s -m 5 -o /dev/null -w \"peer=%{{http_code}}\\n\" http://{b.ip_address}:8080/",
        f"curl -s -m 3 -o /dev/null -w \"loopback=%{{http_code}}\\n\" http://127.0.0.1:{loopback.getsockname()[1]}/",
        "gw=${AZ_BATCH_ACCOUNT_URL#https://}; gw=${gw%%:*}",
        f"curl -s -m 3 -o /dev/null -w \"gateway-other-port=%{{http_code}}\\n\" http://$gw:{anywhere.getsockname()[1]}/",
        "curl -sk -m 5 -o /dev/null -w \"shoal=%{http_code}\\n\" ${AZ_BATCH_ACCOUNT_URL%/batch/*}/healthz",
        f"curl -s -m 5 -o /dev/null -w \"outside=%{{http_code}}\\n\" http://{outside}:8081/",
        "cat /proc/net/tcp | wc -l"]), node=a.id, admin=False)
    assert "peer=200" in out and "shoal=200" in out and "outside=200" in out, (out, err)
    assert "loopback=000" in out and "gateway-other-port=000" in out, out
    assert accepted == [], host_ip
    loopback.close()
    anywhere.close()
    # An inbound NAT endpoint's frontend port on the host forwards to the node's backend port.
    endpoint = next(e for e in a.endpoint_configuration.inbound_endpoints if e.backend_port == 8080)
    got = requests.get(f"http://{endpoint.public_ip_address}:{endpoint.frontend_port}/", timeout=10)
    assert got.status_code == 200 and got.text.strip() == a.id


def test_another_pools_nodes_are_out_of_reach(client: Any, small: str) -> None:
    a, b = nodes(client)
    _, out, err = run(client, "mkdir -p /srv/web && echo here > /srv/web/index.html && cd /srv/web && "
                      "(setsid nohup python3 -m http.server 8080 > /dev/null 2>&1 < /dev/null &); sleep 1; echo up",
                      node=a.id)
    assert "up" in out, (out, err)
    probe = f"curl -s -m 3 -o /dev/null -w \"code=%{{http_code}}\\n\" http://{a.ip_address}:8080/"
    _, same, _ = run(client, probe, node=b.id, admin=False)  # the control: a node of the same pool
    _, other, err = run(client, probe, pool=small, admin=False)
    assert "code=200" in same and "code=000" in other, (same, other, err)
    other_node = nodes(client, small)[0].ip_address
    assert ipaddress.ip_network(f"{a.ip_address}/20", strict=False) != ipaddress.ip_network(f"{other_node}/20",
                                                                                           strict=False)


# --- limits ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(client: Any) -> str:
    """A one-node autoscale pool of Standard_A1_v2 (1 core, 2 GiB)."""
    client.create_pool(bm.BatchPoolCreateOptions(
        id="small", vm_size="Standard_A1_v2", enable_auto_scale=True,
        auto_scale_formula="$TargetDedicatedNodes = 1;",
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=DEBIAN, node_agent_sku_id=AGENT)))
    wait_for(lambda: [n for n in client.list_nodes("small") if n.state == "idle"], "an idle node", 600)
    client.create_job(bm.BatchJobCreateOptions(id="small", pool_info=bm.BatchPoolInfo(pool_id="small")))
    return "small"


def test_a_task_beyond_its_vm_sizes_memory_fails_and_the_node_stays(client: Any, small: str) -> None:
    task, out, err = run(client, "python3 -c \"x = bytearray(3 << 30); x[::4096] = b\\\"x\\\" * (3 << 18)\"",
                         pool=small)
    assert task.execution_info.exit_code == 137 and task.execution_info.result == "failure", (out, err)
    wait_for(lambda: all(n.state == "idle" for n in client.list_nodes(small)), "the node idle again")
    after, out, err = run(client, "echo fine", pool=small, admin=False)
    assert after.execution_info.exit_code == 0 and out.strip() == "fine"


def test_cpu_percent_comes_from_the_nodes_cgroup(client: Any, small: str, server: ShoalServer) -> None:
    task_id = f"burn-{uuid.uuid4().hex[:6]}"
    client.create_task(small, bm.BatchTaskCreateOptions(id=task_id, command_line="/bin/sh -c 'timeout 40 sh -c "
                                                        "\"while :; do :; done\"'"))
    wait_for(lambda: client.get_task(small, task_id).state == "running", "the busy task")
    time.sleep(8)  # busy for a while, then a sample (the service clock moves on to the next sample time)
    try:
        server.cli("faults", "set", "--clock-offset", "31")
        formula = "$cpu = avg($CPUPercent.GetSample(1)); $mem = avg($MemoryBytes.GetSample(1)); " \
                  "$TargetDedicatedNodes = 1;"

        def sampled() -> str | None:
            results = client.evaluate_pool_auto_scale(small, bm.BatchPoolEvaluateAutoScaleOptions(
                auto_scale_formula=formula)).results or ""
            values = dict(part.split("=", 1) for part in results.split(";") if "=" in part)
            return results if float(values.get("$cpu", 0) or 0) > 30 else None

        results = wait_for(sampled, "a CPU sample of the busy node", 60)
    finally:
        server.cli("faults", "clear")
    values = dict(part.split("=", 1) for part in results.split(";") if "=" in part)
    assert float(values["$mem"]) > 0, results
    client.terminate_task(small, task_id)


def test_doctor_prints_every_check() -> None:
    out = subprocess.run([sys.executable, "-m", "shoal", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for check in ("root", "user namespaces", "seccomp", "node networks", "cgroups"):
        assert f"ok   {check}" in out.stdout, out.stdout


def test_a_shared_host_directory_is_read_only_in_nodes_and_file_urls_reach_it(client: Any,
                                                                              shared_dir: Path) -> None:
    source = (shared_dir / "reference.txt").as_uri()
    task, out, err = run(client, "cat ref.txt; cat {0}; echo x > {0} || echo read-only".format(
        shared_dir / "reference.txt"), files=[bm.ResourceFile(http_url=source, file_path="ref.txt")])
    assert task.execution_info.exit_code == 0, (task.execution_info, err)
    assert out == "shared reference data\nshared reference data\nread-only\n", (out, err)
    assert (shared_dir / "reference.txt").read_text() == "shared reference data\n"
