"""Node hosts on Ray: the head's CPU per node and per task must not grow with the number of hosts.

For each host count (``--hosts 1,2,4``) the bench starts a cluster on this machine (``shoal dev cluster``:
simulated hosts in network namespaces, a Ray head, ``shoal serve --ray-address``), then:
  pool      an image, an account and ``--nodes`` standard_a1_v2 nodes in pools of at most ``--pool-size`` (a pool
            subnet is a /20, and the image-lineage limit is raised to --nodes for the run), from the create to
            every node idle (nodecounts);
  tasks     ``--tasks`` trivial tasks (/bin/true), spread over one job per pool, added with addtaskcollection
            (100 per call, 4 clients), from the first add to the last completed (task counts).
During each phase it reads the CPU seconds (utime + stime, /proc/PID/stat) of the head's ``shoal serve`` process,
of the Ray head's gcs_server, of the whole Ray head (every process under ``ray start --head``) and of the hosts
(every process under each ``shoal host join``), and prints the head's CPU per node and per task. The 1-host run is
the baseline: the target is that the head's CPU per node and per task at the largest host count is at most
1.2 x the 1-host figure (the same, within noise). The head's idle burn (its loops with nothing to do, over a
``--idle-window``) is printed too, since it is part of every phase's figure.

Then, at the largest host count, the last host's raylet is killed (SIGKILL) and the bench prints the time until
every node of that host is ``unusable`` (or gone) as list_nodes reports them, with the time one poll takes.

Memory: the bench prints what each node cost (the drop of MemAvailable and the growth of the kernel's
unreclaimable slab while the pool grew, per node), refuses sizes that would not fit in this machine's available
memory at ``NODE_MB`` per node, and stops a pool phase (a miss) when less than ``MEMORY_FLOOR_MB`` is left, since
other people's processes share the machine.

The simulated hosts run without cgroups unless ``--host-cgroups`` is given. They share this machine's one kernel,
and on one kernel a node's memory cgroup costs more the more nodes that kernel holds: each memory cgroup keeps a map
of every shrinker (one per mounted file system) the kernel has had at once, so 10,000 nodes with 8 file systems
each need about 12.5 GB for these maps alone, and 10,000 hardened nodes with cgroups do not fit in 24 GB. Separate
machines do not share that cost (2,500 nodes on a host: about 0.8 GB), and what this bench measures, the head's
CPU per node and per task, does not depend on it.
The clusters' PostgreSQL: a fresh database next to ``SHOAL_TEST_POSTGRES_URL`` when set, else the cluster's
private one. State directories go under ``SHOAL_TEST_TMP`` (default /dev/shm). Needs root and Ray.

    .venv/bin/python bench/bench_cluster.py [--hosts 1,2,4] [--nodes 10000] [--tasks 2000] [--slots 2]
    .venv/bin/python bench/bench_cluster.py --hosts 1,2 --nodes 200 --tasks 400      # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image
from harness import free_port, fresh_postgres_url, scratch_root
from shoal.azure import Shoal
from shoal.cluster import dev

# Memory of one idle hardened node, all in (namespaces, veth, cgroup, mounts, its init; kernel memory above all):
# measured with this bench, 6,136 nodes over 4 hosts took about 1.6 MB each of unreclaimable slab and about 2 MB
# each of MemAvailable (the ~0.9 MB once measured for a single host's node is not enough here).
NODE_MB = {True: 2.0, False: 0.8}  # by whether the hosts' nodes have cgroups (see above)
MEMORY_FLOOR_MB = 2048  # a pool phase stops (a miss) when less than this is available
HEAD_MB, HOST_MB = 1500, 600  # the head (API, Ray head, PostgreSQL) and each host (supervisor, raylet, agent)
GROWTH_TARGET = 1.2  # the head's CPU per node / per task at N hosts over 1 host (1.0 within noise)
DETECT_TARGET_S = 3.0  # the bound (tests/test_cluster.py allows 20 s on a loaded CI machine)
NODE_SPACE = "10.36.0.0/14"  # the nodes' address space: outside harness.node_address_space (10.64-10.248)
TICK = os.sysconf("SC_CLK_TCK")


# --- CPU of processes ------------------------------------------------------------------------------------------
def _cmdlines() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every process."""
    out: dict[int, tuple[int, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(proc.name)] = (ppid, cmd)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its threads included), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(root: int, procs: dict[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass
class Meters:
    """The processes whose CPU the bench reads, found again at each reading (Ray workers come and go)."""

    state_dir: Path
    ray_port: int
    host_pids: list[int] = field(default_factory=list)

    def read(self) -> dict[str, float]:
        procs = _cmdlines()
        serve = [p for p, (_, c) in procs.items() if f"serve --state-dir {self.state_dir} " in f"{c} "]
        gcs = [p for p, (_, c) in procs.items()
               if "gcs_server" in c and f"--gcs_server_port={self.ray_port} " in f"{c} "]
        head = [p for p, (_, c) in procs.items() if "ray start --head" in c and f"--port {self.ray_port} " in f"{c} "]
        ray_head = set().union(*(descendants(p, procs) for p in head)) if head else set()
        hosts = set().union(*(descendants(p, procs) for p in self.host_pids if p in procs)) if self.host_pids else set()
        if len(serve) != 1:
            raise RuntimeError(f"expected one `shoal serve` of {self.state_dir}, found {serve}")
        return {"serve": cpu_seconds(serve[0]), "gcs": sum(cpu_seconds(p) for p in gcs),
                "rayhead": sum(cpu_seconds(p) for p in ray_head), "hosts": sum(cpu_seconds(p) for p in hosts)}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


# --- the cluster -----------------------------------------------------------------------------------------------
class Cluster:
    def __init__(self, hosts: int, admin_url: str | None, cgroups: bool) -> None:
        self.hosts, self.cgroups = hosts, cgroups
        self.state_dir = scratch_root() / f"bench-cluster-{uuid.uuid4().hex[:8]}"
        self.name = f"b{uuid.uuid4().hex[:5]}"
        self.network_prefix = f"10.253.{random.randint(10, 99)}"  # tests/test_cluster.py takes 100-250
        self.port, self.ray_port = free_port(), free_port()
        self.admin_url = admin_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(str(self.state_dir) + ".log")

    def start(self, env: dict[str, str]) -> None:
        args = [sys.executable, "-m", "shoal", "dev", "cluster", "--hosts", str(self.hosts), "--state-dir",
                str(self.state_dir), "--port", str(self.port), "--name", self.name, "--network",
                f"{self.network_prefix}.0/24", "--ray-port", str(self.ray_port), "--node-address-space", NODE_SPACE]
        if self.admin_url:
            args += ["--database-url", fresh_postgres_url(self.admin_url)]
        if not self.cgroups:
            args += ["--no-cgroups"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "COLUMNS": "200", **env})
        deadline = time.monotonic() + 900
        while "is ready" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not start (see {self.log} and {self.state_dir}/logs)")
            time.sleep(0.5)

    def hosts_machines(self) -> list[dict[str, Any]]:
        """The recorded hosts, each with ``addresses``: machine id -> node address, from its own store (as
        ``shoal dev cluster status`` reads it)."""
        from shoal.runtime.machines import detect_runtime

        hosts = list((dev.read_record(self.state_dir) or {}).get("hosts", []))
        for host in hosts:
            store, addresses = Path(host["storeDir"]), {}
            if store.is_dir():
                runtime = detect_runtime(store, hide=[str(store)], probe=False)
                records: Any = getattr(runtime, "records", None)
                for machine_id in runtime.list():
                    spec = ((records.read(machine_id) if records is not None else None) or {}).get("spec") or {}
                    addresses[machine_id] = str((spec.get("network") or {}).get("address"))
            host["addresses"] = addresses
        return hosts

    def stop(self, *, keep: bool) -> None:
        """Stop the cluster; its state directory and log are removed unless ``keep`` or something is left."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        left = subprocess.run(["pgrep", "-f", f"--state-dir {self.state_dir}"], capture_output=True,
                              text=True).stdout.split()
        mounted = str(self.state_dir) in Path("/proc/self/mounts").read_text()
        if left or mounted:
            print(f"  warning: processes {left} or mounts left after the cluster stopped: keeping {self.state_dir}",
                  file=sys.stderr)
        elif keep:
            print(f"  the cluster's state and logs are kept in {self.state_dir} and {self.log}", file=sys.stderr)
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.log.unlink(missing_ok=True)


# --- the phases ------------------------------------------------------------------------------------------------
def wait_until(check: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline, last = time.monotonic() + timeout, time.monotonic()
    while not check():
        if time.monotonic() > deadline:
            print(f"  timed out after {timeout:.0f} s waiting for {what}", file=sys.stderr)
            return False
        if time.monotonic() - last > 15:
            print(f"  ... still waiting for {what}", file=sys.stderr)
            last = time.monotonic()
        time.sleep(0.25)
    return True


def pool_sizes(nodes: int, per_pool: int) -> list[int]:
    count = math.ceil(nodes / per_pool)
    return [nodes // count + (1 if i < nodes % count else 0) for i in range(count)]


def add_tasks(client: Any, jobs: dict[str, int]) -> None:
    chunks = [(job, [f"t{i}" for i in range(start, min(start + 100, count))])
              for job, count in jobs.items() for start in range(0, count, 100)]

    def add(item: tuple[str, list[str]]) -> None:
        job, ids = item
        result = client.create_task_collection(job, bm.BatchTaskGroup(
            task_values=[bm.BatchTaskCreateOptions(id=t, command_line="/bin/true") for t in ids]))
        bad = [r for r in (result.result_values or []) if r.status != "success"]
        if bad:
            raise RuntimeError(f"tasks not added: {bad[0]}")

    with ThreadPoolExecutor(4) as threads:
        list(threads.map(add, chunks))


@dataclass
class Run:
    hosts: int
    nodes: int
    tasks: int
    idle_s: float = math.nan
    idle_ok: bool = False
    tasks_s: float = math.nan
    tasks_ok: bool = False
    failed: int = 0
    idle_rate: float = math.nan  # the head's CPU seconds per second with nothing to do
    pool_cpu: dict[str, float] = field(default_factory=dict)
    task_cpu: dict[str, float] = field(default_factory=dict)
    per_host: dict[str, int] = field(default_factory=dict)
    detect_s: float | None = None
    detect_ok: bool = False
    lost_nodes: int = 0
    poll_s: float = math.nan
    seen_s: float = math.nan  # kill -> the head's log says the host is lost (Ray's health checks)
    written_s: float = math.nan  # kill -> the head's log says the lost nodes were written
    mem_per_node_mb: float = math.nan  # MemAvailable's drop per node while the pool grew
    slab_per_node_mb: float = math.nan  # SUnreclaim's growth per node
    low_memory: int | None = None  # idle nodes when the pool phase stopped for memory


def idle_counts(client: Any, pools: list[str]) -> tuple[int, dict[str, int]]:
    idle, other = 0, dict[str, int]()
    for counts in client.list_pool_node_counts():
        if counts.pool_id in pools:
            d = counts.dedicated
            idle += d.idle
            for state in ("creating", "starting", "unusable", "start_task_failed", "unknown", "leaving_pool"):
                value = getattr(d, state, 0) or 0
                if value:
                    other[state] = other.get(state, 0) + value
    return idle, other


def run_hosts(hosts: int, args: argparse.Namespace, admin_url: str | None, kill_host: bool) -> Run:
    run = Run(hosts, args.nodes, args.tasks)
    check_memory(args.nodes, hosts, args.host_cgroups)
    cluster = Cluster(hosts, admin_url, args.host_cgroups)
    env = {"SHOAL_IMAGE_DEDICATED_LIMIT": str(max(2500, args.nodes))}
    print(f"[{hosts} host(s)] starting the cluster in {cluster.state_dir} ...", file=sys.stderr)
    try:
        cluster.start(env)
        record = dev.read_record(cluster.state_dir) or {}
        meters = Meters(cluster.state_dir, cluster.ray_port, [int(h["pid"]) for h in record.get("hosts", [])])
        shoal = Shoal.from_state_dir(cluster.state_dir)
        image = prepare_image(shoal)
        account = create_account(shoal, image.group)
        client = shoal.batch_client(account.account_endpoint)

        before = meters.read()
        time.sleep(args.idle_window)
        run.idle_rate = delta(meters.read(), before)["serve"] / args.idle_window

        sizes = pool_sizes(args.nodes, args.pool_size)
        pools = [f"bench{i}" for i in range(len(sizes))]
        print(f"[{hosts} host(s)] {args.nodes} nodes in {len(pools)} pool(s) ...", file=sys.stderr)
        mem_before, slab_before = available_mb(), meminfo_mb("SUnreclaim")
        before, start = meters.read(), time.perf_counter()
        for pool_id, size in zip(pools, sizes, strict=True):
            client.create_pool(bm.BatchPoolCreateOptions(
                id=pool_id, vm_size="standard_a1_v2", target_dedicated_nodes=size, task_slots_per_node=args.slots,
                virtual_machine_configuration=bm.VirtualMachineConfiguration(
                    image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
                    node_agent_sku_id=NODE_AGENT)))
        seen: dict[str, int] = {}

        def all_idle() -> bool:
            idle, other = idle_counts(client, pools)
            seen.clear()
            seen.update(other, idle=idle)
            if available_mb() < MEMORY_FLOOR_MB:
                run.low_memory = idle
                return True
            return idle == args.nodes

        run.idle_ok = wait_until(all_idle, args.timeout, f"{args.nodes} idle nodes") and run.low_memory is None
        run.idle_s = time.perf_counter() - start
        run.pool_cpu = delta(meters.read(), before)
        grown = seen.get("idle", 0) + sum(seen.get(k, 0) for k in ("starting", "unusable", "start_task_failed"))
        if grown:
            run.mem_per_node_mb = (mem_before - available_mb()) / grown
            run.slab_per_node_mb = (meminfo_mb("SUnreclaim") - slab_before) / grown
        if not run.idle_ok:
            print(f"  node states at the timeout: {seen}", file=sys.stderr)
            for pool_id in pools:
                errors = client.get_pool(pool_id).resize_errors
                if errors:
                    print(f"  {pool_id} resize errors: {[(e.code, e.message) for e in errors]}", file=sys.stderr)
            return run
        run.per_host = {h["name"]: len(h["addresses"]) for h in cluster.hosts_machines()}

        jobs = {f"job{i}": args.tasks * size // args.nodes for i, size in enumerate(sizes)}
        jobs["job0"] += args.tasks - sum(jobs.values())
        for job, pool_id in zip(jobs, pools, strict=True):
            client.create_job(bm.BatchJobCreateOptions(id=job, pool_info=bm.BatchPoolInfo(pool_id=pool_id)))
        print(f"[{hosts} host(s)] {args.tasks} tasks ...", file=sys.stderr)
        before, start = meters.read(), time.perf_counter()
        add_tasks(client, jobs)
        done: dict[str, tuple[int, int]] = {}

        def all_done() -> bool:
            for job, count in jobs.items():
                if done.get(job, (0, 0))[0] < count:
                    c = client.get_job_task_counts(job).task_counts
                    done[job] = (c.completed, c.failed)
            return all(done[job][0] >= count for job, count in jobs.items())

        run.tasks_ok = wait_until(all_done, args.timeout, f"{args.tasks} completed tasks")
        run.tasks_s = time.perf_counter() - start
        run.task_cpu = delta(meters.read(), before)
        run.failed = sum(f for _, f in done.values())

        if kill_host:
            lose_a_host(cluster, client, pools, run)
    finally:
        print(f"[{hosts} host(s)] stopping the cluster ...", file=sys.stderr)
        cluster.stop(keep=args.keep or not (run.idle_ok and run.tasks_ok))
    return run


def lose_a_host(cluster: Cluster, client: Any, pools: list[str], run: Run) -> None:
    """SIGKILL the last host's raylet; the time until its nodes are unusable (or gone), read from the pools' node
    counts, then checked node by node."""
    host = cluster.hosts_machines()[-1]
    addresses = set(host["addresses"].values())
    lost = {(p, n.id) for p in pools for n in client.list_nodes(p, select=["id", "ipAddress"])
            if n.ip_address in addresses}
    run.lost_nodes = len(lost)
    raylet = subprocess.run(["pgrep", "-f", f"raylet.*--node_ip_address={host['address']} "], capture_output=True,
                            text=True).stdout.split()
    if len(raylet) != 1 or not lost:
        print(f"  cannot lose host {host['name']}: raylet {raylet}, {len(lost)} nodes", file=sys.stderr)
        return
    polls: list[float] = []

    def usable() -> int:  # the pools' idle and running nodes (one aggregate: fast whatever the pools' size)
        return sum((c.dedicated.idle or 0) + (c.dedicated.running or 0) for c in client.list_pool_node_counts()
                   if c.pool_id in pools)

    def lost_unusable() -> bool:
        # Only the lost host's nodes leave idle/running (the pools were idle, and replacements boot only after
        # the fence time); which nodes they were is checked with list_nodes once this holds.
        t0 = time.perf_counter()
        now_usable = usable()
        polls.append(time.perf_counter() - t0)
        return now_usable <= before - len(lost)

    before = usable()
    killed, killed_wall = time.monotonic(), time.time()
    os.kill(int(raylet[0]), signal.SIGKILL)
    run.detect_ok = wait_until(lost_unusable, 120, f"host {host['name']}'s nodes unusable")
    run.detect_s = time.monotonic() - killed
    run.poll_s = sum(polls) / len(polls) if polls else math.nan
    log = cluster.state_dir / "logs" / "serve.log"
    # The head hears of it from the host's fence ("fenced itself") or from Ray's health checks ("lost").
    heard = [logged_at(log, f"cluster host {host['name']}: {what}", killed_wall) for what in ("fenced itself", "lost")]
    run.seen_s = min((at for at in heard if not math.isnan(at)), default=math.nan) - killed_wall
    run.written_s = logged_at(log, "nodes of lost hosts:", killed_wall) - killed_wall
    states = {(p, n.id): n.state for p in {p for p, _ in lost} for n in client.list_nodes(p, select=["id", "state"])}
    wrong = [key for key in lost if states.get(key, "unusable") not in ("unusable", "leavingpool")]
    if wrong:
        run.detect_ok = False
        print(f"  {len(wrong)} of the lost host's nodes are still usable, e.g. {wrong[:3]}", file=sys.stderr)


def logged_at(log: Path, text: str, after: float) -> float:
    """The time of the first line of the server's log that holds ``text``, logged at ``after`` or later (NaN:
    none). Lines start with the logging module's ``YYYY-MM-DD HH:MM:SS,mmm``."""
    for line in log.read_text(errors="replace").splitlines():
        if text not in line:
            continue
        try:
            at = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        except ValueError:
            continue
        if at >= after - 1.0:  # the log's times are to the millisecond; the kill's to the microsecond
            return at
    return math.nan


# --- memory ----------------------------------------------------------------------------------------------------
def meminfo_mb(key: str) -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def available_mb() -> float:
    return meminfo_mb("MemAvailable")


def needed_mb(nodes: int, hosts: int, cgroups: bool) -> float:
    return nodes * NODE_MB[cgroups] * 1.15 + HEAD_MB + hosts * HOST_MB


def check_memory(nodes: int, hosts: int, cgroups: bool) -> None:
    need, have = needed_mb(nodes, hosts, cgroups), available_mb()
    if need > have:
        raise SystemExit(f"refused: {nodes} nodes over {hosts} host(s) need about {need / 1024:.1f} GB "
                         f"({NODE_MB[cgroups]} MB per hardened node {'with' if cgroups else 'without'} cgroups, "
                         "+15 %, plus the head and the "
                         f"hosts' processes) and this machine has {have / 1024:.1f} GB available: use fewer --nodes")


# --- report ----------------------------------------------------------------------------------------------------
def ms(value: float, count: int) -> str:
    return f"{value / count * 1000:8.2f}" if count and not math.isnan(value) else "     n/a"


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print(f"\nnodes {args.nodes} (standard_a1_v2, {args.slots} slots, pools of <= {args.pool_size}), "
          f"tasks {args.tasks} (/bin/true); head = the `shoal serve` process (utime + stime); the hosts' nodes "
          f"{'have' if args.host_cgroups else 'have no'} cgroups (--host-cgroups)")
    print("hosts |  to idle s  nodes/s | head CPU s  ms/node  gcs ms/node  ray-head ms/node  hosts ms/node "
          "|  tasks s  tasks/s | head CPU s  ms/task  gcs ms/task  ray-head ms/task  hosts ms/task | head idle")
    for r in runs:
        pc, tc = r.pool_cpu, r.task_cpu
        print(f"{r.hosts:5d} | {r.idle_s:9.1f} {r.nodes / r.idle_s if r.idle_ok else math.nan:8.1f} | "
              f"{pc.get('serve', math.nan):10.2f} {ms(pc.get('serve', math.nan), r.nodes)} "
              f"{ms(pc.get('gcs', math.nan), r.nodes)}     {ms(pc.get('rayhead', math.nan), r.nodes)}         "
              f"{ms(pc.get('hosts', math.nan), r.nodes)}  | "
              f"{r.tasks_s:8.1f} {r.tasks / r.tasks_s if r.tasks_ok else math.nan:8.1f} | "
              f"{tc.get('serve', math.nan):10.2f} {ms(tc.get('serve', math.nan), r.tasks)} "
              f"{ms(tc.get('gcs', math.nan), r.tasks)}     {ms(tc.get('rayhead', math.nan), r.tasks)}         "
              f"{ms(tc.get('hosts', math.nan), r.tasks)}  | {r.idle_rate * 100:5.1f} % CPU")
        if r.low_memory is not None:
            print(f"      MISS: stopped at {r.low_memory} idle nodes: less than {MEMORY_FLOOR_MB} MB of memory "
                  "was left")
        elif not r.idle_ok:
            print(f"      MISS: the pool did not reach {r.nodes} idle nodes within {args.timeout:.0f} s")
        elif not r.tasks_ok:
            print(f"      MISS: the tasks did not complete within {args.timeout:.0f} s")
        if r.failed:
            print(f"      MISS: {r.failed} tasks failed")
        if r.per_host:
            print(f"      nodes per host: {r.per_host}")
        if not math.isnan(r.mem_per_node_mb):
            print(f"      memory per node: {r.mem_per_node_mb:.2f} MB of MemAvailable, {r.slab_per_node_mb:.2f} MB "
                  f"of it unreclaimable kernel slab (the bench assumes {NODE_MB[args.host_cgroups]} MB)")
        if pc and tc:  # the head's average load in each phase: CPU seconds that follow the phase's wall time
            print(f"      head busy: {pc['serve'] / r.idle_s:.2f} cores while the pool grew, "
                  f"{tc['serve'] / r.tasks_s:.2f} while the tasks ran")
    base = next((r for r in runs if r.hosts == min(x.hosts for x in runs)), None)
    for r in runs:
        if base is None or r is base or not (base.idle_ok and r.idle_ok):
            continue
        for what, key, count in (("node", "pool_cpu", r.nodes), ("task", "task_cpu", r.tasks)):
            b, v = getattr(base, key).get("serve"), getattr(r, key).get("serve")
            if not b or v is None or (what == "task" and not (base.tasks_ok and r.tasks_ok)):
                continue
            base_count = base.nodes if what == "node" else base.tasks
            ratio = (v / count) / (b / base_count)
            verdict = "ok" if ratio <= GROWTH_TARGET else "MISS: grows with the host count"
            # The head's idle burn (its hosts' health checks and pollers, per second, not per node) counted apart:
            # a phase that lasts longer (the hosts share this machine's cores) carries more of it.
            phase_s = {"node": (r.idle_s, base.idle_s), "task": (r.tasks_s, base.tasks_s)}[what]
            net = ((v - r.idle_rate * phase_s[0]) / count) / ((b - base.idle_rate * phase_s[1]) / base_count)
            print(f"head CPU per {what}: {r.hosts} hosts / {base.hosts} host = {ratio:.3f} "
                  f"(target <= {GROWTH_TARGET}, 1.0 within noise): {verdict}; without the idle burn {net:.3f}")
    for r in runs:
        if r.detect_s is None:
            continue
        verdict = "ok" if r.detect_ok and r.detect_s <= DETECT_TARGET_S else "MISS"
        print(f"lost host at {r.hosts} hosts: its {r.lost_nodes} nodes unusable {r.detect_s:.2f} s after its raylet "
              f"was killed (target <= {DETECT_TARGET_S:.0f} s): {verdict}")
        print(f"      the head knew the host was lost after {r.seen_s:.2f} s (its fence's notice, or Ray's health "
              f"checks), had written its nodes at {r.written_s:.2f} s; one node-counts poll took {r.poll_s:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1,2,4", help="host counts, comma-separated (default 1,2,4)")
    parser.add_argument("--nodes", type=int, default=10000, help="nodes in all (default 10,000)")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=2, help="taskSlotsPerNode (default 2)")
    parser.add_argument("--pool-size", type=int, default=2500, help="nodes per pool at most (a pool's subnet is a "
                        "/20: 4,091 addresses)")
    parser.add_argument("--idle-window", type=float, default=5.0, help="seconds to measure the head's idle burn")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for each phase")
    parser.add_argument("--no-lost-host", action="store_true", help="do not kill a host at the end")
    parser.add_argument("--keep", action="store_true", help="keep each cluster's state directory and logs")
    parser.add_argument("--host-cgroups", action="store_true", help="give the simulated hosts' nodes cgroups "
                        "(default: none; they share one kernel, see the module's help)")
    args = parser.parse_args()
    counts = sorted({int(h) for h in args.hosts.split(",") if h.strip()})
    if os.geteuid() != 0:
        print("bench_cluster needs root (simulated hosts are network namespaces)", file=sys.stderr)
        return 2
    if not counts or min(counts) < 1 or args.nodes < 1 or args.tasks < 1 or not 1 <= args.pool_size <= 4091:
        parser.error("--hosts, --nodes, --tasks and --pool-size must be positive (--pool-size <= 4091)")
    check_memory(args.nodes, max(counts), args.host_cgroups)
    busy = subprocess.run(["pgrep", "-f", "pytest.*test_cluster"], capture_output=True, text=True).stdout.split()
    if busy:
        print(f"warning: a cluster test runs (pids {busy}): the figures share the CPU with it", file=sys.stderr)
    print(f"load average before: {os.getloadavg()[0]:.2f}, available memory {available_mb() / 1024:.1f} GB, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    admin_url = os.environ.get("SHOAL_TEST_POSTGRES_URL")
    runs = []
    with contextlib.suppress(KeyboardInterrupt):
        for hosts in counts:
            runs.append(run_hosts(hosts, args, admin_url, kill_host=not args.no_lost_host and hosts == max(counts)))
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
