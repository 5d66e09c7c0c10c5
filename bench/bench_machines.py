"""Machine runtime speed against bare util-linux, measured in the same run.

(a) baseline: ``unshare --mount=<file>`` + one overlay mount (root = [layer, hostbase] + upper) per machine,
    then ``umount <file>`` + rm -rf: the least a private mount namespace with an overlay root can cost from
    Python with util-linux.
(b) NamespaceRuntime.create / destroy of machines on the host base with 1 OS layer and 1 data disk (which
    also builds /dev, /proc, /sys, /run, the temporary drive, pivot_root and starts the machine's init).
(c) exec rate: ``run(["true"])`` in a machine against plain ``subprocess.run(["true"])``.

Rounds alternate (a), (b) and (c)'s variants so that background load hits all of them alike.

    .venv/bin/python bench/bench_machines.py [--n 100] [--rounds 3] [--execs 300] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shoal.runtime.machines import DiskMount, MachineSpec, NamespaceRuntime, mount_points, probe_namespaces

CREATE_TARGET_MS = 20.0


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.9 * len(values)) - 1)]


def baseline_round(work: Path, hostbase: str, layer: str, n: int) -> tuple[list[float], list[float]]:
    """Create n bare namespaces (one overlay each), then destroy them; per-machine times in ms."""
    creates, destroys = [], []
    for i in range(n):
        t0 = time.perf_counter()
        d = work / f"b{i}"
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True)
        (d / "mntns").touch()
        opts = f"lowerdir={layer}:{hostbase},upperdir={d}/upper,workdir={d}/work"
        subprocess.run(["unshare", f"--mount={d}/mntns", "--propagation", "private",
                        "mount", "-t", "overlay", "overlay", "-o", opts, str(d / "root")], check=True)
        creates.append((time.perf_counter() - t0) * 1000)
    for i in range(n):
        t0 = time.perf_counter()
        d = work / f"b{i}"
        subprocess.run(["umount", str(d / "mntns")], check=True)
        shutil.rmtree(d)
        destroys.append((time.perf_counter() - t0) * 1000)
    return creates, destroys


def runtime_round(rt: NamespaceRuntime, work: Path, layer: str, n: int, tag: str) -> tuple[list[float], list[float]]:
    creates, destroys = [], []
    ids = [f"bench-{tag}-{i}" for i in range(n)]
    for machine_id in ids:
        spec = MachineSpec(
            machine_id=machine_id, hostname=machine_id, base="host",
            os_disk=DiskMount([layer], str(work / "disks" / machine_id / "os/upper"),
                              str(work / "disks" / machine_id / "os/work")),
            data_disks={0: DiskMount([], str(work / "disks" / machine_id / "d0/upper"),
                                     str(work / "disks" / machine_id / "d0/work"))},
            temp_dir=str(work / "temp" / machine_id), volatile=True)
        t0 = time.perf_counter()
        rt.create(spec)
        creates.append((time.perf_counter() - t0) * 1000)
    for machine_id in ids:
        t0 = time.perf_counter()
        rt.destroy(machine_id)
        destroys.append((time.perf_counter() - t0) * 1000)
    shutil.rmtree(work / "disks", ignore_errors=True)
    return creates, destroys


def rate(fn: Callable[[], object], count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    return count / (time.perf_counter() - t0)


def report(name: str, creates: list[float], destroys: list[float]) -> float:
    cycle = sum(creates) + sum(destroys)
    print(f"{name:34s} create median {statistics.median(creates):6.2f} ms  p90 {p90(creates):6.2f} ms | "
          f"destroy median {statistics.median(destroys):6.2f} ms  p90 {p90(destroys):6.2f} ms | "
          f"{len(creates) / (sum(creates) / 1000):6.0f} creates/s  {len(creates) / (cycle / 1000):6.0f} machines/s")
    return statistics.median(creates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="machines per round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--execs", type=int, default=300, help="commands per exec round (default 300)")
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="parent of the scratch store (default /dev/shm; keep it off a slow root fs)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoal-bench-machines-", dir=args.dir))
    rt = NamespaceRuntime(work / "store", host_base_dir=work / "hostbase")  # private: unmounted at the end
    try:
        problem = probe_namespaces(work / "store", host_base_dir=work / "hostbase")
        if problem:
            print(f"namespace machines unavailable here: {problem}", file=sys.stderr)
            return 2
        layer = work / "layer"
        (layer / "opt/bench").mkdir(parents=True)
        (layer / "opt/bench/tool").write_text("#!/bin/sh\necho tool\n")
        hostbase = rt.host_base.ensure()
        runtime_round(rt, work, str(layer), 3, "warm")  # helper compiled, caches warm

        base_c: list[float] = []
        base_d: list[float] = []
        rt_c: list[float] = []
        rt_d: list[float] = []
        for r in range(args.rounds):
            c, d = baseline_round(work / "baseline", hostbase, str(layer), args.n)
            base_c += c
            base_d += d
            c, d = runtime_round(rt, work, str(layer), args.n, str(r))
            rt_c += c
            rt_d += d
        print(f"create/destroy: {args.rounds} rounds x {args.n} machines (store {work})")
        b = report("(a) unshare -m + overlay mount", base_c, base_d)
        m = report("(b) NamespaceRuntime (1 layer+lun0)", rt_c, rt_d)
        print(f"    create median ratio (b)/(a) = {m / b:.2f}x; "
              f"target median create <= {CREATE_TARGET_MS:.0f} ms: {'PASS' if m <= CREATE_TARGET_MS else 'FAIL'}")

        rt.create(MachineSpec(machine_id="exec", hostname="exec", base="host",
                              os_disk=DiskMount([str(layer)], str(work / "exec/upper"), str(work / "exec/work")),
                              data_disks={}, temp_dir=str(work / "exec/temp")))
        env = {"PATH": "/usr/bin:/bin"}
        variants: dict[str, Callable[[], object]] = {
            "subprocess.run(['true'])": lambda: subprocess.run(["true"]),
            "run(['true']) captured": lambda: rt.run("exec", ["true"], env=env),
            "run(['true']) to files": lambda: rt.run("exec", ["true"], env=env, stdout=os.devnull,
                                                       stderr=os.devnull),
        }
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(max(3, args.rounds * 2 + 1)):
            for name, fn in variants.items():
                rates[name].append(rate(fn, args.execs))
        bare = statistics.median(rates["subprocess.run(['true'])"])
        print(f"exec rate: medians of {len(rates[next(iter(rates))])} rounds x {args.execs}")
        for name, values in rates.items():
            med = statistics.median(values)
            print(f"    {name:28s} {med:7.0f}/s  ({1000 / med:.2f} ms)  ratio to bare {med / bare:.2f}")
        return 0
    finally:
        for machine_id in rt.list():
            rt.destroy(machine_id)
        baseline = work / "baseline"
        for ns_file in baseline.glob("*/mntns") if baseline.exists() else []:
            subprocess.run(["umount", str(ns_file)], capture_output=True)
        rt.unmount_host_base()
        leftovers = mount_points(work)
        if leftovers:
            print(f"warning: mounts left under {work}: {leftovers}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
