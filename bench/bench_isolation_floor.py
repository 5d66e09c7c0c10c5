"""The kernel's floor for a hardened node's isolation, against the budget the isolation issue sets.

Runs isolation_floor.c (no Shoal) in four modes, rounds alternating, and prints differences in host-wide busy CPU
per node (hostcpu.py):
  isolated - plain    N children each in a user namespace of its own (ids mapped) and a network namespace of its
                      own joined by a routed veth pair (loopback up; eth0 with an address and a default route; the
                      host's end up with a /32 route), against N children that wait: what the kernel takes for
                      those two pieces alone, before any mount, mask, cgroup or file;
  required - base     N minimal nodes with everything the issue requires of a hardened node (those namespaces, the
                      image layer id-mapped, /proc and /sys masked and read-only, the node's root with mount, uts
                      and IPC namespaces of its own in its user namespace, a cut bounding set), against the same
                      nodes built as the limits baseline builds them (a mount and uts namespace, an overlay root
                      with /proc and /sys): what any implementation of the hardening must spend in the kernel
                      per node (see isolation_floor.c for the exact steps).

It prints both beside bench_sandbox's budget: the hardened rates must be at least 0.85 of the limits baseline's,
and where both servers keep the cores equally busy (a pool growing) that allows limits / 0.85 - limits of CPU
per node over the limits node's CPU, which bench_sandbox prints ("host CPU per node while the pool grew"; it
prints how busy each kept the cores too); pass it as --limits-cpu-ms. Needs root and cc.

    .venv/bin/python bench/bench_isolation_floor.py [--nodes 300] [--rounds 3] [--limits-cpu-ms MS] [--scratch DIR]
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

from hostcpu import allowed_extra_ms, busy_seconds

SOURCE = Path(__file__).resolve().parent / "isolation_floor.c"


MODES = ("plain", "isolated", "base", "required")


def node_dirs(root: Path, nodes: int) -> Path:
    """The image layer and each node's upper, work and root directories (made before the clock starts)."""
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("bin", "etc", "tmp", "usr/lib"):
        (root / "lower" / sub).mkdir(parents=True)
    (root / "lower/etc/hostname").write_text("node\n")
    for i in range(nodes):
        for sub in ("upper", "work", "root"):
            (root / str(i) / sub).mkdir(parents=True)
    return root


def run(binary: Path, mode: str, nodes: int, scratch: Path) -> float:
    """Busy CPU seconds host-wide until all `nodes` children are made (their teardown comes after)."""
    extra = [str(node_dirs(scratch / "nodes", nodes))] if mode in ("base", "required") else []
    busy = busy_seconds()
    proc = subprocess.Popen([str(binary), mode, str(nodes), *extra], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    made = proc.stdout.readline()
    spent = busy_seconds() - busy
    if proc.wait() != 0 or made.strip() != str(nodes):
        sys.exit(f"isolation_floor {mode} failed")
    time.sleep(3)  # the namespaces' teardown (the kernel's cleanup_net) is done before the next run
    shutil.rmtree(scratch / "nodes", ignore_errors=True)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limits-cpu-ms", type=float, help="bench_sandbox's limits CPU per node")
    parser.add_argument("--scratch", default="/dev/shm", help="where the nodes' directories go (tmpfs is best)")
    args = parser.parse_args()
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("needs a C compiler (cc)")
    with tempfile.TemporaryDirectory(dir=args.scratch, prefix="isolation-floor-") as tmp:
        binary = Path(tmp) / "isolation_floor"
        subprocess.run([cc, "-O2", "-o", str(binary), str(SOURCE)], check=True)
        spent: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                spent[mode].append(run(binary, mode, args.nodes, Path(tmp)))
    per_node = {mode: statistics.median(v) / args.nodes * 1000 for mode, v in spent.items()}
    print(f"{args.nodes} nodes, ms CPU each (median; rounds):")
    for mode in MODES:
        print(f"  {mode:9} {per_node[mode]:5.2f}  ({', '.join(f'{s / args.nodes * 1000:.2f}' for s in spent[mode])})")
    floor = per_node["isolated"] - per_node["plain"]
    required = per_node["required"] - per_node["base"]
    print(f"floor of a user + network namespace with a routed veth: {floor:.2f} ms CPU per node")
    print(f"what the issue requires of a hardened node, over the limits baseline's: {required:.2f} ms CPU per node")
    if args.limits_cpu_ms:
        budget = allowed_extra_ms(args.limits_cpu_ms)
        print(f"budget (what the 0.85 target allows over the limits node's {args.limits_cpu_ms:.2f} ms where both "
              f"keep the cores equally busy): {budget:.2f} ms; the floor is "
              f"{floor / budget:.1f} times the budget, what the issue requires {required / budget:.1f} times")


if __name__ == "__main__":
    main()
