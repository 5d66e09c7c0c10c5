"""A cluster on one machine (``shoal dev cluster --hosts 3``): pool nodes spread over simulated node hosts on Ray,
driven with the official SDKs exactly as a single ``shoal serve``.

One cluster serves the whole module, in order:
1. a pool of 60 nodes over 3 hosts runs 1,000 tasks, and each task's ``nodeInfo`` names a node whose host really
   ran it (the node's address is a machine of that host, and the task's output file is on that host's disk);
2. a restart of one host's agent (its actor process killed, Ray restarts it) adopts the host's machines: the same
   machines, no duplicate, no leak, and the pool still runs tasks;
3. one host's Ray node is killed during 300 running tasks: its nodes go unusable within seconds (the time is
   measured and printed; the bound is generous for CI), every task completes exactly once and never runs on two
   nodes at once (each attempt reports heartbeats to a server on the head; the attempts of one task never
   overlap), and the pool gets back to its target on the other hosts; when the host joins again it holds no
   machine.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image, wait_for
from harness import free_port, fresh_postgres_url, node_address_space, scratch_root
from shoal.azure import Shoal

pytest.importorskip("ray")
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="simulated hosts need root (network namespaces)"),
              pytest.mark.timeout(1800)]

NODES, HOSTS = 60, 3
NODE_ROOT = "batch/tasks"  # /mnt/batch/tasks: the temporary drive is <store>/temp/<machine>


class Cluster:
    def __init__(self) -> None:
        self.state_dir = Path(os.environ.get("SHOAL_TEST_TMP") or scratch_root()) / f"cluster-{uuid.uuid4().hex[:8]}"
        self.name = f"t{uuid.uuid4().hex[:5]}"
        self.network_prefix = f"10.253.{random.randint(100, 250)}"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(str(self.state_dir) + ".log")

    @property
    def head_ip(self) -> str:
        return f"{self.network_prefix}.1"

    def start(self) -> None:
        args = [sys.executable, "-m", "shoal", "dev", "cluster", "--hosts", str(HOSTS), "--state-dir",
                str(self.state_dir), "--port", str(self.port), "--name", self.name, "--network",
                f"{self.network_prefix}.0/24", "--ray-port", str(free_port()), "--node-address-space",
                node_address_space()]
        admin = os.environ.get("SHOAL_TEST_POSTGRES_URL")
        if admin:
            args += ["--database-url", fresh_postgres_url(admin)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "COLUMNS": "200"})
        deadline = time.monotonic() + 600
        while "is ready" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not start:\n{self.log.read_text()}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        found = []
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            found.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(found)

    def status(self) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "shoal", "dev", "cluster", "status", "--json", "--state-dir",
                              str(self.state_dir)], check=True, capture_output=True, text=True).stdout
        found = json.loads(out)
        assert isinstance(found, dict) and "hosts" in found, out
        return found

    def host_of_address(self) -> dict[str, tuple[str, str]]:
        """Node address -> (host, machine id), from the hosts' own machine records."""
        return {address: (h["name"], machine) for h in self.status()["hosts"]
                for machine, address in h["addresses"].items()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()
        leftovers = subprocess.run(["pgrep", "-f", f"--state-dir {c.state_dir}"], capture_output=True, text=True)
        assert not leftovers.stdout.strip(), f"processes left after the cluster stopped: {leftovers.stdout}"


@pytest.fixture(scope="module")
def work(cluster: Cluster) -> tuple[Any, Shoal]:
    shoal = Shoal.from_state_dir(cluster.state_dir)
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="work", vm_size="standard_a2_v2", target_dedicated_nodes=NODES, task_slots_per_node=5,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: sum(n.state == "idle" for n in client.list_nodes("work")) == NODES, "60 idle nodes", 600)
    return client, shoal


def _add_tasks(client: Any, job: str, tasks: list[bm.BatchTaskCreateOptions]) -> None:
    for i in range(0, len(tasks), 100):
        client.create_tasks(job, tasks[i:i + 100])


def _tasks_done(client: Any, job: str, count: int) -> bool:
    return sum(t.state == "completed" for t in client.list_tasks(job)) == count


def test_a_pool_spreads_over_the_hosts_and_each_task_runs_on_its_nodes_host(cluster: Cluster,
                                                                           work: tuple[Any, Shoal]) -> None:
    client, _ = work
    nodes = {n.id: n for n in client.list_nodes("work")}
    where = cluster.host_of_address()
    per_host = Counter(where[n.ip_address][0] for n in nodes.values())
    assert sorted(per_host) == [f"h{i}" for i in range(1, HOSTS + 1)], per_host
    assert all(count >= NODES // HOSTS // 2 for count in per_host.values()), f"not spread: {per_host}"

    client.create_job(bm.BatchJobCreateOptions(id="many", pool_info=bm.BatchPoolInfo(pool_id="work")))
    _add_tasks(client, "many", [bm.BatchTaskCreateOptions(id=f"t{i}", command_line=f"/bin/echo ran-t{i}")
                                for i in range(1000)])
    wait_for(lambda: _tasks_done(client, "many", 1000), "1,000 tasks", 900)
    stores = {h["name"]: Path(h["storeDir"]) for h in cluster.status()["hosts"]}
    ran_on = Counter()
    for task in client.list_tasks("many"):
        assert task.execution_info.exit_code == 0, (task.id, task.execution_info.failure_info)
        node = nodes[task.node_info.node_id]
        host, machine = where[node.ip_address]
        out = stores[host] / "temp" / machine / NODE_ROOT / task.node_info.task_root_directory / "stdout.txt"
        assert out.read_text().strip() == f"ran-{task.id}", f"{task.id}: no output on {host} at {out}"
        ran_on[host] += 1
    print(f"1,000 tasks over the hosts: {dict(ran_on)}")
    assert len(ran_on) == HOSTS


REACH = ("python3 -c \"import socket,sys\n"
         "ok=[]\n"
         "for ip in sys.argv[1:]:\n"
         "    try: socket.create_connection((ip, 9), timeout=5).close(); ok.append(ip)\n"
         "    except ConnectionRefusedError: ok.append(ip)\n"
         "    except OSError as e: print('unreachable', ip, e)\n"
         "print('reached', len(ok))\" ")


def test_nodes_of_a_pool_reach_each_other_across_hosts(cluster: Cluster, work: tuple[Any, Shoal]) -> None:
    """A node connects to every other node of the pool (port 9: the target's own kernel answers, refused), so
    traffic crosses from host to host both ways."""
    client, _ = work
    addresses = sorted(n.ip_address for n in client.list_nodes("work"))
    client.create_job(bm.BatchJobCreateOptions(id="reach", pool_info=bm.BatchPoolInfo(pool_id="work")))
    client.create_tasks("reach", [bm.BatchTaskCreateOptions(id=f"x{i}", command_line=REACH + " ".join(addresses))
                                  for i in range(3)])
    wait_for(lambda: _tasks_done(client, "reach", 3), "the reachability tasks", 300)
    for task in client.list_tasks("reach"):
        out = b"".join(client.download_task_file("reach", task.id, "stdout.txt")).decode()
        assert f"reached {len(addresses)}" in out, out


def _agent_pid(netns: str) -> int | None:
    """The pid of a host's agent actor process (Ray titles the worker ``ray::HostSide...``)."""
    inode = os.stat(f"/run/netns/{netns}").st_ino
    for pid in subprocess.run(["pgrep", "-f", "^ray::HostSide"], capture_output=True, text=True).stdout.split():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                return int(pid)
        except OSError:
            continue
    return None


def test_a_restarted_host_agent_adopts_its_machines(cluster: Cluster, work: tuple[Any, Shoal]) -> None:
    client, _ = work
    before = {h["name"]: h["machines"] for h in cluster.status()["hosts"]}
    h1 = next(h for h in cluster.status()["hosts"] if h["name"] == "h1")
    old = _agent_pid(h1["netns"])
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: _agent_pid(h1["netns"]) not in (None, old), "the agent restarted by Ray", 120)
    after = {h["name"]: h["machines"] for h in cluster.status()["hosts"]}
    assert after == before, "machines changed across the agent's restart"
    assert all(status == "running" for status in after["h1"].values())
    client.create_job(bm.BatchJobCreateOptions(id="after-restart", pool_info=bm.BatchPoolInfo(pool_id="work")))
    _add_tasks(client, "after-restart", [bm.BatchTaskCreateOptions(id=f"r{i}", command_line="/bin/true")
                                         for i in range(120)])
    wait_for(lambda: _tasks_done(client, "after-restart", 120), "tasks after the restart", 300)
    assert all(t.execution_info.exit_code == 0 for t in client.list_tasks("after-restart"))
    assert sum(n.state == "idle" for n in client.list_nodes("work")) == NODES
    machines = [m for h in cluster.status()["hosts"] for m in h["machines"]]
    assert len(machines) == len(set(machines)) == NODES, "duplicate or leaked machines"


def _tail(client: Any, job: str, task: str) -> str:
    try:
        return "".join(b"".join(client.download_task_file(job, task, name)).decode(errors="replace")[-300:]
                       for name in ("stdout.txt", "stderr.txt"))
    except Exception as exc:  # the node may be gone: say so rather than hide the failure
        return f"(no output: {exc})"


class Beats(http.server.ThreadingHTTPServer):
    """Where task attempts report: ``GET /<task>/<attempt>/<what>`` (start, beat, end), with the time seen."""

    def __init__(self, address: str) -> None:
        self.seen: list[tuple[float, str, str, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) == 3:
                    with outer.lock:
                        outer.seen.append((time.monotonic(), *parts))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        super().__init__((address, 0), Handler)


BEATING = ("python3 -c \"import os,sys,time,urllib.request,uuid\n"
           "base=sys.argv[1]; me=os.environ['AZ_BATCH_TASK_ID']+'/'+uuid.uuid4().hex[:8]\n"
           "def get(what):\n"
           "    for _ in range(20):\n"
           "        try: return urllib.request.urlopen(base+'/'+me+'/'+what, timeout=10).read()\n"
           "        except OSError: time.sleep(1)\n"
           "    sys.exit(3)\n"
           "get('start')\n"
           "for _ in range(15): time.sleep(2); get('beat')\n"
           "get('end')\" ")


def test_only_a_host_of_the_cluster_may_say_that_it_fenced_itself(cluster: Cluster) -> None:
    """The hosts hold what they need to tell the head of a fence (privately); the head's route takes it only with
    the cluster's token, for one of its hosts, and refuses a bad body with a 400."""
    status = cluster.status()
    for host in status["hosts"]:
        head = Path(host["storeDir"]) / "head.json"
        assert head.stat().st_mode & 0o077 == 0, f"{head} is readable by others"
        assert json.loads(head.read_text())["host"] == host["name"]
    token = (cluster.state_dir / "cluster-token").read_text().strip()
    context = ssl.create_default_context(cafile=str(cluster.state_dir / "tls" / "ca.pem"))

    def post(body: bytes, auth: str | None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"https://127.0.0.1:{cluster.port}/_shoal/cluster/fenced", data=body,
                                         method="POST", headers={"Content-Type": "application/json"})
        if auth:
            request.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    assert post(b'{"host": "h1"}', None)[0] == 404
    assert post(b'{"host": "h1"}', "Bearer not-the-token")[0] == 404
    assert post(b'{"host": "no-such-host"}', f"Bearer {token}") == (200, {"host": "no-such-host", "lost": False})
    code, body = post(b'["h1"]', f"Bearer {token}")
    assert code == 400 and "host" in body["error"]["message"], body
    code, body = post(b'{"host": 1}', f"Bearer {token}")
    assert code == 400 and "'host'" in body["error"]["message"], body
    assert post(b'{"host": ', f"Bearer {token}")[0] == 400
    assert {h["name"] for h in cluster.status()["hosts"]} == {h["name"] for h in status["hosts"]}


def test_a_lost_host_fences_its_tasks_run_once_and_the_pool_recovers(cluster: Cluster,
                                                                    work: tuple[Any, Shoal]) -> None:
    client, _ = work
    beats = Beats(cluster.head_ip)
    threading.Thread(target=beats.serve_forever, daemon=True).start()
    url = f"http://{cluster.head_ip}:{beats.server_address[1]}"
    try:
        client.create_job(bm.BatchJobCreateOptions(id="lossy", pool_info=bm.BatchPoolInfo(pool_id="work")))
        _add_tasks(client, "lossy", [bm.BatchTaskCreateOptions(id=f"l{i}", command_line=BEATING + url)
                                     for i in range(300)])
        # Running as their own reports say (a Batch state "running" may still be a python starting up).
        wait_for(lambda: len({task for _, task, _, what in list(beats.seen) if what == "start"}) >= 290,
                 "300 tasks running", 300)
        status = cluster.status()
        h3 = next(h for h in status["hosts"] if h["name"] == "h3")
        lost_addresses = set(h3["addresses"].values())
        lost_nodes = {n.id for n in client.list_nodes("work") if n.ip_address in lost_addresses}
        assert lost_nodes
        raylet = subprocess.run(["pgrep", "-f", f"raylet.*--node_ip_address={h3['address']} "],
                                capture_output=True, text=True).stdout.split()
        assert len(raylet) == 1, raylet
        killed_at = time.monotonic()
        os.kill(int(raylet[0]), signal.SIGKILL)
        wait_for(lambda: all(n.state == "unusable" for n in client.list_nodes("work") if n.id in lost_nodes)
                 or not any(n.id in lost_nodes for n in client.list_nodes("work")), "lost nodes unusable", 60)
        detected = time.monotonic() - killed_at
        print(f"host h3 lost: its {len(lost_nodes)} nodes were unusable (or gone) {detected:.2f} s after its Ray node "
              "was killed")
        assert detected < 20, f"the lost host's nodes took {detected:.1f} s to go unusable"
        # The head learned it from the host's fence (its notice, or its tasks' ends), not from Ray's health checks.
        log = (cluster.state_dir / "logs" / "serve.log").read_text(errors="replace")
        assert "cluster host h3: fenced itself" in log, cluster.logs()
        wait_for(lambda: _tasks_done(client, "lossy", 300), "the 300 tasks", 900)
        wait_for(lambda: sum(n.state == "idle" for n in client.list_nodes("work")) == NODES, "the pool's target", 600)
    finally:
        beats.shutdown()
    tasks = list(client.list_tasks("lossy"))
    failed = [t for t in tasks if t.execution_info.exit_code != 0]
    assert not failed, [(t.id, t.execution_info.exit_code, t.execution_info.requeue_count,
                         _tail(client, "lossy", t.id)) for t in failed[:3]]
    attempts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ended: set[tuple[str, str]] = set()  # (task, attempt): a retried report is counted once
    for at, task, attempt, what in beats.seen:
        attempts[task][attempt].append(at)
        if what == "end":
            ended.add((task, attempt))
    ends = Counter(task for task, _ in ended)
    assert sorted(ends) == sorted(t.id for t in tasks) and set(ends.values()) == {1}, "a task did not end exactly once"
    requeued = 0
    for task, runs in attempts.items():
        spans = sorted((min(times), max(times)) for times in runs.values())
        requeued += len(spans) > 1
        for (_, end_a), (start_b, _) in itertools.pairwise(spans):
            assert end_a < start_b, f"task {task} ran twice at once: {spans}"
    print(f"{requeued} tasks were requeued from the lost host; none ran twice at once")
    assert requeued >= len(lost_nodes), "the lost host's running tasks were not run again elsewhere"
    where = cluster.host_of_address()
    hosts = Counter(where[n.ip_address][0] for n in client.list_nodes("work"))
    assert "h3" not in hosts and sum(hosts.values()) == NODES, hosts
    h3 = next(h for h in cluster.status()["hosts"] if h["name"] == "h3")
    assert h3["machines"] == {}, f"the fenced host kept machines: {h3['machines']}"
