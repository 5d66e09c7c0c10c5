"""Pool provisioning: a pool from a custom image goes from 0 to N idle nodes in one resize.

Measured in the same run:
  baseline  the bare machine runtime creating the same N machines (image layers + data disk) directly, without
            hardening (no user namespace, the host's network, no cgroup limits);
  hardened  the same machines with the isolation and network plumbing pool nodes get on this host: user
            namespaces, a network of their own (a veth and an address on a subnet) and the cgroup limits of the
            pool's VM size (standard_d2s_v3), as ``shoal serve`` builds them by default;
  shoal     azure-batch `create_pool(target_dedicated_nodes=N)` until `nodecounts` says N idle, through the API.
Prints seconds, nodes/s for each and the ratios (targets: <= 10 s for 300 nodes, ratio >= 0.3 against the bare
runtime, >= 0.7 against the hardened one), then the memory each idle node costs: the proportional set size (PSS)
of its machine's processes. The pool's time is linear in its size when 2,500 nodes take at most 1.3 x 8.3 times
the time of 300 (run it at both sizes).

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
from shoal.domain import network
from shoal.domain.batch import vmsizes
from shoal.runtime import sandbox
from shoal.runtime.machines import DiskMount, Hardening, MachineRuntime, MachineSpec, detect_runtime

# The hardened baseline's machines get addresses here: outside the spaces test servers pick (10.64-10.248).
BASELINE_SPACE = "10.40.0.0/14"


def baseline(n: int, *, hardened: bool = False) -> float:
    """Seconds for the machine runtime alone to create n machines like a pool's nodes (``hardened``: with the
    user namespaces, network and cgroup limits of a default ``shoal serve``)."""
    store = Path(tempfile.mkdtemp(prefix="bench-pool-base-", dir=scratch_root()))
    built = sandbox.build(sandbox.SandboxOptions(address_space=BASELINE_SPACE), store) if hardened else None
    runtime = detect_runtime(store, hardening=Hardening(built.user_namespaces, built.network, built.cgroups)
                             if built is not None else None)
    subnet = network.allocate_subnet(BASELINE_SPACE, [])
    addresses = network.allocate_addresses(subnet, [], n) if hardened else []
    try:
        return _create_and_destroy(n, store, runtime, subnet, addresses, hardened=hardened)
    finally:
        if built is not None and built.network is not None:
            built.network.down()


def _create_and_destroy(n: int, store: Path, runtime: MachineRuntime, subnet: str, addresses: list[str], *,
                        hardened: bool) -> float:
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
                           temp_dir=str(root / "temp"), volatile=True,
                           network=network.machine_network(addresses[i], subnet, BASELINE_SPACE) if hardened
                           else None,
                           limits=vmsizes.machine_limits("standard_d2s_v3") if hardened else None)
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
    hard_s = baseline(n, hardened=True)
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
    print(f"hardened baseline (as nodes):    {hard_s:6.2f} s  {n / hard_s:8.1f} nodes/s")
    print(f"shoal pool 0 -> {n} idle:        {shoal_s:6.2f} s  {n / shoal_s:8.1f} nodes/s   (target <= 10 s)")
    print(f"ratio shoal/baseline nodes/s = {(n / shoal_s) / (n / base_s):.2f} (target >= 0.3)")
    print(f"ratio shoal/hardened baseline nodes/s = {(n / shoal_s) / (n / hard_s):.2f} (target >= 0.7)")
    if memory:
        print(f"memory per idle node (PSS of its processes): median {statistics.median(memory):.0f} KB, "
              f"max {max(memory)} KB over {len(memory)} nodes (target <= 1024 KB)")


if __name__ == "__main__":
    main()
