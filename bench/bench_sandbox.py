"""What hardened machines cost: the same pool and tasks through azure-batch, on a default (hardened) server and
on two baseline servers, in the same run, rounds alternating.

  hardened  `shoal serve` as it starts by default: every node in a user namespace of its own (seccomp filter,
            cut capabilities), with a network namespace, address and firewall of its own, and cgroup limits;
  legacy    `shoal serve --node-network host --no-user-namespaces --no-cgroups`: nodes as they were before,
            sharing the host's network, with the host's root;
  limits    `shoal serve --node-network host --no-user-namespaces`: the baseline the isolation issue names, the
            legacy nodes with the cgroup limits of their VM size (resource limits, which an operator who gives up
            isolation still gets).

The hardened server keeps its default reserve of machines' namespaces made ahead (``runtime/reserve.py``,
``--node-reserve``): a pool takes shells from it, and the server refills it once the pool is up. What the refill
costs is measured after each big pool (until the reserve is full again) and printed beside the pool's own figures,
so that the hardened node's whole CPU and kernel memory are shown, not only what the pool time saw.

With --without-reserve, a fourth server ("cold": hardened with `--node-reserve 0`) shows what the reserve buys.

For each: seconds from `create_pool(target_dedicated_nodes=N)` to N idle nodes (from `nodecounts`), and tasks/s
for T `/bin/true` tasks on 20 nodes (add -> all completed). Prints medians, and the ratios of the hardened rates to
each baseline's (target: hardened costs at most 15%, ratio >= 0.85), and the host's busy CPU per node while the
pool grew (hostcpu.py): on a host whose cores are all busy, the hardening's share of the pool time
(bench_isolation_floor.py sets it beside what the kernel alone takes for a node's namespaces). Then, on each
server, what an idle node costs in memory: the PSS of its processes (target <= 0.3 MB), and the kernel memory the
host gives each node (growth of Slab + KernelStack + PageTables in /proc/meminfo while the pool grows, per 100
nodes).

    .venv/bin/python bench/bench_sandbox.py [--nodes 300] [--tasks 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from azure.batch import models as bm
from azure.mgmt.resource.resources.models import ResourceGroup
from bench_pool_provisioning import node_memory_kb
from hostcpu import allowed_extra_ms, busy_seconds, core_use, settle

from batch_fixtures import LOCATION, create_account
from harness import ShoalServer
from shoal.azure import Shoal
from shoal.config import DEFAULT_NODE_RESERVE

LIMITS = ["--node-network", "host", "--no-user-namespaces"]
LEGACY = [*LIMITS, "--no-cgroups"]
HOST = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")
KERNEL = ("Slab", "KernelStack", "PageTables")


def meminfo_kb() -> int:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return sum(values[k] for k in KERNEL)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def reserved(server_pid: int) -> int:
    """Shells in a server's reserve: the user namespaces its keeper (a provisioner it started) holds, one each."""
    held = 0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or f"PPid:\t{server_pid}\n" not in (proc / "status").read_text():
                continue
            held += sum(1 for fd in (proc / "fd").iterdir() if os.readlink(fd).startswith("user:["))
        except OSError:  # gone meanwhile
            continue
    return held


def idle(client: Any, pool: str) -> int:
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}.get(pool)
    return counts.dedicated.idle if counts is not None else 0


class Side:
    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.server = ShoalServer(extra_args=args).start()
        shoal = Shoal.from_env_json(self.server.env)
        group = f"bench-{uuid.uuid4().hex[:6]}"
        shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
        self.client = shoal.batch_client(create_account(shoal, group).account_endpoint)
        self.agent = next(i.node_agent_sku_id for i in self.client.list_supported_images()
                          if i.image_reference.publisher == "shoal")
        self.pool_s: list[float] = []
        self.pool_cpu: list[float] = []  # host-wide busy CPU seconds while each big pool grew
        self.tasks_s: list[float] = []
        self.pss: list[int] = []
        self.kernel_per_100: list[float] = []
        self.reserve = DEFAULT_NODE_RESERVE if not args else 0
        self.refill_cpu: list[float] = []  # busy CPU seconds while the reserve refilled after each big pool
        self.refill_s: list[float] = []
        if self.reserve:
            self.refilled()

    def pool(self, pool_id: str, nodes: int, slots: int = 1) -> float:
        if nodes >= 100:
            # Every big pool starts from the same host state. A deleted node's memory cgroup lingers (dying)
            # while page cache is charged to it, and each one makes the next cgroups dearer to create: reclaim
            # them, then let what the previous side left to the kernel run before this pool, not during it.
            drop_caches()
            settle()
        kernel = meminfo_kb()
        start, busy = time.perf_counter(), busy_seconds()
        self.client.create_pool(bm.BatchPoolCreateOptions(
            id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes, task_slots_per_node=slots,
            virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST,
                                                                         node_agent_sku_id=self.agent)))
        while idle(self.client, pool_id) < nodes:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        if nodes >= 100:
            self.pool_cpu.append(busy_seconds() - busy)
            if self.reserve:  # the shells the pool used are made again: part of what its nodes cost
                start, busy = time.perf_counter(), busy_seconds()
                self.refilled()
                self.refill_s.append(time.perf_counter() - start)
                self.refill_cpu.append(busy_seconds() - busy)
            self.kernel_per_100.append((meminfo_kb() - kernel) / nodes * 100)
            self.pss += node_memory_kb(self.server.state_dir / "store")
        return elapsed

    def refilled(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while reserved(self.server.proc.pid) < self.reserve:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: the node reserve did not fill "
                                 f"({reserved(self.server.proc.pid)} of {self.reserve})")
            time.sleep(0.05)

    def round(self, nodes: int, tasks: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.pool_s.append(self.pool(f"big-{tag}", nodes))
        self.client.begin_delete_pool(f"big-{tag}", polling_interval=1).result()
        self.pool(f"work-{tag}", 20, slots=8)
        self.client.create_job(bm.BatchJobCreateOptions(id=f"job-{tag}", pool_info=bm.BatchPoolInfo(
            pool_id=f"work-{tag}")))
        start = time.perf_counter()
        for chunk in range(0, tasks, 100):
            self.client.create_tasks(f"job-{tag}", [bm.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true")
                                                    for i in range(chunk, min(tasks, chunk + 100))])
        while self.client.get_job_task_counts(f"job-{tag}").task_counts.completed < tasks:
            time.sleep(0.05)
        self.tasks_s.append(time.perf_counter() - start)
        self.client.begin_delete_job(f"job-{tag}", polling_interval=1).result()
        self.client.begin_delete_pool(f"work-{tag}", polling_interval=1).result()

    def close(self) -> None:
        self.server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--without-reserve", action="store_true",
                        help="also measure a hardened server without its reserve (--node-reserve 0)")
    args = parser.parse_args()
    sides = [Side("legacy", LEGACY), Side("limits", LIMITS)]
    if args.without_reserve:
        sides.append(Side("cold", ["--node-reserve", "0"]))
    sides.append(Side("hardened", []))
    try:
        for _ in range(args.rounds):
            for side in sides:
                side.round(args.nodes, args.tasks)
    finally:
        for side in sides:
            side.close()
    hardened = sides[-1]
    n, t = args.nodes, args.tasks
    for side in sides:
        pool = statistics.median(side.pool_s)
        rate = t / statistics.median(side.tasks_s)
        print(f"{side.name:9} pool 0 -> {n} idle: {pool:6.2f} s ({n / pool:7.1f} nodes/s)   tasks: {rate:7.1f} tasks/s"
              f"   (rounds: {', '.join(f'{s:.2f}' for s in side.pool_s)} s; "
              f"{', '.join(f'{t / s:.0f}' for s in side.tasks_s)} tasks/s)")
    for base in sides[:-1]:
        if base.name == "cold":
            continue
        for side in [s for s in sides if s.name in ("cold", "hardened")]:
            pool_ratio = statistics.median(base.pool_s) / statistics.median(side.pool_s)
            task_ratio = statistics.median(base.tasks_s) / statistics.median(side.tasks_s)
            verdict = "met" if min(pool_ratio, task_ratio) >= 0.85 else "MISSED"
            print(f"{side.name}/{base.name} rate: pool {pool_ratio:.2f}, tasks {task_ratio:.2f} "
                  f"(target >= 0.85: {verdict})")
    # Where the pool time goes on a host whose cores are all busy: CPU per node, and the hardening's share.
    cpu = {side.name: statistics.median(side.pool_cpu) / n * 1000 for side in sides}
    use = {side.name: statistics.median(core_use(c, s) for c, s in zip(side.pool_cpu, side.pool_s, strict=True))
           for side in sides}
    print("host CPU per node while the pool grew: " + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items())
          + f"; hardened over limits {cpu['hardened'] - cpu['limits']:+.2f} ms (the target allows "
          f"{allowed_extra_ms(cpu['limits']):.2f} ms where both keep the cores equally busy)")
    print("cores busy while the pool grew: " + ", ".join(f"{k} {v:.0%}" for k, v in use.items()))
    if hardened.refill_cpu:
        shells = min(n, hardened.reserve)
        refill = statistics.median(hardened.refill_cpu) / shells * 1000
        print(f"hardened: the pool took {shells} nodes' namespaces from the reserve of {hardened.reserve}; refilling "
              f"it after the pool took {statistics.median(hardened.refill_s):.2f} s and {refill:.2f} ms of host CPU "
              f"per shell; with the refill, a hardened node costs "
              f"{cpu['hardened'] + refill * shells / n:.2f} ms of CPU (kernel memory below includes the refill)")
    for side in sides:
        if side.pss:
            print(f"{side.name:9} idle node memory: PSS median {statistics.median(side.pss):.0f} KB "
                  f"(max {max(side.pss)} KB, target <= 300 KB); kernel (Slab+KernelStack+PageTables) "
                  f"{statistics.median(side.kernel_per_100) / 1024:.1f} MB per 100 nodes")


if __name__ == "__main__":
    main()
