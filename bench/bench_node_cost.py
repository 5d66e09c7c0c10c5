"""What each piece of a hardened node costs: boot time and kernel memory, piece by piece, in the same run.

For each variant (hardened; without its user namespace and id-mapped mounts; without its network namespace and
veth; without its cgroups; with none of them) it creates --machines machines one after another with the bare
machine runtime (``runtime.create``, no control plane) and prints:
  boot      milliseconds per machine, and the difference to the hardened variant (what that piece costs);
  cpu       host-wide busy CPU milliseconds per machine (all processes and kernel threads, see hostcpu.py): what a
            piece costs where the cores are all busy (a pool growing), as against the "limits" variant, the
            baseline of bench_sandbox (cgroups only);
  memory    the growth of the kernel's unreclaimable slab per machine while they were made (SUnreclaim);
  mounts    the file systems a machine mounts (distinct devices in its init's mountinfo).

Why the mounts are printed: every mounted file system has a shrinker, and the kernel keeps, in every memory
cgroup, a bit and a counter for each shrinker it has ever had at once (about 16 bytes each, in 1 KB units). A
node's memory cgroup therefore costs about (file systems per node x the most nodes the host has held) x 16
bytes, which this bench shows as the memory of the hardened and "without cgroups" variants, apart. The cost is
quadratic in the node count and stays at its high-water mark until the host reboots. Needs root.

    .venv/bin/python bench/bench_node_cost.py [--machines 100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostcpu import allowed_extra_ms, busy_seconds

from harness import scratch_root
from shoal.domain import network
from shoal.domain.batch import vmsizes
from shoal.runtime import sandbox
from shoal.runtime.machines import DiskMount, Hardening, MachineSpec, NamespaceRuntime, detect_runtime

SPACE = "10.52.0.0/14"  # outside what test servers and the other benchmarks pick
VARIANTS = {"hardened": (True, True, True), "no user namespace": (False, True, True),
            "no network namespace": (True, False, True), "no cgroups": (True, True, False),
            "limits": (False, False, True), "none of them": (False, False, False)}


def unreclaimable_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SUnreclaim:"):
            return int(line.split()[1])
    return 0


def devices(mountinfo: Path) -> set[str]:
    return {line.split()[2] for line in mountinfo.read_text().splitlines()}


def file_systems(runtime: NamespaceRuntime, machine_id: str) -> int:
    """The file systems the machine made: devices of its mounts that the host's mounts do not have (a bind
    mount shows its source's device)."""
    pid = runtime.records.read(machine_id)["initPid"]
    return len(devices(Path(f"/proc/{pid}/mountinfo")) - devices(Path("/proc/self/mountinfo")))


def settled_kb(timeout: float = 30.0) -> int:
    """Unreclaimable slab once the kernel's deferred frees (namespaces, cgroups of destroyed machines) are done:
    when it has stopped falling for two seconds."""
    deadline, last, steady_since = time.monotonic() + timeout, unreclaimable_kb(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady_since < 2.0:
        time.sleep(0.25)
        now = unreclaimable_kb()
        if now < last - 256:
            steady_since = time.monotonic()
        last = min(last, now)
    return unreclaimable_kb()


def measure(name: str, machines: int) -> tuple[float, float, float, int]:
    """(ms per machine, busy CPU ms per machine, unreclaimable slab KB per machine, file systems per machine) of
    one variant."""
    userns, net, cgroups = VARIANTS[name]
    store = Path(tempfile.mkdtemp(prefix="bench-node-cost-", dir=scratch_root()))
    built = sandbox.build(sandbox.SandboxOptions(address_space=SPACE), store)
    try:
        runtime = detect_runtime(store, hardening=Hardening(built.user_namespaces if userns else None,
                                                            built.network if net else None,
                                                            built.cgroups if cgroups else None))
        assert isinstance(runtime, NamespaceRuntime)
        layer = store / "layer"
        (layer / "opt").mkdir(parents=True)
        subnet = network.allocate_subnet(SPACE, [])
        addresses = network.allocate_addresses(subnet, [], machines + 1)

        def spec(i: int) -> MachineSpec:
            root = store / "disks" / f"m{i}"
            for sub in ("os/upper", "os/work", "temp"):
                (root / sub).mkdir(parents=True)
            return MachineSpec(
                machine_id=f"m{i}", hostname=f"m{i}", base="host",
                os_disk=DiskMount([str(layer)], str(root / "os/upper"), str(root / "os/work")), data_disks={},
                temp_dir=str(root / "temp"), volatile=True,
                network=network.machine_network(addresses[i], subnet, SPACE) if net else None,
                limits=vmsizes.machine_limits("standard_d2s_v3"))

        specs = [spec(i) for i in range(machines + 1)]
        try:
            runtime.create(specs[machines])  # the helper built, the caches warm
            mounts = file_systems(runtime, f"m{machines}")
            slab = settled_kb()  # (what an earlier variant's machines held is given back first)
            start, busy = time.perf_counter(), busy_seconds()
            for machine in specs[:machines]:
                runtime.create(machine)
            elapsed, cpu = time.perf_counter() - start, busy_seconds() - busy
            grown = unreclaimable_kb() - slab
        finally:
            for machine in specs:
                try:
                    runtime.destroy(machine.machine_id)
                except Exception as exc:  # a machine that never came up: nothing to destroy
                    print(f"  {machine.machine_id}: {exc}", file=sys.stderr)
        return elapsed / machines * 1000, cpu / machines * 1000, grown / machines, mounts
    finally:
        if built.network is not None:
            built.network.down()
        shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=100)
    args = parser.parse_args()
    results = {name: measure(name, args.machines) for name in VARIANTS}
    hardened_ms, hardened_cpu = results["hardened"][:2]
    print(f"{args.machines} machines, one after another (runtime.create, no control plane):")
    for name, (ms, cpu, slab_kb, mounts) in results.items():
        saved = "" if name == "hardened" else f", {hardened_ms - ms:+.2f} ms saved"
        cpu_saved = "" if name == "hardened" else f", {hardened_cpu - cpu:+.2f} saved"
        print(f"  {name:22s} boot {ms:6.2f} ms per machine{saved}; cpu {cpu:5.2f} ms{cpu_saved}; unreclaimable "
              f"slab {slab_kb:7.1f} KB per machine; {mounts} file systems")
    limits_cpu = results["limits"][1]
    print(f"hardened over limits: {hardened_cpu - limits_cpu:+.2f} CPU ms per machine; the 0.85 target allows "
          f"{allowed_extra_ms(limits_cpu):.2f} ms")


if __name__ == "__main__":
    main()
