"""Task throughput, submission rate and latency, each against a baseline measured in the same run.

  throughput  N trivial tasks (/bin/true) added with addtaskcollection to a 20-node pool, from the first add to
              the last `completed` seen through the API; baseline: bare subprocess.run(['/bin/true']) rate.
              Targets: >= 300 tasks/s and a ratio >= 0.25.
  submission  tasks/s accepted by addtaskcollection (100 per call) with 4 concurrent clients (target >= 3000/s);
              the job's pool does not exist, so only acceptance is measured.
  latency     task add -> running (creationTime -> executionInfo.startTime) on an idle pool: p50 <= 50 ms,
              p99 <= 250 ms.

    .venv/bin/python bench/bench_tasks.py [--tasks 10000] [--nodes 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image
from harness import ShoalServer
from shoal.azure import Shoal


def spawn_rate(seconds: float = 2.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        subprocess.run(["/bin/true"], check=True)
        n += 1
    return n / (time.perf_counter() - start)


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
    args = parser.parse_args()
    baseline = spawn_rate()
    server = ShoalServer().start()
    try:
        shoal = Shoal.from_env_json(server.env)
        image = prepare_image(shoal)
        account = create_account(shoal, image.group)
        client = shoal.batch_client(account.account_endpoint)
        client.create_pool(bm.BatchPoolCreateOptions(
            id="bench", vm_size="Standard_D16s_v3", target_dedicated_nodes=args.nodes, task_slots_per_node=args.slots,
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
        add_all(client, "sub", [f"s{i}" for i in range(4000)], threads=4)
        submit_rate = 4000 / (time.perf_counter() - start)

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
    print(f"baseline subprocess.run(['/bin/true']): {baseline:8.1f} /s")
    print(f"end-to-end: {args.tasks} tasks on {args.nodes} nodes x {args.slots} slots in {elapsed:.2f} s = "
          f"{throughput:.1f} tasks/s (target >= 300), ratio {throughput / baseline:.2f} (target >= 0.25), "
          f"failed {failed}")
    print(f"submission (4 clients, 100/call): {submit_rate:.0f} tasks/s (target >= 3000)")
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"latency add -> running on an idle pool: p50 {p50:.1f} ms, p99 {p99:.1f} ms (targets 50 / 250 ms)")


if __name__ == "__main__":
    main()
