"""Task throughput, submission rate and latency, each against a baseline measured in the same run.

  throughput  N trivial tasks (/bin/true) added with addtaskcollection to a 20-node pool, from the first add to
              the last `completed` seen through the API; baseline: bare subprocess.run(['/bin/true']) rate.
              Target: a ratio >= 0.5 (stretch: 1,000 tasks/s).
  runtime     the machine helper alone: a NamespaceRuntime machine with the hardening a pool node gets (user
              namespaces, its own network, the cgroup limits of the pool's VM size), then spawn + wait of the same
              /bin/true in it as the scheduler starts a task (as the task user, output to files in the machine, the
              exit status to a host file; started by the machine's own init, its starter), sequentially and from
              --threads (4) threads; each against subprocess.run with as many threads. It shows the isolation's
              cost (runtime / bare) apart from the control plane's (end-to-end / runtime).
  submission  tasks/s accepted by addtaskcollection (100 per call) with 4 concurrent clients (target >= 10,000/s);
              the job's pool does not exist, so only acceptance is measured.
  latency     task add -> running (creationTime -> executionInfo.startTime) on an idle pool: p50 <= 10 ms,
              p99 <= 50 ms.

    .venv/bin/python bench/bench_tasks.py [--tasks 10000] [--nodes 20] [--threads 4]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image
from harness import ShoalServer, scratch_root
from shoal.azure import Shoal
from shoal.domain import network
from shoal.domain.batch import vmsizes
from shoal.domain.batch.assignment import task_user
from shoal.runtime import sandbox
from shoal.runtime.machines import DiskMount, Hardening, MachineSpec, detect_runtime

VM_SIZE = "Standard_D16s_v3"
# The runtime baseline's machine gets its address here: outside the spaces test servers pick (10.64-10.248) and
# bench_pool_provisioning's baseline (10.40.0.0/14).
RUNTIME_SPACE = "10.44.0.0/14"
TASK_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def rate(one: Callable[[int], object], threads: int = 1, seconds: float = 2.0) -> float:
    """Calls per second of ``one(i)`` from ``threads`` threads for about ``seconds``."""
    counter = itertools.count()
    done = [0] * threads
    start = time.perf_counter()

    def loop(k: int) -> None:
        while time.perf_counter() - start < seconds:
            one(next(counter))
            done[k] += 1

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - start)


def spawn_rate(threads: int = 1, seconds: float = 2.0) -> float:
    return rate(lambda _: subprocess.run(["/bin/true"], check=True), threads, seconds)


def runtime_rates(threads: int, seconds: float = 2.0) -> tuple[float, float]:
    """Tasks/s of the machine helper alone in one hardened machine like a pool node: (1 thread, ``threads``)."""
    store = Path(tempfile.mkdtemp(prefix="bench-tasks-rt-", dir=scratch_root()))
    built = sandbox.build(sandbox.SandboxOptions(address_space=RUNTIME_SPACE), store)
    try:
        runtime = detect_runtime(store, hardening=Hardening(built.user_namespaces, built.network, built.cgroups))
        layer, root = store / "layer", store / "disks" / "m0"
        (layer / "opt" / "app").mkdir(parents=True)
        for sub in ("os/upper", "os/work", "temp", "exits"):
            (root / sub).mkdir(parents=True)
        subnet = network.allocate_subnet(RUNTIME_SPACE, [])
        runtime.create(MachineSpec(
            machine_id="m0", hostname="m0", base="host",
            os_disk=DiskMount([str(layer)], str(root / "os/upper"), str(root / "os/work")), data_disks={},
            temp_dir=str(root / "temp"), volatile=True,
            network=network.machine_network(network.allocate_addresses(subnet, [], 1)[0], subnet, RUNTIME_SPACE),
            limits=vmsizes.machine_limits(VM_SIZE.lower())))
        try:
            runtime.run("m0", ["/bin/chmod", "1777", "/tmp"], env=TASK_ENV)

            def task(i: int) -> None:
                started = runtime.spawn("m0", ["/bin/true"], env=TASK_ENV, cwd="/tmp", user=task_user(False),
                                        stdout=f"/tmp/t{i}.out", stderr=f"/tmp/t{i}.err",
                                        exit_file=str(root / "exits" / str(i)))
                result = runtime.wait(started["pid"])
                if result is None or result["exitCode"] != 0:
                    raise RuntimeError(f"/bin/true in the machine: {result}")

            task(-1)  # helper built, caches warm
            return rate(task, 1, seconds), rate(task, threads, seconds)
        finally:
            runtime.destroy("m0")
    finally:
        if built.network is not None:
            built.network.down()
        shutil.rmtree(store, ignore_errors=True)


def add_all(client: object, job_id: str, ids: list[str], threads: int) -> None:
    chunks = [ids[i:i + 100] for i in range(0, len(ids), 100)]

    def add(chunk: list[str]) -> None:
        client.create_task_collection(job_id, bm.BatchTaskGroup(  # type: ignore[attr-defined]
            task_values=[bm.BatchTaskCreateOptions(id=t, command_line="/bin/true") for t in chunk]))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(add, chunks))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--slots", type=int, default=8, help="taskSlotsPerNode")
    parser.add_argument("--threads", type=int, default=4, help="concurrent starts in the runtime-alone line")
    args = parser.parse_args()
    baseline = spawn_rate()
    baseline_n = spawn_rate(args.threads)
    runtime_1, runtime_n = runtime_rates(args.threads)
    server = ShoalServer().start()
    try:
        shoal = Shoal.from_env_json(server.env)
        image = prepare_image(shoal)
        account = create_account(shoal, image.group)
        client = shoal.batch_client(account.account_endpoint)
        client.create_pool(bm.BatchPoolCreateOptions(
            id="bench", vm_size=VM_SIZE, target_dedicated_nodes=args.nodes, task_slots_per_node=args.slots,
            virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
                node_agent_sku_id=NODE_AGENT)))
        while sum(1 for n in client.list_nodes("bench") if n.state == "idle") < args.nodes:
            time.sleep(0.2)

        # latency on an idle pool
        client.create_job(bm.BatchJobCreateOptions(id="lat", pool_info=bm.BatchPoolInfo(pool_id="bench")))
        latencies = []
        for i in range(60):
            client.create_task("lat", bm.BatchTaskCreateOptions(id=f"l{i}", command_line="/bin/true"))
            while (t := client.get_task("lat", f"l{i}")).state not in ("running", "completed"):
                time.sleep(0.005)
            latencies.append((t.execution_info.start_time - t.creation_time).total_seconds() * 1000)
        latencies.sort()

        # submission (nothing runs: the pool does not exist)
        client.create_job(bm.BatchJobCreateOptions(id="sub", pool_info=bm.BatchPoolInfo(pool_id="nowhere")))
        start = time.perf_counter()
        add_all(client, "sub", [f"s{i}" for i in range(args.tasks)], threads=4)
        submit_rate = args.tasks / (time.perf_counter() - start)

        # end-to-end throughput
        client.create_job(bm.BatchJobCreateOptions(id="tp", pool_info=bm.BatchPoolInfo(pool_id="bench")))
        start = time.perf_counter()
        add_all(client, "tp", [f"t{i}" for i in range(args.tasks)], threads=4)
        while (c := client.get_job_task_counts("tp").task_counts).completed < args.tasks:
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
        throughput = args.tasks / elapsed
        failed = c.failed
    finally:
        server.cleanup()
    print(f"baseline subprocess.run(['/bin/true']): {baseline:8.1f} /s; {args.threads} threads: {baseline_n:8.1f} /s")
    print(f"runtime alone (spawn + wait in a hardened {VM_SIZE} machine): {runtime_1:8.1f} tasks/s, ratio "
          f"{runtime_1 / baseline:.2f} to the baseline; {args.threads} threads: {runtime_n:8.1f} tasks/s, ratio "
          f"{runtime_n / baseline_n:.2f} to the baseline with {args.threads} threads")
    ratio = throughput / baseline
    print(f"end-to-end: {args.tasks} tasks on {args.nodes} nodes x {args.slots} slots in {elapsed:.2f} s = "
          f"{throughput:.1f} tasks/s (stretch 1,000), ratio {ratio:.2f} (target >= 0.5: {verdict(ratio >= 0.5)}), "
          f"failed {failed}; ratio {throughput / max(runtime_1, runtime_n):.2f} to the runtime alone (its best)")
    print(f"submission (4 clients, 100/call): {submit_rate:.0f} tasks/s (target >= 10,000: "
          f"{verdict(submit_rate >= 10_000)})")
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"latency add -> running on an idle pool: p50 {p50:.1f} ms, p99 {p99:.1f} ms (targets 10 / 50 ms: "
          f"{verdict(p50 <= 10 and p99 <= 50)})")


def verdict(met: bool) -> str:
    return "met" if met else "MISS"


if __name__ == "__main__":
    main()
