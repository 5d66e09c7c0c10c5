"""Machines: the isolated Linux "VMs" and Batch compute nodes that Shoal runs on one host.

A machine is what a VM or a pool node looks like from the inside: its own root filesystem built from image
layers, data disks at ``/datadisks/lun{N}``, a temporary drive, its own hostname, its own process tree with a
pid 1, and the host's network. Two runtimes provide it behind one API (:class:`MachineRuntime`); everything
crossing that API is plain data (str, int, lists, dicts), so the same calls can later go to a remote host agent.

**NamespaceRuntime** (isolation ``"namespaces"``, needs root and overlayfs). A machine is a private mount, uts
and pid namespace built by the small native helper (``native/shoal_machine.c``):

- ``/`` is an overlay of ``[skeleton, OS-disk layers (top first)..., base]`` with the OS disk's upper directory
  as the writable layer. The base is either an unpacked root filesystem (debootstrap, an imported tarball) or
  the host's own root through ``hostbase``: one shared read-only overlay of ``/`` under a small tmpfs "mask" of
  opaque directories that hides ``/tmp /var/tmp /run /root /home /work /mnt /media /srv`` and the Shoal store
  (when it is on the root filesystem), mounted once per host under ``/run/shoal`` (see ``native/hostbase.py``;
  wrapping the host root in its own overlay also avoids the kernel's ELOOP refusal when other lower layers sit
  on the same filesystem as ``/``). The skeleton is a read-only lower layer (one per machine shape, shared)
  holding the mount points (``/proc``, ``/dev``, ``/datadisks/lunN``...) so that they never show up in the OS
  disk's upper directory, which is what a snapshot captures.
- **Data disks** are presented already formatted and mounted: Azure's "attach a data disk, then partition,
  format and mount it" has no block device here. Each disk is an overlay of its layers (or of an empty layer
  for a new, empty disk) plus its own upper directory, mounted at ``/datadisks/lun{N}`` before anything runs.
  Files written there land in the disk's upper directory, which outlives the machine, so a disk keeps its
  content across machines and can be snapshotted on its own.
- The **temporary drive** (``temp_dir``) is mounted at ``/mnt``; ``/mnt/resource`` is a symlink to ``.`` in it,
  so both conventions of Azure Linux images (``/mnt`` and ``/mnt/resource``) reach it. It is deleted with the
  machine (unless ``destroy(..., keep_temp=True)``, e.g. for a reboot).
- A minimal ``/dev`` (null zero full random urandom tty, a private devpts, ``/dev/shm``), a fresh ``/proc``, a
  read-only ``/sys``, a tmpfs ``/run``, the host's ``/etc/resolv.conf`` and a per-machine ``/etc/hosts`` and
  ``/etc/hostname``, read-only. The network is the host's (apt-get and pip work inside).
- The machine is held alive by a tiny init (pid 1 of its pid namespace; reaps orphans) started in a session
  of its own, so machines survive a crash (even ``kill -9``) of the server. ``machine.json`` records the init's
  pid and start time (pid reuse cannot fool us); :meth:`NamespaceRuntime.adopt` finds them again at start-up.
  Destroying a machine kills its init, which makes the kernel kill everything inside and drop every mount; no
  machine mount ever exists in the server's own mount namespace.
- Commands enter the machine through ``setns`` (uts, pid, mount) and run as pid ``N > 1`` inside it, with exactly
  the environment given, in their own session. On timeout (or :meth:`kill`) their whole process tree is killed,
  daemonised children included; the machine keeps running.

*Isolation level*: fidelity and protection against accidents, **not a security boundary**. A command runs as
real root on the host's kernel unless ``user`` is given (no user namespace, no capability drop, no seccomp, no
cgroup limits; the network is shared). It cannot see the host's private directories, other machines, or the
store, and writes never reach the host's files.

**ProcessRuntime** (isolation ``"process"``: no root, no overlayfs, macOS). A machine is a set of plain
directories: the OS disk's upper directory holds the root materialized from its layers (not possible for the
host base: commands then see the host itself), each data disk's upper directory holds its materialized layers,
and commands are plain subprocesses. Paths inside the machine are only mapped for the working directory
(``/datadisks/lunN``, ``/mnt/resource`` and binds map to their directories; other paths map into the
materialized root, or to the host for the host base); absolute paths inside commands are not rewritten.
Commands get ``SHOAL_MACHINE_ROOT``, ``SHOAL_TEMP_DIR`` and ``SHOAL_DATADISK_LUN<N>`` with the host directories
that stand for the machine's root, temporary drive and data disks. Deletions in a disk with layers do not become
whiteouts. No hostname, no pid namespace; a timeout kills the command's process group only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from shoal.runtime import idranges, safepath
from shoal.runtime.cgroups import CgroupError, Cgroups, Limits, remove_cgroups
from shoal.runtime.idranges import IdRange, IdRangeError, IdRanges
from shoal.runtime.layers import LayerStore
from shoal.runtime.native import MachineError, ensure_helper, join, starter
from shoal.runtime.native.hostbase import HOST_MASKED, HostBase, mount_points
from shoal.runtime.native.join import OUTPUT_CAP
from shoal.runtime.native.provisioner import Provisioner, ProvisionerGone
from shoal.runtime.nodenet import NodeNetwork
from shoal.runtime.reserve import NodeReserve, Shell

__all__ = ["HOST_MASKED", "OUTPUT_CAP", "DiskMount", "Hardening", "MachineError", "MachineRuntime", "MachineSpec",
           "NamespaceRuntime", "ProcessRuntime", "apply_layer_dirs", "detect_runtime", "mount_points",
           "probe_namespaces", "store_materializer"]

log = logging.getLogger(__name__)

_MACHINE_ID = re.compile(r"[a-z0-9-]{1,64}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})")
_KILL_WAIT = 10.0  # seconds to wait for a machine's init to die
Spawned = list[dict[str, Any] | Exception]  # spawn_many's results: spawn's, or the error of that command alone
CONTROL_SOCKET = "control"  # in the machine's directory: its init's starter socket (only the host's root)


# Aliases for annotations inside classes whose ``list`` method shadows the builtin.
_Argv = list[str]
_InitList = list[tuple[str, int, int]]


@dataclass(frozen=True)
class DiskMount:
    """One disk as the runtime mounts it."""

    lower: list[str]  # unpacked layer dirs, TOP first (overlay lowerdir order); may be empty
    upper: str  # the disk's writable dir (outlives the machine)
    work: str  # overlay workdir on the same filesystem as upper


@dataclass(frozen=True)
class MachineSpec:
    machine_id: str  # [a-z0-9-]{1,64}
    hostname: str
    base: str  # "host", or the path of an unpacked root filesystem (the bottom layer)
    os_disk: DiskMount  # its lower = OS layers above the base, TOP first
    data_disks: dict[int, DiskMount]  # lun -> disk
    temp_dir: str  # the temporary drive: /mnt and /mnt/resource inside
    binds: list[tuple[str, str, bool]] = field(default_factory=list)  # (host path, path inside, read only)
    # File systems mounted in a node (its pool's mountConfiguration, ``runtime/mounts.py``): binds below /mnt
    # whose files the node's root writes as the host's root owns them (id-mapped in a user namespace).
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)  # (host dir, path inside, read only)
    volatile: bool = False  # OS disk without fsync (pool nodes); VMs whose disks get captured stay durable
    # Its own network (hardened hosts): {"address": "10.224.16.4", "prefix": 20, "gateway": "10.224.0.1"}.
    network: dict[str, Any] | None = None
    # Its VM size: {"cores": 2, "memoryBytes": ..., "pids": ...} (cgroup limits on hardened hosts).
    limits: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        def disk(d: DiskMount) -> dict[str, Any]:
            return {"lower": list(d.lower), "upper": d.upper, "work": d.work}

        return {"machine_id": self.machine_id, "hostname": self.hostname, "base": self.base,
                "os_disk": disk(self.os_disk), "data_disks": {lun: disk(d) for lun, d in self.data_disks.items()},
                "temp_dir": self.temp_dir, "binds": [tuple(b) for b in self.binds],
                "mounts": [tuple(m) for m in self.mounts], "volatile": self.volatile,
                "network": self.network, "limits": self.limits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MachineSpec:
        def disk(d: Mapping[str, Any]) -> DiskMount:
            return DiskMount(lower=list(d["lower"]), upper=d["upper"], work=d["work"])

        return cls(machine_id=data["machine_id"], hostname=data["hostname"], base=data["base"],
                   os_disk=disk(data["os_disk"]),
                   data_disks={int(lun): disk(d) for lun, d in data["data_disks"].items()},
                   temp_dir=data["temp_dir"], binds=[(h, i, bool(ro)) for h, i, ro in data.get("binds", [])],
                   mounts=[(h, i, bool(ro)) for h, i, ro in data.get("mounts", [])],
                   volatile=bool(data.get("volatile", False)), network=data.get("network"),
                   limits=data.get("limits"))


@dataclass(frozen=True)
class Hardening:
    """What makes a namespace machine a security boundary (see the module docstring, "Hardened machines").

    Each piece is chosen by the operator; ``shoal serve`` refuses to start without one it was asked for."""

    user_namespaces: bool = False
    network: NodeNetwork | None = None  # None: machines share the host's network
    cgroups: Cgroups | None = None  # None: no per-machine limits
    reserve: int = 0  # machines' user and network namespaces kept made ahead (see runtime/reserve.py)

    @property
    def level(self) -> str:
        """How the isolation level is printed."""
        parts = ["user namespaces" if self.user_namespaces else "no user namespaces",
                 f"own network ({self.network.space})" if self.network else "host network",
                 f"cgroup {self.cgroups.version} limits" if self.cgroups else "no cgroup limits"]
        if self.reserve:
            parts.append(f"{self.reserve} machines' namespaces kept made ahead")
        return ", ".join(parts)


class MachineRuntime(Protocol):
    """What reconcilers call. Results are plain dicts (see :meth:`run` for the result shape)."""

    isolation: str  # "namespaces" or "process"

    def create(self, spec: MachineSpec, *, provisioner: str | None = None) -> dict[str, Any]: ...
    def start_provisioner(self, key: str) -> Any: ...
    def stop_provisioner(self, key: str) -> None: ...
    def provisioners(self) -> list[str]: ...
    def destroy(self, machine_id: str, *, keep_temp: bool = False) -> None: ...
    def status(self, machine_id: str) -> str: ...
    def list(self) -> list[str]: ...
    def adopt(self) -> dict[str, str]: ...
    def host_path(self, machine_id: str, path: str) -> str: ...

    def run(self, machine_id: str, argv: Sequence[str], *, env: dict[str, str], cwd: str = "/",
            user: str | None = None, stdout: str | None = None, stderr: str | None = None,
            timeout: float | None = None, stdin: bytes | None = None) -> dict[str, Any]: ...

    def spawn(self, machine_id: str, argv: Sequence[str], *, env: dict[str, str], cwd: str = "/",
              user: str | None = None, stdout: str | None = None, stderr: str | None = None,
              timeout: float | None = None, stdin: bytes | None = None,
              exit_file: str | None = None, make_cwd: int = 0) -> dict[str, Any]: ...

    def spawn_many(self, requests: Sequence[Mapping[str, Any]]) -> Spawned: ...
    def wait(self, pid: int, timeout: float | None = None) -> dict[str, Any] | None: ...
    def kill(self, pid: int) -> None: ...


# ---------------------------------------------------------------------------------------------- shared pieces


def _check_spec(spec: MachineSpec) -> None:
    if not _MACHINE_ID.fullmatch(spec.machine_id):
        raise MachineError(f"invalid machine id {spec.machine_id!r}: use 1-64 of [a-z0-9-]")
    if not _HOSTNAME.fullmatch(spec.hostname):
        raise MachineError(f"invalid hostname {spec.hostname!r}")
    for lun in spec.data_disks:
        if not 0 <= lun <= 63:
            raise MachineError(f"invalid LUN {lun}: 0-63")
    for _, inside, _ in spec.binds:
        if not inside.startswith("/") or ".." in inside.split("/"):
            raise MachineError(f"bind target {inside!r} must be an absolute path inside the machine")
    for _, inside, _ in spec.mounts:
        # Mounted on the temporary drive, whose mount points the host agent made without following links.
        if not inside.startswith("/mnt/") or ".." in inside.split("/"):
            raise MachineError(f"mount target {inside!r} must be below /mnt inside the machine")


def _check_command(argv: Sequence[str], env: Mapping[str, str], cwd: str, timeout: float | None) -> None:
    if not argv:
        raise MachineError("empty command")
    if not cwd.startswith("/"):
        raise MachineError(f"cwd {cwd!r} must be an absolute path inside the machine")
    if timeout is not None and timeout <= 0:
        raise MachineError("timeout must be positive")
    for key in env:
        if not key or "=" in key:
            raise MachineError(f"invalid environment variable name {key!r}")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a host process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # the command name may contain spaces
    return fields[0].decode(), int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    if not pid or not start:
        return False
    st = _proc_stat(pid)
    return st is not None and st[1] == start and st[0] not in ("Z", "X")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(data))  # no indent: that would take json's pure-Python encoder
    os.replace(tmp, path)


def _read_capped(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(OUTPUT_CAP)
    except FileNotFoundError:
        return b""


def _result(code: int, sig: int | None, timed_out: bool, error: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"exitCode": code, "signal": sig, "timedOut": timed_out}
    if error:
        res["error"] = error
    return res


LOCK_STRIPES = 256  # files under machines/.locks that serialize work on one machine across processes


class _Records:
    """machines/<id>/machine.json files and per-machine locks, shared by both runtimes.

    The lock of a machine holds across processes too (an ``flock`` on one of :data:`LOCK_STRIPES` files picked
    by the machine's id): servers sharing one store (API replicas of one host on one PostgreSQL) never create or
    destroy the same machine at once."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = Path(store_dir)
        self.machines_dir = self.store_dir / "machines"
        self.machines_dir.mkdir(parents=True, exist_ok=True)
        self.locks_dir = self.machines_dir / ".locks"
        self.locks_dir.mkdir(mode=0o700, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def dir(self, machine_id: str) -> Path:
        return self.machines_dir / machine_id

    @contextlib.contextmanager
    def lock(self, machine_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(machine_id, threading.Lock())
        stripe = int(hashlib.sha256(machine_id.encode()).hexdigest()[:8], 16) % LOCK_STRIPES
        with lock:
            fd = os.open(self.locks_dir / f"{stripe:03d}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # (drops the flock)

    def join_store(self, held: IO[str] | None) -> tuple[IO[str], bool]:
        """Mark this server as one using the store (a shared ``flock`` held for the life of the process):
        ``(lock file, alone)``. ``alone`` (no other server uses the store) holds the lock exclusively until
        :meth:`shared` downgrades it: the caller may clean up what others left."""
        if held is not None:
            held.close()
        handle = open(self.store_dir / "servers.lock", "a")  # noqa: SIM115 (held for the life of the process)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle, True
        except BlockingIOError:
            fcntl.flock(handle, fcntl.LOCK_SH)  # (waits while a server starting alone cleans up)
            return handle, False

    @staticmethod
    def shared(handle: IO[str]) -> None:
        fcntl.flock(handle, fcntl.LOCK_SH)

    def read(self, machine_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.dir(machine_id) / "machine.json").read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None
        return data

    def write(self, machine_id: str, record: Mapping[str, Any]) -> None:
        _write_json(self.dir(machine_id) / "machine.json", record)

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.machines_dir.iterdir() if (p / "machine.json").is_file())

    def remove(self, machine_id: str, record: Mapping[str, Any] | None, *, keep_temp: bool) -> None:
        shutil.rmtree(self.dir(machine_id), ignore_errors=True)
        temp = record and record.get("spec", {}).get("temp_dir")
        if temp and not keep_temp:
            shutil.rmtree(temp, ignore_errors=True)
            idranges.forget(Path(temp))


# ---------------------------------------------------------------------------------------------- namespaces


@dataclass
class _Capture:
    """Scratch files of a spawned command: output the caller did not send to a path, and its stdin."""

    out: Path | None
    err: Path | None
    stdin: Path | None

    @classmethod
    def make(cls, directory: Path, stdout: str | None, stderr: str | None, stdin: bytes | None) -> _Capture:
        if stdout is not None and stderr is not None and stdin is None:
            return cls(None, None, None)  # (a task: its output goes to files in the machine)
        directory.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:12]
        cap = cls(None if stdout is not None else directory / f"{tag}.out",
                  None if stderr is not None else directory / f"{tag}.err",
                  None if stdin is None else directory / f"{tag}.in")
        if cap.stdin is not None and stdin is not None:
            cap.stdin.write_bytes(stdin)
        return cap

    def harvest(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.out:
            result["stdout"] = _read_capped(self.out)
        if self.err:
            result["stderr"] = _read_capped(self.err)
        for path in (self.out, self.err, self.stdin):
            if path is not None:
                path.unlink(missing_ok=True)
        return result


class NamespaceRuntime:
    """Machines as private mount + uts + pid namespaces (see the module docstring)."""

    isolation = "namespaces"

    def __init__(self, store_dir: Path, *, hide: Sequence[str] = (), host_base_dir: Path | None = None,
                 hardening: Hardening | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.records = _Records(self.store_dir)
        self.hardening = hardening or Hardening()
        self.ids = IdRanges(self.store_dir / "idranges") if self.hardening.user_namespaces else None
        net = self.hardening.network
        self.reserve = (NodeReserve(self.helper, self.ids, net.space, self.hardening.reserve)
                        if self.ids is not None and net is not None and self.hardening.reserve > 0 else None)
        self.host_base = HostBase(host_base_dir, [str(self.store_dir), *hide])
        self._empty = self.store_dir / "bases" / "empty"  # the lower layer of an empty data disk
        self._hosts_text: str | None = None
        self._inits: dict[str, tuple[int, int]] = {}  # machine id -> (init pid, start time)
        self._joins: dict[str, list[str]] = {}  # machine id -> extra `join` arguments (its cgroups)
        self._id_bases: dict[str, int | None] = {}  # machine id -> its id range's base (None: host ids)
        # spawned commands: host pid (of the helper, or of the starter's child) -> ...
        self._jobs: dict[int, tuple[str, join.Started | starter.Job, _Capture]] = {}
        self._jobs_lock = threading.Lock()
        self._starters: dict[str, starter.Starter] = {}  # machine id -> the connection to its init's starter
        self._helper: str | None = None
        # key (a gallery replica, or a boot stream) -> its resident provisioner
        self._provisioners: dict[str, Provisioner] = {}
        self._skeletons: set[str] = set()  # shapes whose skeleton exists
        self._provisioners_lock = threading.Lock()
        self._store_lock: IO[str] | None = None  # see adopt()

    def helper(self) -> str:
        """The native helper's path (compiled on first use)."""
        if self._helper is None:
            self._helper = str(ensure_helper(self.store_dir / "bin"))
        return self._helper

    # ------------------------------------------------------------------ lifecycle

    def create(self, spec: MachineSpec, *, provisioner: str | None = None) -> dict[str, Any]:
        """Create and start the machine (idempotent: an already running machine is returned as it is).

        ``provisioner``: build it through the resident provisioner kept under that key (started if it is not
        running, see :meth:`start_provisioner`) instead of launching the helper."""
        _check_spec(spec)
        with self.records.lock(spec.machine_id):
            record = self.records.read(spec.machine_id)
            if record and _alive(record.get("initPid"), record.get("initStartTime")):
                return self._info(record)
            if record or self.records.dir(spec.machine_id).exists():
                self._kill_strays(spec.machine_id)
                self.records.remove(spec.machine_id, record, keep_temp=False)
            base = self.host_base.ensure() if spec.base == "host" else spec.base
            if not os.path.isdir(base):
                raise MachineError(f"base {base!r} is not a directory")
            mdir = self.records.dir(spec.machine_id)
            ids: IdRange | None = None
            shell: Shell | None = None
            cgroups: list[str] = []
            try:
                shell, ids = self._id_range(spec)
                cgroups = self._cgroups_of(spec)
                argv = self._prepare(spec, mdir, base, ids, cgroups, shell)
                pid = self._build(spec.machine_id, argv, provisioner)
                st = _proc_stat(pid)
                if st is None:
                    raise MachineError(f"machine {spec.machine_id}: its init {pid} died right after start")
            except BaseException:
                self._kill_strays(spec.machine_id)
                shutil.rmtree(mdir, ignore_errors=True)
                self._release(spec.machine_id, ids.base if ids else None, cgroups)
                raise
            finally:
                if shell is not None and self.reserve is not None:
                    self.reserve.used(shell)  # the init holds its namespaces (or is gone): the keeper lets go
            record = {"machineId": spec.machine_id, "isolation": self.isolation, "initPid": pid,
                      "initStartTime": st[1], "createdAt": time.time(), "spec": spec.to_dict(),
                      "idBase": ids.base if ids else None, "cgroups": cgroups}
            self.records.write(spec.machine_id, record)
            self._inits[spec.machine_id] = (pid, st[1])
            self._joins[spec.machine_id] = _join_extra(record)
            self._id_bases[spec.machine_id] = record["idBase"]
            return self._info(record)

    # ------------------------------------------------------------------ hardening

    def _id_range(self, spec: MachineSpec) -> tuple[Shell | None, IdRange | None]:
        """The machine's host id range: its disks' current owner when that range is free; for a machine of
        fresh disks on a network, a reserve shell's (with the shell) when one is ready."""
        if self.ids is None:
            return None, None
        prefer = idranges.recorded_base(spec.os_disk.upper)
        if self.reserve is not None:
            self.reserve.demand()
            taken = self.reserve.take(spec.machine_id) if prefer is None and spec.network else None
            if taken is not None:
                return taken
        try:
            return None, self.ids.allocate(spec.machine_id, prefer=prefer)
        except IdRangeError as exc:
            raise MachineError(f"machine {spec.machine_id}: {exc}") from exc

    def _cgroups_of(self, spec: MachineSpec) -> list[str]:
        cg = self.hardening.cgroups
        if cg is None or not spec.limits:
            return []
        try:
            return cg.create(spec.machine_id, Limits.from_dict(spec.limits))
        except CgroupError as exc:
            raise MachineError(str(exc)) from exc

    def _release(self, machine_id: str, id_base: int | None, cgroups: Sequence[str]) -> None:
        """Give back what a machine held on the host beyond its processes: its id range, its cgroups."""
        if self.ids is not None and id_base is not None:
            self.ids.release(id_base, machine_id)
        if cgroups:
            remove_cgroups(cgroups)

    def id_range(self, machine_id: str) -> IdRange | None:
        """The host ids of a running machine's users (None: it runs with the host's ids)."""
        if machine_id in self._id_bases:  # a machine this runtime started or adopted
            known = self._id_bases[machine_id]
            return IdRange(known) if known else None
        record = self.records.read(machine_id)
        base = record.get("idBase") if record else None
        return IdRange(int(base)) if base else None

    def usage(self, machine_id: str) -> dict[str, float] | None:
        """CPU seconds and memory bytes used, from the machine's cgroup (None without one)."""
        cg = self.hardening.cgroups
        found = cg.usage(machine_id) if cg is not None else None
        return {"cpuSeconds": found.cpu_seconds, "memoryBytes": found.memory_bytes} if found else None

    def _build(self, machine_id: str, argv: _Argv, provisioner: str | None) -> int:
        """Run ``shoal-machine init`` (launched, or through a resident provisioner): the machine's init pid."""
        if provisioner is not None:
            try:
                try:
                    return self.start_provisioner(provisioner).init(argv[2:])
                except ProvisionerGone:  # it ended since its last build (nothing was started): a new one
                    self.stop_provisioner(provisioner)
                    return self.start_provisioner(provisioner).init(argv[2:])
            except MachineError as exc:
                raise MachineError(f"machine {machine_id}: {exc}") from exc
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env={}, start_new_session=True,
                              timeout=60)
        if proc.returncode != 0:
            raise MachineError(f"machine {machine_id}: {proc.stderr.decode(errors='replace').strip()}")
        return int(proc.stdout)

    def start_provisioner(self, key: str) -> Provisioner:
        """The resident provisioner kept under ``key`` (a gallery replica), started if it is not running."""
        with self._provisioners_lock:
            found = self._provisioners.get(key)
            if found is not None and not found.alive:
                found.stop()  # reap it
                found = None
            if found is None:
                found = self._provisioners[key] = Provisioner(self.helper())
            return found

    def stop_provisioner(self, key: str) -> None:
        """Stop the provisioner kept under ``key`` (if any); machines it built keep running."""
        with self._provisioners_lock:
            found = self._provisioners.pop(key, None)
        if found is not None:
            found.stop()

    def provisioners(self) -> list[str]:
        with self._provisioners_lock:
            return list(self._provisioners)

    def _prepare(self, spec: MachineSpec, mdir: Path, base: str, ids: IdRange | None, cgroups: list[str],
                 shell: Shell | None = None) -> _Argv:
        """Make the machine's directories and return the helper's command line (``shell``: the machine enters
        that reserve shell's namespaces, which hold ``ids``, instead of making its own)."""
        skel = self._skeleton(spec)
        os.makedirs(mdir / "root")
        os.mkdir(mdir / "etc")
        (mdir / "etc" / "hostname").write_text(spec.hostname + "\n")
        (mdir / "etc" / "hosts").write_text(self._hosts() + f"127.0.1.1\t{spec.hostname}\n")
        for disk in (spec.os_disk, *spec.data_disks.values()):
            os.makedirs(disk.upper, exist_ok=True)
            os.makedirs(disk.work, exist_ok=True)
        if spec.volatile:
            # A volatile overlay leaves this marker and the kernel refuses the next mount until it is gone:
            # accepting that risk (no fsync) is exactly what "volatile" means for an ephemeral node.
            shutil.rmtree(Path(spec.os_disk.work) / "work" / "incompat" / "volatile", ignore_errors=True)
        os.makedirs(spec.temp_dir, exist_ok=True)
        if not os.path.lexists(os.path.join(spec.temp_dir, "resource")):
            os.symlink(".", os.path.join(spec.temp_dir, "resource"))
        self._empty.mkdir(parents=True, exist_ok=True)
        # What the machine writes belongs to its id range: its disks' uppers and its temporary drive.
        for directory in (spec.os_disk.upper, *(d.upper for d in spec.data_disks.values()), spec.temp_dir):
            idranges.own(directory, ids)

        argv = [self.helper(), "init", "--id", spec.machine_id, "--root", str(mdir / "root"),
                "--control", str(mdir / CONTROL_SOCKET), "--overlay", "/", "--lower", skel]
        argv += [a for layer in spec.os_disk.lower for a in ("--lower", layer)]
        if ids is not None and spec.base == "host":
            argv += ["--lower-host", str(self.host_base.mask)]  # id-mapped per machine (see the helper)
        else:
            argv += ["--lower", base]
        argv += ["--upper", spec.os_disk.upper, "--work", spec.os_disk.work]
        if spec.volatile:
            argv.append("--volatile")
        for lun in sorted(spec.data_disks):
            disk = spec.data_disks[lun]
            argv += ["--overlay", f"/datadisks/lun{lun}"]
            argv += [a for layer in (disk.lower or [str(self._empty)]) for a in ("--lower", layer)]
            argv += ["--upper", disk.upper, "--work", disk.work]
        argv += ["--bind", spec.temp_dir, "/mnt", "--tmpfs", "/run", "mode=755"]
        resolv = self.hardening.network.resolv_conf() if self.hardening.network is not None else None
        if resolv is not None:
            (mdir / "etc" / "resolv.conf").write_text(resolv)
            argv += ["--robind", str(mdir / "etc" / "resolv.conf"), "/etc/resolv.conf"]
        elif os.path.exists("/etc/resolv.conf"):
            argv += ["--robind", "/etc/resolv.conf", "/etc/resolv.conf"]
        argv += ["--robind", str(mdir / "etc" / "hosts"), "/etc/hosts",
                 "--robind", str(mdir / "etc" / "hostname"), "/etc/hostname"]
        for host, inside, read_only in sorted(spec.binds, key=lambda b: b[1].count("/")):
            argv += ["--robind" if read_only else "--bind", host, inside]
        for host, inside, read_only in sorted(spec.mounts, key=lambda b: b[1].count("/")):
            argv += ["--roidbind" if read_only else "--idbind", host, inside]
        argv += ["--hostname", spec.hostname, "--sysfs", "--empty", str(self._empty)]  # (what masks show)
        if ids is not None:
            argv += ["--userns", f"{ids.base}:{ids.size}"]
        if shell is not None:
            argv += ["--shell", *shell.paths]
        net = self.hardening.network
        if net is not None and spec.network:
            veth = shell.veth if shell is not None else net.veth(spec.machine_id)
            argv += ["--net", veth, f"{spec.network['address']}/{spec.network['prefix']}",
                     str(spec.network.get("gateway") or net.gateway)]
        elif net is not None:
            argv.append("--netns")  # no address given: a network of its own all the same, with loopback only
        for directory in cgroups:
            argv += ["--cgroup", directory]
        return argv

    def _skeleton(self, spec: MachineSpec) -> str:
        """The skeleton lower layer of a machine: its mount points (``/proc``, ``/dev``, ``/datadisks/lunN``,
        bind targets...), so that they never show up in the OS disk's upper directory. It is read-only, so all
        machines of one shape share one, made on first use under ``skeletons/``."""
        dirs = ["proc", "dev", "sys", "run", "mnt", "etc", *(f"datadisks/lun{lun}" for lun in spec.data_disks)]
        files = ["etc/hosts", "etc/hostname"] + (["etc/resolv.conf"] if os.path.exists("/etc/resolv.conf") else [])
        for host, inside, _ in spec.binds:
            if not os.path.exists(host):
                raise MachineError(f"bind source {host} does not exist")
            # Under /mnt and the data disks the helper makes the mount points (in the temporary drive or disk).
            if not (inside == "/mnt" or inside.startswith(("/mnt/", "/datadisks/"))):
                (dirs if os.path.isdir(host) else files).append(inside.strip("/"))
        shape = json.dumps([sorted(set(dirs)), sorted(set(files)), 2])  # 2: directories keep the usual modes
        path = self.store_dir / "skeletons" / hashlib.sha256(shape.encode()).hexdigest()[:16]
        if shape in self._skeletons or path.is_dir():
            self._skeletons.add(shape)
            return str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".skel-", dir=path.parent))
        for rel in dirs:
            (staging / rel).mkdir(parents=True, exist_ok=True)
        for rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).touch()
        # The skeleton is the top lower layer: a directory it holds shows with the skeleton's mode in the
        # machine, so a mount point's parents (``/tmp`` for a bind target below it) keep the mode that
        # directory has on a usual system (the host's), not mkdir's 0755: ``/tmp`` stays 1777.
        for directory in sorted({str(p) for rel in [*dirs, *files] for p in Path(rel).parents if str(p) != "."}
                                | set(dirs)):
            with contextlib.suppress(OSError):
                os.chmod(staging / directory, stat.S_IMODE(os.stat(Path("/") / directory).st_mode))
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, path)
        except OSError:  # made by another thread or process meanwhile: the same content
            shutil.rmtree(staging, ignore_errors=True)
        self._skeletons.add(shape)
        return str(path)

    def _hosts(self) -> str:
        if self._hosts_text is None:
            try:
                text = Path("/etc/hosts").read_text()
            except OSError:
                text = "127.0.0.1\tlocalhost\n"
            self._hosts_text = text if text.endswith("\n") else text + "\n"
        return self._hosts_text

    def _info(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"machineId": record["machineId"], "isolation": self.isolation, "initPid": record["initPid"],
                "hostname": record["spec"]["hostname"], "rootPath": f"/proc/{record['initPid']}/root"}

    def destroy(self, machine_id: str, *, keep_temp: bool = False) -> None:
        """Kill everything in the machine, drop its mounts, remove machines/<id> (never the disks' uppers)."""
        with self.records.lock(machine_id):
            record = self.records.read(machine_id)
            self._inits.pop(machine_id, None)
            self._joins.pop(machine_id, None)
            self._id_bases.pop(machine_id, None)
            self._forget_starter(machine_id)
            if record:
                _kill_init(record.get("initPid"), record.get("initStartTime"))
            elif self.records.dir(machine_id).exists():
                self._kill_strays(machine_id)  # a create() that was interrupted before it wrote the record
            self.records.remove(machine_id, record, keep_temp=keep_temp)
            self._release(machine_id, (record or {}).get("idBase"), (record or {}).get("cgroups") or [])

    def status(self, machine_id: str) -> str:
        record = self.records.read(machine_id)
        if record is None:
            return "missing"
        return "running" if _alive(record.get("initPid"), record.get("initStartTime")) else "stopped"

    def netmount(self, machine_id: str, fstype: str, source: str, target: str, data: str) -> None:
        """Mount a network file system (nfs, cifs) at ``target`` in a running machine: done by the host's root
        in the machine's mount and network namespaces, since a user-namespaced root may not mount these. The
        data (with a CIFS password) goes on stdin, out of other host users' sight."""
        init = self.init_pid(machine_id)
        if init is None:
            raise MachineError(f"machine {machine_id} is not running")
        proc = subprocess.run([self.helper(), "netmount", "--pid", str(init), "--type", fstype, "--source", source,
                               "--target", target], input=data.encode(), capture_output=True, env={}, timeout=120)
        if proc.returncode != 0:
            raise MachineError(proc.stderr.decode(errors="replace").strip().removeprefix("shoal-machine: "))

    def init_pid(self, machine_id: str) -> int | None:
        """The host pid of the machine's init (its pid namespace identifies the machine's processes)."""
        record = self.records.read(machine_id)
        pid = record.get("initPid") if record else None
        return int(pid) if pid and _alive(pid, record.get("initStartTime") if record else None) else None

    def list(self) -> list[str]:
        return self.records.ids()

    def adopt(self) -> dict[str, str]:
        """At start-up (before creating machines): re-find running machines; clean up dead ones, and the inits
        and directories left by an interrupted create. Returns ``{machine id: "running" | "stopped"}``; stopped
        ones are gone afterwards (their disks' uppers are kept).

        When another server uses the same store (replicas of one host sharing a database), nothing is cleaned
        up: what looks interrupted may be that server's create in progress. Running machines are re-found."""
        self._store_lock, alone = self.records.join_store(self._store_lock)
        try:
            return self._adopt(cleanup=alone)
        finally:
            self.records.shared(self._store_lock)
            if self.reserve is not None:
                self.reserve.start()  # (after the clean-up freed the ranges of an earlier server's shells)

    def _adopt(self, *, cleanup: bool) -> dict[str, str]:
        found: dict[str, str] = {}
        for machine_id in self.records.ids():
            with self.records.lock(machine_id):
                record = self.records.read(machine_id)
                if record and _alive(record.get("initPid"), record.get("initStartTime")):
                    self._inits[machine_id] = (record["initPid"], record["initStartTime"])
                    self._joins[machine_id] = _join_extra(record)
                    self._id_bases[machine_id] = record.get("idBase")
                    found[machine_id] = "running"
                elif cleanup:
                    self._kill_strays(machine_id)
                    self.records.remove(machine_id, record, keep_temp=False)
                    self._release(machine_id, (record or {}).get("idBase"), (record or {}).get("cgroups") or [])
                    found[machine_id] = "stopped"
                else:
                    found[machine_id] = "stopped"  # left to the machine's owner (a loop of a server)
        if not cleanup:
            return found
        known = {(pid, start) for pid, start in self._inits.values()}
        for machine_id, pid, start in self._scan_inits():
            if (pid, start) not in known:
                log.warning("killing the orphaned init %d of machine %s", pid, machine_id)
                _kill_init(pid, start)
        for path in self.records.machines_dir.iterdir():
            if path.name not in found and not path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)  # a create() interrupted before it wrote machine.json
        running = {m for m, state in found.items() if state == "running"}
        if self.ids is not None:
            # (the ranges of this runtime's own reserve shells too, if it adopts again while it holds some)
            self.ids.retain_only(running | (self.reserve.holders() if self.reserve is not None else set()))
        if self.hardening.cgroups is not None:
            self.hardening.cgroups.sweep(running)
        return found

    def _scan_inits(self) -> _InitList:
        """(machine id, pid, start time) of every init of this store's machines running on the host."""
        roots = str(self.records.machines_dir) + "/"
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if len(args) < 4 or not os.path.basename(args[0]).startswith(b"shoal-machine") or args[1] != b"init":
                continue
            with contextlib.suppress(ValueError, IndexError):
                root = args[args.index(b"--root") + 1].decode()
                st = _proc_stat(int(entry))
                if root.startswith(roots) and root.endswith("/root") and st and st[0] not in ("Z", "X"):
                    found.append((root[len(roots):-len("/root")], int(entry), st[1]))
        return found

    def _kill_strays(self, machine_id: str) -> None:
        for mid, pid, start in self._scan_inits():
            if mid == machine_id:
                _kill_init(pid, start)

    def unmount_host_base(self) -> None:
        """Detach the host base (uninstall, tests with a private ``host_base_dir``). It is shared by every store
        on the host that masks the same directories; running machines are not affected."""
        self.host_base.unmount()

    def host_path(self, machine_id: str, path: str) -> str:
        """A host path that reaches ``path`` inside the running machine (through its init's root)."""
        pid, _ = self._init_of(machine_id)
        return f"/proc/{pid}/root/{path.lstrip('/')}"

    # ------------------------------------------------------------------ commands

    def _init_of(self, machine_id: str) -> tuple[int, int]:
        init = self._inits.get(machine_id)
        if init is None:
            record = self.records.read(machine_id)
            if not record or not _alive(record.get("initPid"), record.get("initStartTime")):
                raise MachineError(f"machine {machine_id} is not running")
            init = self._inits[machine_id] = (record["initPid"], record["initStartTime"])
            self._joins[machine_id] = _join_extra(record)
        return init

    def _join_argv(self, machine_id: str, argv: Sequence[str], cwd: str, user: str | None,
                   files: Sequence[tuple[str, str | None]], timeout: float | None,
                   exit_file: str | None = None) -> _Argv:
        """``files``: (helper option, path) pairs; ``--stdin``/``--stdout``/``--stderr`` take host paths (Shoal's
        scratch files), ``--in-stdin``/``--in-stdout``/``--in-stderr`` paths inside the machine."""
        pid, start = self._init_of(machine_id)
        args = [self.helper(), "join", "--init", f"{pid}:{start}", "--cwd", cwd, "--status-fd", str(join.STATUS_FD),
                *self._joins.get(machine_id, ())]
        for opt, value in (("--user", user), *files, ("--exit-file", exit_file)):
            if value is not None:
                args += [opt, value]
        if timeout is not None:
            args += ["--timeout", repr(float(timeout))]
        return [*args, "--", *argv]

    def run(self, machine_id: str, argv: Sequence[str], *, env: dict[str, str], cwd: str = "/",
            user: str | None = None, stdout: str | None = None, stderr: str | None = None,
            timeout: float | None = None, stdin: bytes | None = None) -> dict[str, Any]:
        """Run ``argv`` inside the machine and wait for it.

        ``env`` is the command's whole environment. ``stdout``/``stderr`` are paths inside the machine of files to
        write (opened there, with the machine root's rights); when None the output is captured and returned (up
        to 4 MiB each). Returns ``{"exitCode", "signal",
        "timedOut"}`` (+ ``"stdout"``/``"stderr"`` bytes when captured; + ``"error"`` when the program could not
        be started: exit code 125 for a bad user or cwd, 126/127 when it cannot be executed / is not found).
        A command killed by signal N has exitCode 128+N. On timeout its whole process tree is killed.
        """
        _check_command(argv, env, cwd, timeout)
        args = self._join_argv(machine_id, argv, cwd, user, [("--in-stdout", stdout), ("--in-stderr", stderr)],
                               timeout)
        job = join.start(args, env, feed_stdin=stdin is not None, capture_stdout=stdout is None,
                         capture_stderr=stderr is None)
        try:
            status, outputs, wait_status = join.collect(job, stdin, timeout)
        except BaseException:
            join.abort(job)
            raise
        result = join.decode(machine_id, status, wait_status)
        result.update(outputs)
        return result

    def spawn(self, machine_id: str, argv: Sequence[str], *, env: dict[str, str], cwd: str = "/",
              user: str | None = None, stdout: str | None = None, stderr: str | None = None,
              timeout: float | None = None, stdin: bytes | None = None,
              exit_file: str | None = None, make_cwd: int = 0) -> dict[str, Any]:
        """Start ``argv`` inside the machine without waiting: returns ``{"pid": host pid}`` for :meth:`wait`
        and :meth:`kill`. Output not sent to a file (a path inside the machine) is captured in scratch files and
        returned by :meth:`wait`.

        The helper runs in a session of its own, so a spawned command survives the server. Its result is then
        lost with the server unless ``exit_file`` (a host path, where the machine cannot reach) is given: the
        helper also writes the final
        status line there (``R <exit code> <signal> <timed out> ...``, see :func:`read_exit_file`).

        With ``make_cwd`` N, the machine makes the missing directories of ``cwd`` first, following no link, and
        its last N components belong to ``user`` (a task directory, made from inside the machine)."""
        found = self.spawn_many([dict(machine_id=machine_id, argv=argv, env=env, cwd=cwd, user=user, stdout=stdout,
                                      stderr=stderr, timeout=timeout, stdin=stdin, exit_file=exit_file,
                                      make_cwd=make_cwd)])[0]
        if isinstance(found, BaseException):
            raise found
        return found

    def spawn_many(self, requests: Sequence[Mapping[str, Any]]) -> Spawned:
        """:meth:`spawn` for each request (its keyword arguments, with ``machine_id``), all sent before the
        first is waited for: the machines' inits fork them meanwhile. Each result is spawn's, or its error."""
        sent: list[tuple[str, starter.Job, _Capture] | dict[str, Any] | Exception] = []
        for request in requests:
            try:
                sent.append(self._send(**request))
            except Exception as exc:
                sent.append(exc)
        results: Spawned = []
        for request, item in zip(requests, sent, strict=True):
            if not isinstance(item, tuple):
                results.append(item)
                continue
            machine_id, job, cap = item
            try:
                pid = job.started()
            except Exception as exc:
                cap.harvest({})
                if isinstance(exc, starter.Unavailable):  # the init closed the request unread: start it with join
                    try:
                        joined = self._send(**request, with_starter=False)
                        assert isinstance(joined, dict)  # (never a starter's job)
                        results.append(joined)
                    except Exception as again:
                        results.append(again)
                    continue
                results.append(exc)
                continue
            with self._jobs_lock:
                self._jobs[pid] = (machine_id, job, cap)
            results.append({"pid": pid, "machineId": machine_id})
        return results

    def _send(self, machine_id: str, argv: Sequence[str], *, env: dict[str, str], cwd: str = "/",
              user: str | None = None, stdout: str | None = None, stderr: str | None = None,
              timeout: float | None = None, stdin: bytes | None = None, exit_file: str | None = None,
              make_cwd: int = 0, with_starter: bool = True) -> tuple[str, starter.Job, _Capture] | dict[str, Any]:
        """Send a command to the machine's starter (its pid comes later), or start it with ``join`` on a machine
        that has none (made before starters) or whose starter does not take it."""
        _check_command(argv, env, cwd, timeout)
        self._init_of(machine_id)
        cap = _Capture.make(self.records.dir(machine_id) / "jobs", stdout, stderr, stdin)
        with contextlib.suppress(starter.Unavailable):
            if not with_starter:
                raise starter.Unavailable(machine_id)
            job = self._starter(machine_id).send(
                [*(("--user", user) if user is not None else ()), "--cwd", cwd,
                 *(("--make-cwd", str(make_cwd)) if make_cwd else ()),
                 *(("--timeout", repr(float(timeout))) if timeout is not None else ()),
                 *(("--in-stdout", stdout) if stdout else ()), *(("--in-stderr", stderr) if stderr else ())],
                argv, env, exit_file=exit_file, stdin=str(cap.stdin) if cap.stdin else None,
                stdout=None if stdout else str(cap.out), stderr=None if stderr else str(cap.err))
            return machine_id, job, cap
        files = [("--stdin", str(cap.stdin) if cap.stdin else None),
                 ("--in-stdout", stdout) if stdout else ("--stdout", str(cap.out)),
                 ("--in-stderr", stderr) if stderr else ("--stderr", str(cap.err)),
                 ("--make-cwd", str(make_cwd) if make_cwd else None)]
        args = self._join_argv(machine_id, argv, cwd, user, files, timeout, exit_file)
        started = join.start(args, env, feed_stdin=False, capture_stdout=False, capture_stderr=False,
                             new_session=True)
        with self._jobs_lock:
            self._jobs[started.pid] = (machine_id, started, cap)
        return {"pid": started.pid, "machineId": machine_id}

    def wait(self, pid: int, timeout: float | None = None) -> dict[str, Any] | None:
        """The result of a spawned command (as :meth:`run`), or None if it is still running after ``timeout``."""
        with self._jobs_lock:
            entry = self._jobs.get(pid)
        if entry is None:
            raise MachineError(f"no spawned command with pid {pid}")
        machine_id, job, cap = entry
        if isinstance(job, starter.Job):
            line = job.wait(timeout)
            if line is None:
                return None
            with self._jobs_lock:
                if self._jobs.pop(pid, None) is None:
                    return None  # collected by a concurrent wait()
            job.close()
            return cap.harvest(join.decode(machine_id, line, 0))
        with selectors.DefaultSelector() as sel:
            sel.register(job.status, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        with self._jobs_lock:
            if self._jobs.pop(pid, None) is None:
                return None  # collected by a concurrent wait()
        try:
            status, _, wait_status = join.collect(job, None, None)
        finally:
            job.close()
        return cap.harvest(join.decode(machine_id, status, wait_status))

    def kill(self, pid: int) -> None:
        """Kill a spawned command's whole process tree (its result then shows signal 9)."""
        with self._jobs_lock:
            entry = self._jobs.get(pid)
            if entry is not None and isinstance(entry[1], starter.Job):
                entry[1].kill()  # a word on its status socket: no pid to be reused
            elif entry is not None:  # not reaped yet, so the pid cannot have been reused
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # the helper turns this into a kill of the tree

    def _starter(self, machine_id: str) -> starter.Starter:
        """The connection to the machine's starter. An init that runs another build of the helper (a machine
        from before an upgrade) may not know this build's requests: its commands go through ``join``, which is
        this build."""
        with self._jobs_lock:
            found = self._starters.get(machine_id)
        if found is None:
            pid, _ = self._init_of(machine_id)
            try:
                current = os.path.samefile(f"/proc/{pid}/exe", self.helper())
            except OSError:
                current = False
            made = starter.Starter(str(self.records.dir(machine_id) / CONTROL_SOCKET), usable=current)
            with self._jobs_lock:
                found = self._starters.setdefault(machine_id, made)
        return found

    def _forget_starter(self, machine_id: str) -> None:
        with self._jobs_lock:
            found = self._starters.pop(machine_id, None)
        if found is not None:
            found.close()


def _join_extra(record: Mapping[str, Any]) -> list[str]:
    """What ``join`` needs besides the init: the machine's cgroups (its commands join them)."""
    return [a for d in record.get("cgroups") or [] for a in ("--cgroup", d)]


def _kill_init(pid: int | None, start: int | None) -> None:
    """SIGKILL a machine's init (the kernel then kills the whole pid namespace) and wait until it is gone."""
    if not pid or not _alive(pid, start):
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not _alive(pid, start):  # re-check now that the pidfd pins the process: no pid-reuse race
            return
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        sel = selectors.DefaultSelector()
        sel.register(pidfd, selectors.EVENT_READ)  # readable once the init (and its namespace) has exited
        if not sel.select(_KILL_WAIT):
            log.warning("machine init %d did not exit within %.0f s", pid, _KILL_WAIT)
        sel.close()
    finally:
        os.close(pidfd)


# ---------------------------------------------------------------------------------------------- fallback

Materializer = Callable[[Sequence[str], Path], None]
"""Apply unpacked layer directories (BOTTOM first) into a plain directory."""


def apply_layer_dirs(layers_bottom_to_top: Sequence[str], dest: Path) -> None:
    """Minimal overlay semantics in plain directories: whiteouts (char 0/0) delete, opaque dirs replace.

    For layer directories that are not the layer store's own (whose ``materialize`` works from digests).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for layer in layers_bottom_to_top:
        top = Path(layer)
        for dirpath, dirnames, filenames in os.walk(top):
            rel = Path(dirpath).relative_to(top)
            target_dir = dest / rel
            for name in [*dirnames, *filenames]:
                src, dst = Path(dirpath) / name, target_dir / name
                st = os.lstat(src)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # whiteout
                    _remove(dst)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if not dst.is_dir() or dst.is_symlink() or _is_opaque(src):
                        _remove(dst)
                        dst.mkdir()
                    shutil.copystat(src, dst)
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    _remove(dst)
                    shutil.copy2(src, dst, follow_symlinks=False)


def store_materializer(store_dir: Path) -> Materializer:
    """The layer store's own ``materialize`` when every directory is one of the store's unpacked layers (the
    usual case), :func:`apply_layer_dirs` otherwise (e.g. replicas, hand-made layers)."""
    unpacked = Path(store_dir) / "layers" / "unpacked"

    def materialize(layers_bottom_to_top: Sequence[str], dest: Path) -> None:
        if layers_bottom_to_top and all(Path(d).parent == unpacked for d in layers_bottom_to_top):
            LayerStore(unpacked.parent).materialize([Path(d).name for d in layers_bottom_to_top], dest)
        else:
            apply_layer_dirs(layers_bottom_to_top, dest)

    return materialize


def _is_opaque(path: Path) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        with contextlib.suppress(OSError):
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


@dataclass
class _ProcJob:
    """A command started by ProcessRuntime.spawn(), until wait() collects it."""

    proc: subprocess.Popen[bytes]
    machine_id: str
    capture: _Capture
    timed_out: threading.Event = field(default_factory=threading.Event)
    timer: threading.Timer | None = None


class ProcessRuntime:
    """Machines as plain directories and commands as plain processes (see the module docstring)."""

    isolation = "process"
    _MARKER = "shoal-materialized"  # in a disk's work dir (unused here): its layers were applied to its upper

    def __init__(self, store_dir: Path, *, materialize: Materializer | None = None,
                 run_as: str | int | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.records = _Records(self.store_dir)
        self._materialize = materialize or store_materializer(self.store_dir)
        # Commands never run as the host's root: as root we switch to an unprivileged user (no account is
        # created for it), otherwise they run as the user running Shoal.
        self.run_as = _unprivileged(run_as) if os.geteuid() == 0 else None
        if self.run_as is not None:
            # The user must reach the machines' directories: let others traverse (not list) the store.
            self.store_dir.mkdir(parents=True, exist_ok=True)
            for directory in (self.store_dir, self.store_dir.parent):
                mode = directory.stat().st_mode
                if directory.stat().st_uid == os.geteuid() and not mode & 0o001:
                    os.chmod(directory, stat.S_IMODE(mode) | 0o001)
        self._specs: dict[str, MachineSpec] = {}
        self._jobs: dict[int, _ProcJob] = {}
        self._jobs_lock = threading.Lock()

    def create(self, spec: MachineSpec, *, provisioner: str | None = None) -> dict[str, Any]:
        _check_spec(spec)
        with self.records.lock(spec.machine_id):
            record = self.records.read(spec.machine_id)
            if record is None:
                os_layers = list(reversed(spec.os_disk.lower))
                if spec.base != "host":
                    os_layers.insert(0, spec.base)
                self._prepare_disk(spec.os_disk, os_layers)
                for disk in spec.data_disks.values():
                    self._prepare_disk(disk, list(reversed(disk.lower)))
                os.makedirs(spec.temp_dir, exist_ok=True)
                if self.run_as is not None:  # everything of the machine belongs to the user its commands run as
                    for directory in (spec.os_disk.upper, *(d.upper for d in spec.data_disks.values()),
                                      spec.temp_dir):
                        _chown_tree(Path(directory), *self.run_as)
                        blocked = _unreachable(Path(directory), *self.run_as)
                        if blocked is not None:
                            raise MachineError(
                                f"machine {spec.machine_id}: its commands run as uid {self.run_as[0]}, who cannot "
                                f"reach {directory} ({blocked} is closed to it): put the state or store directory "
                                "where others may pass through (e.g. --store-dir /var/lib/shoal-store)")
                self.records.dir(spec.machine_id).mkdir(parents=True, exist_ok=True)
                record = {"machineId": spec.machine_id, "isolation": self.isolation, "initPid": None,
                          "createdAt": time.time(), "spec": spec.to_dict()}
                self.records.write(spec.machine_id, record)
            self._specs[spec.machine_id] = MachineSpec.from_dict(record["spec"])
            return {"machineId": spec.machine_id, "isolation": self.isolation, "initPid": None,
                    "hostname": spec.hostname, "rootPath": spec.os_disk.upper if spec.base != "host" else "/"}

    # No provisioners: a machine here is a set of directories, made in place.
    def start_provisioner(self, key: str) -> None:
        return None

    def stop_provisioner(self, key: str) -> None:
        return None

    def provisioners(self) -> list[str]:
        return []

    def _prepare_disk(self, disk: DiskMount, layers_bottom_to_top: Sequence[str]) -> None:
        os.makedirs(disk.upper, exist_ok=True)
        os.makedirs(disk.work, exist_ok=True)
        marker = Path(disk.work) / self._MARKER
        if layers_bottom_to_top and not marker.exists():
            self._materialize(layers_bottom_to_top, Path(disk.upper))
            marker.touch()

    def destroy(self, machine_id: str, *, keep_temp: bool = False) -> None:
        with self.records.lock(machine_id):
            record = self.records.read(machine_id)
            self._specs.pop(machine_id, None)
            with self._jobs_lock:
                jobs = [j for j in self._jobs.values() if j.machine_id == machine_id]
            for job in jobs:
                _killpg(job.proc)
            self.records.remove(machine_id, record, keep_temp=keep_temp)

    def status(self, machine_id: str) -> str:
        return "running" if self.records.read(machine_id) else "missing"

    def list(self) -> list[str]:
        return self.records.ids()

    def adopt(self) -> dict[str, str]:
        return {machine_id: "running" for machine_id in self.records.ids()}

    def _spec(self, machine_id: str) -> MachineSpec:
        spec = self._specs.get(machine_id)
        if spec is None:
            record = self.records.read(machine_id)
            if record is None:
                raise MachineError(f"machine {machine_id} is not running")
            spec = self._specs[machine_id] = MachineSpec.from_dict(record["spec"])
        return spec

    def host_path(self, machine_id: str, path: str) -> str:
        """Map a path inside the machine to the directory that stands for it."""
        spec = self._spec(machine_id)
        inside = Path("/") / path.lstrip("/")
        mapping = [(Path(i), Path(h)) for h, i, _ in spec.binds]
        mapping += [(Path(f"/datadisks/lun{lun}"), Path(d.upper)) for lun, d in spec.data_disks.items()]
        mapping += [(Path("/mnt/resource"), Path(spec.temp_dir)), (Path("/mnt"), Path(spec.temp_dir))]
        for prefix, host in sorted(mapping, key=lambda m: -len(m[0].parts)):
            if inside == prefix or prefix in inside.parents:
                return str(host / inside.relative_to(prefix))
        mine = Path(spec.os_disk.upper) / inside.relative_to("/")
        if spec.base != "host" or mine.exists():
            return str(mine)
        return str(inside)

    def _open_output(self, machine_id: str, path: str) -> Any:
        """An output file of a command, in the machine's directories: its user may have made any part of the
        path a link, so nothing is followed."""
        host = Path(self.host_path(machine_id, path))
        spec = self._spec(machine_id)
        roots = [Path(spec.temp_dir), Path(spec.os_disk.upper), *(Path(d.upper) for d in spec.data_disks.values())]
        root = next((r for r in roots if host == r or r in host.parents), None)
        if root is None:
            raise MachineError(f"machine {machine_id}: {path} is not in the machine's directories")
        fd = safepath.open_beneath(root, str(host.relative_to(root)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if self.run_as is not None:
            os.fchown(fd, *self.run_as)
        return os.fdopen(fd, "wb")

    def _output(self, machine_id: str, path: str | None, scratch: Path | None) -> Any:
        """The command's file inside the machine when given, else Shoal's scratch capture file."""
        if path:
            return self._open_output(machine_id, path)
        assert scratch is not None
        return open(scratch, "wb")  # the caller's ExitStack closes it

    def owner(self, inside_uid: int) -> tuple[int, int]:
        """The host ids files of a machine user get: the unprivileged user everything runs as."""
        return self.run_as if self.run_as is not None else (os.geteuid(), os.getegid())

    def _make_dirs(self, machine_id: str, path: str, owned: int) -> None:
        """``mkdir -p`` of a machine path; what is made, and its last ``owned`` components, belong to the user
        everything runs as (no isolation here: nothing to guard against links)."""
        host = Path(self.host_path(machine_id, path))
        made = [p for p in (host, *host.parents) if not p.exists()]
        host.mkdir(parents=True, exist_ok=True)
        uid, gid = self.owner(0)
        for directory in {*made, *[host, *host.parents][:owned]}:
            os.chown(directory, uid, gid)

    def _popen(self, machine_id: str, argv: Sequence[str], env: dict[str, str], cwd: str, user: str | None,
               stdin: Any, stdout: Any, stderr: Any) -> subprocess.Popen[bytes] | dict[str, Any]:
        _check_command(argv, env, cwd, None)
        host_cwd = self.host_path(machine_id, cwd)
        # Absolute machine paths are not rewritten here, so tell commands where the machine's places are.
        spec = self._spec(machine_id)
        env = {**env, "SHOAL_MACHINE_ROOT": self.host_path(machine_id, "/"), "SHOAL_TEMP_DIR": spec.temp_dir,
               **{f"SHOAL_DATADISK_LUN{lun}": d.upper for lun, d in spec.data_disks.items()}}
        if not os.path.isdir(host_cwd):
            return _result(125, None, False, f"cwd: {os.strerror(2)}")
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:  # whoever the command asked to be: never the host's root
            kwargs.update(user=self.run_as[0], group=self.run_as[1], extra_groups=[])
        try:
            return subprocess.Popen(argv, cwd=host_cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                                    start_new_session=True, **kwargs)
        except (FileNotFoundError, PermissionError) as exc:
            return _result(127 if isinstance(exc, FileNotFoundError) else 126, None, False,
                           f"exec: {exc.strerror}")

    def run(self, machine_id: str, argv: Sequence[str], *, env: dict[str, str], cwd: str = "/",
            user: str | None = None, stdout: str | None = None, stderr: str | None = None,
            timeout: float | None = None, stdin: bytes | None = None) -> dict[str, Any]:
        with contextlib.ExitStack() as stack:
            out: Any = stack.enter_context(self._open_output(machine_id, stdout)) if stdout else subprocess.PIPE
            err: Any = subprocess.PIPE
            if stderr is not None:
                err = out if stderr == stdout else stack.enter_context(self._open_output(machine_id, stderr))
            proc = self._popen(machine_id, argv, env, cwd, user,
                               subprocess.DEVNULL if stdin is None else subprocess.PIPE, out, err)
            if isinstance(proc, dict):
                return proc
            timed_out = False
            try:
                captured = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _killpg(proc)
                captured = proc.communicate()
        result = _returncode_result(proc.returncode, timed_out)
        if stdout is None:
            result["stdout"] = (captured[0] or b"")[:OUTPUT_CAP]
        if stderr is None:
            result["stderr"] = (captured[1] or b"")[:OUTPUT_CAP]
        return result

    def spawn(self, machine_id: str, argv: Sequence[str], *, env: dict[str, str], cwd: str = "/",
              user: str | None = None, stdout: str | None = None, stderr: str | None = None,
              timeout: float | None = None, stdin: bytes | None = None,
              exit_file: str | None = None, make_cwd: int = 0) -> dict[str, Any]:
        # exit_file: not supported here (processes die with the server in this runtime anyway).
        if make_cwd:
            self._make_dirs(machine_id, cwd, make_cwd)
        cap = _Capture.make(self.records.dir(machine_id) / "jobs", stdout, stderr, stdin)
        with contextlib.ExitStack() as stack:
            fout = stack.enter_context(self._output(machine_id, stdout, cap.out))
            ferr = fout if stderr == stdout and stdout else stack.enter_context(
                self._output(machine_id, stderr, cap.err))
            fin = stack.enter_context(open(cap.stdin, "rb")) if cap.stdin else subprocess.DEVNULL
            proc = self._popen(machine_id, argv, env, cwd, user, fin, fout, ferr)
        if isinstance(proc, dict):
            cap.harvest({})
            raise MachineError(f"machine {machine_id}: {proc['error']}")
        job = _ProcJob(proc, machine_id, cap)
        if timeout is not None:
            def expire() -> None:
                job.timed_out.set()
                _killpg(proc)

            job.timer = threading.Timer(timeout, expire)
            job.timer.daemon = True
            job.timer.start()
        with self._jobs_lock:
            self._jobs[proc.pid] = job
        return {"pid": proc.pid, "machineId": machine_id}

    def spawn_many(self, requests: Sequence[Mapping[str, Any]]) -> Spawned:
        results: Spawned = []
        for request in requests:  # (nothing to overlap: processes start right here)
            try:
                results.append(self.spawn(**request))
            except Exception as exc:
                results.append(exc)
        return results

    def wait(self, pid: int, timeout: float | None = None) -> dict[str, Any] | None:
        with self._jobs_lock:
            job = self._jobs.get(pid)
        if job is None:
            raise MachineError(f"no spawned command with pid {pid}")
        try:
            job.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if job.timer:
            job.timer.cancel()
        with self._jobs_lock:
            if self._jobs.pop(pid, None) is None:
                return None
        return job.capture.harvest(_returncode_result(job.proc.returncode, job.timed_out.is_set()))

    def kill(self, pid: int) -> None:
        with self._jobs_lock:
            job = self._jobs.get(pid)
        if job is not None:
            _killpg(job.proc)


def _unprivileged(run_as: str | int | None) -> tuple[int, int]:
    """(uid, gid) of the unprivileged user process machines run as (default ``nobody``; never root)."""
    import pwd

    name = run_as if run_as is not None else os.environ.get("SHOAL_PROCESS_USER", "nobody")
    try:
        entry = pwd.getpwuid(int(name)) if str(name).isdigit() else pwd.getpwnam(str(name))
        ids = (entry.pw_uid, entry.pw_gid)
    except KeyError:
        if not str(name).isdigit():
            raise MachineError(f"no user {name!r} on this host for process machines (SHOAL_PROCESS_USER)") from None
        ids = (int(name), int(name))
    if ids[0] == 0:
        raise MachineError("process machines must not run as root: choose an unprivileged SHOAL_PROCESS_USER")
    return ids


def _unreachable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to ``path`` that the user cannot pass through (None: all open)."""
    for directory in reversed([path, *path.parents]):
        st = directory.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return directory
    return None


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, gid)


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _returncode_result(returncode: int, timed_out: bool) -> dict[str, Any]:
    if returncode < 0:
        return _result(128 - returncode, -returncode, timed_out)
    return _result(returncode, None, timed_out)


# ---------------------------------------------------------------------------------------------- detection


def probe_namespaces(store_dir: Path, *, hide: Sequence[str] = (), host_base_dir: Path | None = None,
                     hardening: Hardening | None = None) -> str | None:
    """None if namespace machines work here, else why not (builds the helper, mounts the host base, and
    creates and destroys a throw-away machine, hardened as asked)."""
    if sys.platform != "linux":
        return f"namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "namespaces and overlay mounts need root"
    runtime = NamespaceRuntime(store_dir, hide=hide, host_base_dir=host_base_dir, hardening=hardening)
    probe_id = f"shoal-probe-{os.getpid()}"
    scratch = runtime.store_dir / "machines" / f".{probe_id}"
    try:
        runtime.host_base.ensure()
        spec = MachineSpec(machine_id=probe_id, hostname="probe", base=str(scratch / "base"),
                           os_disk=DiskMount([], str(scratch / "upper"), str(scratch / "work")),
                           data_disks={}, temp_dir=str(scratch / "temp"),
                           limits={"cores": 1, "memoryBytes": 256 << 20, "pids": 64})
        (scratch / "base").mkdir(parents=True, exist_ok=True)
        runtime.create(spec)
        runtime.destroy(probe_id)
    except (MachineError, OSError) as exc:
        return str(exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def detect_runtime(store_dir: Path, *, prefer: str | None = None, hide: Sequence[str] = (),
                   host_base_dir: Path | None = None, hardening: Hardening | None = None,
                   probe: bool = True) -> MachineRuntime:
    """The machine runtime asked for: namespaces (with ``hardening``) unless ``prefer="process"`` or
    ``SHOAL_RUNTIME=process``. It never falls back silently: when the namespaces runtime does not work here,
    MachineError says why (the operator may then choose the process runtime, which isolates nothing).

    ``hide`` lists more host paths to mask in the host base (e.g. the state directory, when it is on the root
    filesystem); ``host_base_dir`` moves the host base's mounts from ``/run/shoal`` (or ``SHOAL_HOSTBASE_DIR``).
    ``probe=False`` skips the throw-away machine (tools that only inspect or tear down machines).
    """
    choice = os.environ.get("SHOAL_RUNTIME") or prefer
    if choice not in (None, "namespaces", "process"):
        raise ValueError(f"unknown machine runtime {choice!r} (namespaces or process)")
    if choice == "process":
        return ProcessRuntime(store_dir)
    problem = probe_namespaces(Path(store_dir), hide=hide, host_base_dir=host_base_dir,
                               hardening=hardening) if probe else None
    if problem is None:
        return NamespaceRuntime(store_dir, hide=hide, host_base_dir=host_base_dir, hardening=hardening)
    raise MachineError(f"the namespaces machine runtime does not work here: {problem}. Machines without any "
                       "isolation are available with --runtime process (see `shoal doctor`).")


def read_exit_file(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The status a helper wrote with ``--exit-file``: {"exitCode", "signal", "timedOut"}, or None if absent."""
    try:
        parts = Path(path).read_text().split()
    except OSError:
        return None
    if len(parts) < 4 or parts[0] != "R":
        return None
    try:
        return {"exitCode": int(parts[1]), "signal": int(parts[2]) or None, "timedOut": parts[3] == "1"}
    except ValueError:
        return None
