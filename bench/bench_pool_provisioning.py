"""Pool provisioning: a pool from a custom image goes from 0 to N idle nodes in one resize.

Measured in the same run:
  baseline  the bare machine runtime creating the same N machines (image layers + data disk) directly;
  shoal     azure-batch `create_pool(target_dedicated_nodes=N)` until `nodecounts` says N idle, through the API.
Prints seconds, nodes/s for both and the ratio (targets: <= 10 s for 300 nodes, ratio >= 0.3), then the memory
each idle node costs: the proportional set size (PSS) of its machine's processes.

    .venv/bin/python bench/bench_pool_provisioning.py [--nodes 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image
from harness import ShoalServer, scratch_root
from shoal.azure import Shoal
from shoal.runtime.machines import DiskMount, MachineSpec, detect_runtime


def baseline(n: int) -> float:
    """Seconds for the machine runtime alone to create n machines like a pool's nodes."""
    store = Path(tempfile.mkdtemp(prefix="bench-pool-base-", dir=scratch_root()))
    runtime = detect_runtime(store)
    layer = store / "layer"
    (layer / "opt" / "app").mkdir(parents=True)
    (layer / "opt" / "app" / "run").write_text("echo app\n")
    ids = []
    start = time.perf_counter()
    for i in range(n):
        root = store / "disks" / f"m{i}"
        for sub in ("os/upper", "os/work", "d/upper", "d/work", "temp"):
            (root / sub).mkdir(parents=True)
        spec = MachineSpec(machine_id=f"m{i}", hostname=f"m{i}", base="host",
                           os_disk=DiskMount([str(layer)], str(root / "os/upper"), str(root / "os/work")),
                           data_disks={0: DiskMount([], str(root / "d/upper"), str(root / "d/work"))},
                           temp_dir=str(root / "temp"), volatile=True)
        runtime.create(spec)
        ids.append(f"m{i}")
    elapsed = time.perf_counter() - start
    for machine_id in ids:
        runtime.destroy(machine_id)
    return elapsed


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def node_memory_kb(store: Path) -> list[int]:
    """PSS of each node's processes: an idle node runs only its machine's init (pid 1 inside it)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 3 and argv[1] == b"init" and str(store).encode() in argv[0] and b"node-" in argv[3]:
            out.append(pss_kb(int(proc.name)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=300)
    args = parser.parse_args()
    n = args.nodes
    base_s = baseline(n)
    server = ShoalServer().start()
    try:
        shoal = Shoal.from_env_json(server.env)
        image = prepare_image(shoal)
        account = create_account(shoal, image.group)
        client = shoal.batch_client(account.account_endpoint)
        start = time.perf_counter()
        client.create_pool(bm.BatchPoolCreateOptions(
            id="bench", vm_size="standard_d2s_v3", target_dedicated_nodes=n,
            virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
                node_agent_sku_id=NODE_AGENT)))
        while True:
            counts = {c.pool_id: c for c in client.list_pool_node_counts()}.get("bench")
            if counts is not None and counts.dedicated.idle == n:
                break
            time.sleep(0.05)
        shoal_s = time.perf_counter() - start
        memory = node_memory_kb(server.state_dir / "store")
        client.begin_delete_pool("bench", polling_interval=1).result()
    finally:
        server.cleanup()
    print(f"nodes: {n}")
    print(f"baseline (machine runtime only): {base_s:6.2f} s  {n / base_s:8.1f} nodes/s")
    print(f"shoal pool 0 -> {n} idle:        {shoal_s:6.2f} s  {n / shoal_s:8.1f} nodes/s   (target <= 10 s)")
    print(f"ratio shoal/baseline nodes/s = {(n / shoal_s) / (n / base_s):.2f} (target >= 0.3)")
    if memory:
        print(f"memory per idle node (PSS of its processes): median {statistics.median(memory):.0f} KB, "
              f"max {max(memory)} KB over {len(memory)} nodes (target <= 1024 KB)")


if __name__ == "__main__":
    main()
