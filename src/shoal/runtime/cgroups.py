"""Per-machine cgroups: a machine gets the cores, memory and process count of its VM size, and Shoal reads
what it uses from the same place (autoscale's ``$CPUPercent`` and ``$MemoryBytes``).

Both layouts the kernel offers are supported, and ``detect()`` says which one is in use:

Each host store's machines have a group of their own, ``shoal/store-<hash of the store path>`` (written
``shoal/...`` below).

- **v2** (unified): one directory ``<root>/shoal/<machine>`` with ``cpu.max``, ``memory.max``,
  ``memory.swap.max`` and ``pids.max``; usage from ``cpu.stat`` and ``memory.current``.
- **v1** (one hierarchy per controller, as on this project's build machines): a directory per controller,
  ``memory/shoal/<machine>`` (``memory.limit_in_bytes``), ``cpu/...`` (``cpu.cfs_quota_us``),
  ``cpuacct/...`` (``cpuacct.usage``) and ``pids/...`` (``pids.max``).

The machine's init joins these directories before anything runs in it (the native helper's ``--cgroup``), and
every command entering the machine joins them too, so a task that allocates more than its VM size's memory
is killed by the kernel's OOM killer inside its own cgroup; the machine and its other processes stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
GROUP = "shoal"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
CFS_PERIOD_US = 100_000


class CgroupError(Exception):
    """Cgroups cannot be used as configured (the message names what is missing)."""


@dataclass(frozen=True)
class Limits:
    cores: float
    memory_bytes: int
    pids: int = 32768

    def to_dict(self) -> dict[str, float | int]:
        return {"cores": self.cores, "memoryBytes": self.memory_bytes, "pids": self.pids}

    @classmethod
    def from_dict(cls, data: dict[str, float | int]) -> Limits:
        return cls(float(data["cores"]), int(data["memoryBytes"]), int(data.get("pids", 32768)))


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    memory_bytes: int


def detect(root: Path = ROOT) -> tuple[str | None, str]:
    """("v2" | "v1" | None, why): which cgroup layout this host offers for per-machine limits."""
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        have = set(controllers.read_text().split())
        missing = {"cpu", "memory", "pids"} - have
        if not missing:
            return "v2", f"cgroup v2 at {root}"
        return None, f"cgroup v2 at {root} lacks the {', '.join(sorted(missing))} controller(s)"
    absent = [c for c in V1_CONTROLLERS if not (root / c / "cgroup.procs").exists()]
    if not absent:
        return "v1", f"cgroup v1 ({', '.join(V1_CONTROLLERS)}) at {root}"
    return None, f"no cgroup v2 hierarchy, and no v1 {', '.join(absent)} controller(s) mounted at {root}"


def store_group(store_dir: Path | None) -> str:
    """The group of one host store's machines, below ``shoal/``: servers with stores of their own on one host
    each keep (and sweep) their own machines' cgroups only."""
    if store_dir is None:
        return GROUP
    tag = hashlib.sha256(str(Path(store_dir).resolve()).encode()).hexdigest()[:12]
    return f"{GROUP}/store-{tag}"


class Cgroups:
    def __init__(self, version: str, root: Path = ROOT, group: str = GROUP) -> None:
        if version not in ("v1", "v2"):
            raise CgroupError(f"unknown cgroup version {version!r}")
        self.version, self.root, self.group = version, root, group
        self._prepared = False

    def dirs(self, machine_id: str) -> list[str]:
        """The directories a machine's processes join (host paths)."""
        if self.version == "v2":
            return [str(self.root / self.group / machine_id)]
        return [str(self.root / c / self.group / machine_id) for c in V1_CONTROLLERS]

    def _prepare(self) -> None:
        if self._prepared:
            return
        if self.version == "v2":
            # Children of a v2 group only get the controllers their parent delegates, at every level.
            wanted = "+cpu +memory +pids"
            with contextlib.suppress(OSError):
                (self.root / "cgroup.subtree_control").write_text(wanted)
            parent = self.root
            for part in Path(self.group).parts:
                parent = parent / part
                parent.mkdir(exist_ok=True)
                (parent / "cgroup.subtree_control").write_text(wanted)
        else:
            for c in V1_CONTROLLERS:
                (self.root / c / self.group).mkdir(parents=True, exist_ok=True)
        self._prepared = True

    def create(self, machine_id: str, limits: Limits) -> list[str]:
        """Make (or update) the machine's cgroups with these limits; the directories to join."""
        self._prepare()
        try:
            return self._create(machine_id, limits)
        except CgroupError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            self._prepared = False  # the group itself went (an operator's clean-up): make it again
            self._prepare()
            return self._create(machine_id, limits)

    def _create(self, machine_id: str, limits: Limits) -> list[str]:
        quota = max(1000, int(limits.cores * CFS_PERIOD_US))
        try:
            if self.version == "v2":
                d = self.root / self.group / machine_id
                d.mkdir(exist_ok=True)
                _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")
                _write(d / "memory.max", str(limits.memory_bytes))
                with contextlib.suppress(OSError):  # no swap accounting: nothing to limit
                    _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(limits.pids))
            else:
                base = {c: self.root / c / self.group / machine_id for c in V1_CONTROLLERS}
                for d in base.values():
                    d.mkdir(exist_ok=True)
                _write(base["memory"] / "memory.limit_in_bytes", str(limits.memory_bytes))
                with contextlib.suppress(OSError):
                    _write(base["memory"] / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
                _write(base["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(base["cpu"] / "cpu.cfs_quota_us", str(quota))
                _write(base["pids"] / "pids.max", str(limits.pids))
        except OSError as exc:
            raise CgroupError(f"cannot set up the cgroups of machine {machine_id}: {exc}") from exc
        return self.dirs(machine_id)

    def remove(self, machine_id: str) -> None:
        remove_cgroups(self.dirs(machine_id))

    def sweep(self, keep: set[str]) -> None:
        """Remove the (empty) cgroups of this store's machines that no longer exist (other stores' machines are
        in groups of their own, and may be booting)."""
        parents = [self.root / self.group] if self.version == "v2" else [
            self.root / c / self.group for c in V1_CONTROLLERS]
        for parent in parents:
            if not parent.is_dir():
                continue
            for d in parent.iterdir():
                if d.is_dir() and d.name not in keep:
                    with contextlib.suppress(OSError):
                        os.rmdir(d)

    def remove_group(self) -> None:
        """Remove the store's own group once it holds no machine (``machines destroy --all``, a test's end)."""
        parents = [self.root / self.group] if self.version == "v2" else [
            self.root / c / self.group for c in V1_CONTROLLERS]
        for parent in parents:
            with contextlib.suppress(OSError):
                os.rmdir(parent)
        self._prepared = False

    def usage(self, machine_id: str) -> Usage | None:
        """CPU time used so far and memory in use now, or None if the machine has no cgroup here."""
        try:
            if self.version == "v2":
                d = self.root / self.group / machine_id
                usec = next(int(line.split()[1]) for line in (d / "cpu.stat").read_text().splitlines()
                            if line.startswith("usage_usec "))
                return Usage(usec / 1e6, int((d / "memory.current").read_text()))
            cpu = int((self.root / "cpuacct" / self.group / machine_id / "cpuacct.usage").read_text()) / 1e9
            mem = int((self.root / "memory" / self.group / machine_id / "memory.usage_in_bytes").read_text())
            return Usage(cpu, mem)
        except (OSError, ValueError, StopIteration):
            return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def remove_store_cgroups(store_dir: Path) -> None:
    """The store's own group, once its machines are gone (whichever layout the host has)."""
    version, _ = detect()
    if version is not None:
        Cgroups(version, group=store_group(store_dir)).remove_group()


def remove_cgroups(dirs: Sequence[str], wait: float = 2.0) -> None:
    """Remove cgroup directories (those a machine record lists) once their processes are gone (they leave as
    the kernel reaps them)."""
    deadline = time.monotonic() + wait
    for d in dirs:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break  # a later start-up sweep removes it
                time.sleep(0.01)
