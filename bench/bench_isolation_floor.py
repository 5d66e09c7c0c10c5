"""The kernel's floor for a hardened node's isolation, against the budget the isolation issue sets.

Runs isolation_floor.c (no Shoal): N children that wait, then N children each in a user namespace of its own
(ids mapped) and a network namespace of its own joined by a routed veth pair (loopback up; eth0 with an address
and a default route; the host's end up with a /32 route). The difference, in host-wide busy CPU per node
(hostcpu.py), is what the kernel takes for those two pieces alone, before any mount, mask, cgroup or file.

It prints that floor beside bench_sandbox's budget: hardened may cost at most 15% more than the limits
baseline, and on a host whose cores are all busy (a pool growing) that is 15% of the limits node's CPU, which
bench_sandbox prints ("host CPU per node while the pool grew"); pass it as --limits-cpu-ms. Needs root and cc.

    .venv/bin/python bench/bench_isolation_floor.py [--nodes 300] [--rounds 3] [--limits-cpu-ms MS]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostcpu import busy_seconds

SOURCE = Path(__file__).resolve().parent / "isolation_floor.c"


def run(binary: Path, mode: str, nodes: int) -> float:
    """Busy CPU seconds host-wide until all `nodes` children are made (their teardown comes after)."""
    busy = busy_seconds()
    proc = subprocess.Popen([str(binary), mode, str(nodes)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    made = proc.stdout.readline()
    spent = busy_seconds() - busy
    if proc.wait() != 0 or made.strip() != str(nodes):
        sys.exit(f"isolation_floor {mode} failed")
    time.sleep(3)  # the namespaces' teardown (the kernel's cleanup_net) is done before the next run
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limits-cpu-ms", type=float, help="bench_sandbox's limits CPU per node")
    args = parser.parse_args()
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("needs a C compiler (cc)")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "isolation_floor"
        subprocess.run([cc, "-O2", "-o", str(binary), str(SOURCE)], check=True)
        spent: dict[str, list[float]] = {"plain": [], "isolated": []}
        for _ in range(args.rounds):
            for mode in spent:
                spent[mode].append(run(binary, mode, args.nodes))
    per_node = {mode: statistics.median(v) / args.nodes * 1000 for mode, v in spent.items()}
    floor = per_node["isolated"] - per_node["plain"]
    print(f"{args.nodes} nodes: plain {per_node['plain']:.2f} ms CPU each, isolated {per_node['isolated']:.2f} ms "
          f"(rounds: {', '.join(f'{s / args.nodes * 1000:.2f}' for s in spent['isolated'])})")
    print(f"floor of a user + network namespace with a routed veth: {floor:.2f} ms CPU per node")
    if args.limits_cpu_ms:
        budget = 0.15 * args.limits_cpu_ms
        print(f"budget (15% of the limits node's {args.limits_cpu_ms:.2f} ms): {budget:.2f} ms; the floor is "
              f"{floor / budget:.1f} times the budget")


if __name__ == "__main__":
    main()
