"""The host agent: the one boundary between reconcilers and the machines, layers and bases of a host.

Every method takes and returns plain data (str, int, lists, dicts) so that, when Shoal scales out, the same
calls can be sent to an agent on another machine. In the embedded default it is called directly.

Paths under the store directory:
  disks/<upper-id>/{upper,work}   a managed disk's writable layer (outlives machines)
  replicas/<region>/<version>-<n>  ready-to-mount (flattened) copies of a gallery version's disks (replicas.py),
                                  each with a resident provisioner that builds the nodes booted from it
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, cast

from shoal.core.hosterrors import AgentError, MountFailed
from shoal.runtime import hostports, idranges, mounts, nodefiles, safepath, sandbox, transfer_worker, usage
from shoal.runtime.layers import LayerStore
from shoal.runtime.machines import (
    DiskMount,
    Hardening,
    MachineError,
    MachineSpec,
    NamespaceRuntime,
    ProcessRuntime,
    detect_runtime,
    read_exit_file,
)
from shoal.runtime.marketplace import BaseProvider, Catalog
from shoal.runtime.replicas import ReplicaError, ReplicaStore
from shoal.runtime.sandbox import SandboxOptions, SandboxUnavailable
from shoal.runtime.transfers import Transfers

log = logging.getLogger(__name__)
# Download tokens are long random names (secrets.token_urlsafe): nothing else names an export file.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")


class HostAgent:
    def __init__(self, store_dir: Path, catalog: Catalog, *, runtime: str | None = None,
                 download_root: str | None = None, hide: tuple[str, ...] = (),
                 sandbox_options: SandboxOptions | None = None, import_dir: Path | None = None,
                 share_host_dirs: tuple[Path, ...] = (), containers_dir: Path | None = None) -> None:
        self.store_dir = store_dir
        # Where Shoal's blob containers are (a directory each): what blob mounts bind into nodes. None (a node
        # host of a cluster): the containers are on the head's host, and blob mounts fail naming the container.
        self.containers_dir = containers_dir
        # Host directories every machine sees read-only at the same path (``--share-host-dir``).
        self.share_host_dirs = tuple(str(Path(d).resolve()) for d in share_host_dirs)
        # Disk imports read local files only below this directory (``--import-dir``; None: no local files).
        self.import_dir = import_dir
        store_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = catalog
        self.layers = LayerStore(store_dir / "layers")
        self.bases = BaseProvider(store_dir, self.layers)
        self.replicas = ReplicaStore(store_dir / "replicas", self.layers)
        self.sandbox = sandbox_options or SandboxOptions()
        hardening = None
        if (os.environ.get("SHOAL_RUNTIME") or runtime) != "process":
            try:
                built = sandbox.build(self.sandbox, store_dir)
            except SandboxUnavailable as exc:
                raise AgentError(str(exc)) from exc
            hardening = Hardening(built.user_namespaces, built.network, built.cgroups, built.reserve)
        # ``hide``: host paths machines must not see through the host-root base (e.g. the state directory).
        try:
            self.machines = detect_runtime(store_dir, prefer=runtime, hide=hide, hardening=hardening)
        except MachineError as exc:
            raise AgentError(str(exc)) from exc
        # URLs under this prefix are Shoal's own downloads; they are read from the store directly.
        self.download_root = download_root
        # Resource-file downloads and output uploads, run inside nodes (set by the wiring, which knows the URLs).
        self.transfers: Transfers | None = None

    @property
    def isolation(self) -> str:
        return self.machines.isolation

    @property
    def isolation_level(self) -> str:
        """What is printed at start and shown on nodes: the runtime and, for namespaces, its hardening."""
        if isinstance(self.machines, NamespaceRuntime):
            return f"namespaces ({self.machines.hardening.level})"
        return "process (no isolation: commands run as an unprivileged host user, without namespaces)"

    def usage(self, machine_id: str) -> dict[str, float] | None:
        """CPU seconds and memory bytes a machine uses, from its cgroup (None when it has none)."""
        return self.machines.usage(machine_id) if isinstance(self.machines, NamespaceRuntime) else None

    def publish_endpoints(self, endpoints: list[dict[str, Any]]) -> None:
        """Forward inbound NAT endpoints for real: ``[{"publicIPAddress", "frontendPort", "address",
        "backendPort"}]``, all of them (others are withdrawn). Nothing to do when machines share the host's
        network."""
        net = self.machines.hardening.network if isinstance(self.machines, NamespaceRuntime) else None
        if net is None:
            return
        net.nat_endpoints({(str(e["publicIPAddress"]), int(e["frontendPort"])): (str(e["address"]),
                                                                                 int(e["backendPort"]))
                           for e in endpoints})

    def publish_vm_networks(self, entries: list[dict[str, Any]]) -> None:
        """VMs' public addresses (every port forwarded) and inbound filters, all of them (others are withdrawn):
        ``[{"address", "publicIPAddress", "stages"}]`` (see ``nodenet.NodeNetwork.vm_inbound``). Nothing to do
        when machines share the host's network."""
        net = self.machines.hardening.network if isinstance(self.machines, NamespaceRuntime) else None
        if net is None:
            return
        net.vm_inbound(entries)

    def listening_ports(self) -> list[int]:
        """TCP ports something listens on in the host's network (where machines sharing it put their sshd)."""
        return hostports.listening_ports()

    @property
    def gateway(self) -> str | None:
        """Where machines reach the host (and Shoal's API), when they have networks of their own."""
        net = self.machines.hardening.network if isinstance(self.machines, NamespaceRuntime) else None
        return net.gateway if net is not None else None

    # --- disks ----------------------------------------------------------------------------------------
    def disk_dirs(self, upper_id: str) -> tuple[Path, Path]:
        root = self.store_dir / "disks" / upper_id
        upper, work = root / "upper", root / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        return upper, work

    def prepare_disk(self, upper_id: str) -> None:
        """Make the disk's writable layer (an empty disk, or one made from a copy or an import)."""
        self.disk_dirs(upper_id)

    def delete_disk(self, upper_id: str) -> None:
        shutil.rmtree(self.store_dir / "disks" / upper_id, ignore_errors=True)

    def capture_disk(self, upper_id: str) -> str | None:
        """The disk's writable layer as a new immutable layer (None when nothing was written). Files owned by
        the id range of the machine that wrote them are recorded with the image's own ids."""
        upper, _ = self.disk_dirs(upper_id)
        if not any(upper.iterdir()):
            return None
        return self.layers.capture(upper, id_shift=idranges.recorded_base(upper) or 0).digest

    def import_disk_file(self, uri: str) -> str:
        """Import a root-filesystem or layer tarball: one of Shoal's own download URLs, an http(s) URL (not to
        loopback, link-local or metadata addresses), or a path / file:// URL below the operator's
        ``--import-dir`` (opened without following links)."""
        parsed = urllib.parse.urlparse(uri)
        own = self.own_download(uri)
        if own is not None:
            return self.layers.import_tar(own).digest
        if parsed.scheme in ("", "file"):
            return self._import_local(uri, urllib.parse.unquote(parsed.path))
        if parsed.scheme in ("http", "https"):
            tmp = Path(tempfile.mkdtemp(dir=self.store_dir))
            try:
                target = tmp / "download"
                try:
                    response = transfer_worker.Client(None, []).request("GET", uri)
                    if response.status >= 400:
                        raise AgentError(f"Downloading the disk file '{transfer_worker.public(uri)}' failed with HTTP "
                                         f"{response.status}.")
                    with open(target, "wb") as out:
                        shutil.copyfileobj(response, out, 1 << 20)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    raise AgentError(f"Downloading the disk file '{transfer_worker.public(uri)}' failed: "
                                     f"{exc}.") from exc
                return self.layers.import_tar(target).digest
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        raise AgentError(f"The disk file URI scheme '{parsed.scheme}' is not supported; use https, or a path below "
                         "the operator's --import-dir.")

    def _import_local(self, uri: str, path: str) -> str:
        if self.import_dir is None:
            raise AgentError(f"The disk file '{uri}' is a local path, and this Shoal imports no local files: give an "
                             "https URL, or ask the operator to start Shoal with --import-dir DIR and put the file "
                             "there.")
        root = os.path.realpath(self.import_dir)
        if not (path == root or path.startswith(root.rstrip("/") + "/")):
            raise AgentError(f"The disk file '{uri}' is not below the import directory {root}.")
        try:
            fd = safepath.open_beneath(root, path[len(root):].lstrip("/"))
        except (OSError, safepath.UnsafePath) as exc:
            raise AgentError(f"The disk file '{uri}' cannot be opened below the import directory (it must be a "
                             f"file, reached without symbolic links): {exc}.") from None
        with os.fdopen(fd, "rb") as source:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                raise AgentError(f"The disk file '{uri}' is not a regular file.")
            return self.layers.import_tar(source).digest

    def export_disk(self, token: str, base: dict[str, Any] | None, layers: list[str], upper_id: str | None) -> str:
        """Write a disk file (a tar of the disk's merged content, unsaved writes included) for download.

        A base built from a root filesystem (debootstrap, an operator tarball, an imported disk file) is part
        of the file, so importing it gives a bootable disk again; the host-root base is not exported.
        """
        stack = list(layers)
        if upper_id is not None:
            captured = self.capture_disk(upper_id)
            if captured:
                stack.append(captured)
        if base:
            if "imported" in base:
                stack.insert(0, base["imported"])
            else:
                image = self.catalog.find(base["publisher"], base["offer"], base["sku"], base["version"])
                digest = self.bases.base_digest(image) if image is not None else None
                if digest:
                    stack.insert(0, digest)
        exports = self.store_dir / "exports"
        exports.mkdir(parents=True, exist_ok=True)
        target = exports / f"{token}.tar"
        tree = Path(tempfile.mkdtemp(dir=exports))
        try:
            self.layers.materialize(stack, tree / "root")
            (tree / "root").mkdir(exist_ok=True)
            partial = target.with_suffix(".partial")
            import subprocess

            done = subprocess.run(["tar", "-C", str(tree / "root"), "--numeric-owner", "-cf", str(partial), "."],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise AgentError(f"Writing the disk file failed: {done.stderr.strip()}")
            os.replace(partial, target)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        return str(target)

    def own_download(self, uri: str) -> Path | None:
        """A URL this Shoal handed out (beginGetAccess) is read from the store, not fetched over HTTPS."""
        if not self.download_root or not uri.startswith(self.download_root.rstrip("/") + "/downloads/"):
            return None
        token = uri[len(self.download_root.rstrip("/") + "/downloads/"):].split("/", 1)[0]
        path = self.export_path(token)
        if path is None:
            raise AgentError(f"The download link '{uri}' is unknown or has been revoked.")
        return path

    def revoke_export(self, token: str) -> None:
        (self.store_dir / "exports" / f"{token}.tar").unlink(missing_ok=True)

    def export_path(self, token: str) -> Path | None:
        """The disk file of a download token: a regular file the agent wrote, never a link (to anything)."""
        if not _TOKEN.fullmatch(token):
            return None
        path = self.store_dir / "exports" / f"{token}.tar"
        try:
            return path if stat.S_ISREG(path.lstat().st_mode) else None
        except OSError:
            return None

    def export_size(self, token: str) -> int | None:
        """The size of a disk file handed out for download (None: unknown or revoked token)."""
        path = self.export_path(token)
        try:
            return path.lstat().st_size if path is not None else None
        except OSError:
            return None

    def read_export(self, token: str, start: int, length: int) -> bytes:
        """``length`` bytes of a disk file from ``start`` (fewer at its end)."""
        path = self.export_path(token)
        try:
            if path is None:
                raise FileNotFoundError(token)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise AgentError("The download link is unknown or has been revoked.") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise AgentError("The download link is unknown or has been revoked.")
            f.seek(max(0, start))
            return f.read(max(0, length))

    def layer_size(self, digest: str) -> int | None:
        """The size of a layer's stored form (None: not here)."""
        try:
            return self.layers.blob(digest).stat().st_size if self.layers.has(digest) else None
        except (OSError, KeyError):
            return None

    def read_layer(self, digest: str, start: int, length: int) -> bytes:
        """``length`` bytes of a layer's stored form from ``start`` (what a node host of a cluster imports)."""
        try:
            with open(self.layers.blob(digest), "rb") as f:
                f.seek(max(0, start))
                return f.read(max(0, length))
        except (OSError, KeyError) as exc:
            raise AgentError(f"layer {digest[:12]} is not stored here") from exc

    # --- bases and machines --------------------------------------------------------------------------------
    def base_path(self, base: dict[str, Any]) -> str:
        """Make a disk's base bootable (building a marketplace base on first use); the MachineSpec base value."""
        if "imported" in base:
            return str(self.layers.unpacked(base["imported"]))
        image = self.catalog.find(base["publisher"], base["offer"], base["sku"], base["version"])
        if image is None:
            raise AgentError(f"The marketplace image {base['publisher']}:{base['offer']}:{base['sku']}:"
                             f"{base['version']} is no longer in the catalog.")
        return self.bases.ensure(image)

    def _mount(self, disk: dict[str, Any], prepared: str | None = None) -> DiskMount:
        """``prepared``: the disk's layers already flattened into one lower (a gallery replica's disk)."""
        upper, work = self.disk_dirs(disk["upper"])
        if prepared is not None:
            return DiskMount(lower=[prepared], upper=str(upper), work=str(work))
        lower = [str(self.layers.unpacked(d)) for d in reversed(disk.get("layers") or [])]
        return DiskMount(lower=lower, upper=str(upper), work=str(work))

    def _replica_disks(self, machine: dict[str, Any]) -> dict[str, Any]:
        """The prepared lowers of the machine's gallery replica (``machine["replica"]``: {"region","id"}), or
        an empty dict: then the machine mounts the layer store's layers, which hold the same content."""
        replica = machine.get("replica")
        if not replica:
            return {}
        data = {str(lun): d.get("layers") or [] for lun, d in (machine.get("dataDisks") or {}).items()}
        try:
            found = self.replicas.disks(replica["region"], replica["id"], machine["osDisk"].get("layers") or [],
                                        data)
        except (ReplicaError, OSError) as exc:
            log.warning("replica %s/%s not usable, mounting the image's layers: %s", replica["region"],
                        replica["id"], exc)
            return {}
        return found or {}

    def boot(self, machine: dict[str, Any]) -> dict[str, Any]:
        """Create (or find running) a machine: {"machineId","hostname","base","osDisk","dataDisks"}, and
        "replica" ({"region","id"}) for a pool node provisioned from a gallery version's replica, or "stream"
        (a name) for one booted in a boot stream of the control plane."""
        temp = self.store_dir / "temp" / machine["machineId"]
        temp.mkdir(parents=True, exist_ok=True)
        replica = self._replica_disks(machine)
        prepared = self._node_mounts(machine, temp)
        spec = MachineSpec(
            machine_id=machine["machineId"], hostname=machine.get("hostname") or machine["machineId"],
            base=self.base_path(machine["base"]), os_disk=self._mount(machine["osDisk"], replica.get("os")),
            data_disks={int(lun): self._mount(d, (replica.get("data") or {}).get(str(lun)))
                        for lun, d in (machine.get("dataDisks") or {}).items()},
            temp_dir=str(temp), binds=[(str(b[0]), str(b[1]), bool(b[2])) for b in machine.get("binds") or []]
            + [(d, d, True) for d in self.share_host_dirs], mounts=prepared.binds,
            volatile=bool(machine.get("volatile")), network=machine.get("network"), limits=machine.get("limits"),
        )
        # A node from a replica is built by the replica's resident provisioner (one stream per replica); one
        # from a boot stream by that stream's (a message on a pipe instead of a process launched per node).
        stream = machine.get("stream")
        provisioner = replica.get("replica") or (f"boot stream {stream}" if isinstance(stream, str) else None)
        info = dict(self.machines.create(spec, provisioner=provisioner))
        for mount in prepared.network:  # NFS/CIFS: mounted by the host once the machine runs
            try:
                cast(NamespaceRuntime, self.machines).netmount(spec.machine_id, mount["type"], mount["source"],
                                                               mount["path"], mount["data"])
            except MachineError as exc:
                self.halt(spec.machine_id, keep_temp=True)  # a node without its file systems does not run
                raise MountFailed(mount["path"], str(exc)) from exc
        return info

    def _node_mounts(self, machine: dict[str, Any], temp: Path) -> mounts.Prepared:
        """The node's file systems (``machine["mounts"]``, its pool's mountConfiguration): id-mapped binds and
        network mounts; :class:`MountFailed` for one that cannot be mounted here (the node is then unusable)."""
        wanted = machine.get("mounts") or []
        if wanted and isinstance(self.machines, ProcessRuntime):
            raise MountFailed(str(wanted[0]["path"]), "this host runs machines as plain processes (shoal serve "
                              "--runtime process): it cannot mount file systems in a node")
        # Mount points (and their parents) belong to the node's root: the range its drive is owned by (kept
        # across a reboot); on a first boot the drive's files are shifted to the new range as it is built.
        base = idranges.recorded_base(temp)
        return mounts.prepare(wanted, temp, self.containers_dir, (base, base) if base else None)

    def halt(self, machine_id: str, *, keep_temp: bool = False) -> None:
        """Stop a machine; its disks stay. ``keep_temp`` keeps the temporary drive (a reboot, not a removal)."""
        self.machines.destroy(machine_id, keep_temp=keep_temp)
        if not keep_temp:
            shutil.rmtree(self.store_dir / "temp" / machine_id, ignore_errors=True)
            idranges.forget(self.store_dir / "temp" / machine_id)

    def retire(self, machine_id: str) -> None:
        """Stop a machine for good (a node resized away or of a deleted pool): its task and start-task logs are
        kept, and the file calls keep answering for them, until :meth:`forget_logs`."""
        self.machines.destroy(machine_id, keep_temp=True)
        temp = self.store_dir / "temp" / machine_id
        if temp.is_dir():
            kept = nodefiles.archive_logs(temp, self._logs_dir(machine_id))
            log.info("machine %s retired: kept %d log files", machine_id, kept)
        self.halt(machine_id)

    def forget_logs(self, machine_id: str) -> None:
        """Drop the logs a retired machine left (their retention has passed)."""
        shutil.rmtree(self._logs_dir(machine_id), ignore_errors=True)

    def _logs_dir(self, machine_id: str) -> Path:
        return self.store_dir / "logs" / machine_id

    def _drive(self, machine_id: str) -> Path:
        """The machine's temporary drive, or, once it is retired, the logs it left."""
        temp = self.temp_dir(machine_id)
        if not temp.is_dir() and self._logs_dir(machine_id).is_dir():
            return self._logs_dir(machine_id)
        return temp

    def status(self, machine_id: str) -> str:
        return self.machines.status(machine_id)

    def machine_ids(self) -> list[str]:
        """Every machine this host keeps (running or not)."""
        return list(self.machines.list())

    def lost_machines(self) -> dict[str, float]:
        """Machines on hosts this agent lost contact with (a single host never loses itself)."""
        return {}

    def usage_samples(self, machine_ids: list[str]) -> dict[str, dict[str, Any]]:
        """What each machine uses now, for autoscale metrics: ``{"cgroup": {"cpuSeconds", "memoryBytes"} or None,
        "processes": {pid: {"cpuSeconds", "rssBytes", "readBytes", "writeBytes", "readOps", "writeOps"}}}``."""
        init_pid = getattr(self.machines, "init_pid", None)
        inits = {m: pid for m in machine_ids if init_pid is not None and (pid := init_pid(m))}
        seen = usage.scan(inits) if inits else {}
        return {m: {"cgroup": self.usage(m), "processes": {
            str(pid): {"cpuSeconds": p.cpu_ticks / usage.TICKS, "rssBytes": p.rss_bytes, "readBytes": p.read_bytes,
                       "writeBytes": p.write_bytes, "readOps": p.read_ops, "writeOps": p.write_ops}
            for pid, p in seen.get(m, {}).items()}} for m in machine_ids}

    def run(self, machine_id: str, argv: list[str], *, env: dict[str, str], cwd: str = "/",
            timeout: float | None = None, user: str | None = None, stdout: str | None = None,
            stderr: str | None = None) -> dict[str, Any]:
        """Run a command inside a machine and wait; ``stdout``/``stderr`` are host paths of output files."""
        return dict(self.machines.run(machine_id, argv, env=env, cwd=cwd, timeout=timeout, user=user, stdout=stdout,
                                      stderr=stderr))

    def spawn(self, machine_id: str, argv: list[str], *, env: dict[str, str], cwd: str, user: str | None,
              stdout: str, stderr: str, timeout: float | None, exit_key: str, make_cwd: int = 0) -> int:
        """Start a command in a machine without waiting; its final status is kept under ``exit_key`` (out of the
        machine's reach), so it survives a restart of the server. Returns the pid to wait for or kill. With
        ``make_cwd`` N the machine makes ``cwd`` first (its last N components the user's, see the runtime)."""
        found = self.spawn_many([dict(machine_id=machine_id, argv=argv, env=env, cwd=cwd, user=user, stdout=stdout,
                                      stderr=stderr, timeout=timeout, exit_key=exit_key, make_cwd=make_cwd)])[0]
        if isinstance(found, BaseException):
            raise found
        return found

    def spawn_many(self, requests: list[dict[str, Any]]) -> list[int | Exception]:
        """:meth:`spawn` for each request (its keyword arguments, with ``machine_id``), started together: each
        result is a pid or the error of that command alone. An exit status kept under a request's ``exit_key``
        from before is removed first: whatever reads that key from now on reads this command's, or nothing."""
        for machine_id in {r["machine_id"] for r in requests}:  # where their exit files go: made once a batch
            self._exits_dir(machine_id).mkdir(parents=True, exist_ok=True)
        exit_files = [self._exit_file(r["machine_id"], r["exit_key"]) for r in requests]
        for exit_file in exit_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(exit_file)
        results = self.machines.spawn_many([
            {**{k: v for k, v in r.items() if k != "exit_key"}, "exit_file": exit_file}
            for r, exit_file in zip(requests, exit_files, strict=True)])
        return [r if isinstance(r, Exception) else int(r["pid"]) for r in results]

    def wait(self, pid: int) -> dict[str, Any] | None:
        return self.machines.wait(pid)

    def kill(self, pid: int) -> None:
        self.machines.kill(pid)

    def alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def read_exit(self, machine_id: str, exit_key: str) -> dict[str, Any] | None:
        """The final status of a spawned command (None while it runs, or if it never wrote one)."""
        return read_exit_file(self._exit_file(machine_id, exit_key))

    def clear_exit(self, machine_id: str, exit_key: str) -> None:
        Path(self._exit_file(machine_id, exit_key)).unlink(missing_ok=True)

    def find_spawned(self, machine_id: str, exit_key: str, pid: int | None) -> int | None:
        """The pid of the live helper still running the command spawned with ``exit_key`` (its command line names
        the exit file): after a restart the recorded pid may be missing."""
        needle = self._exit_file(machine_id, exit_key).encode()
        candidates = [pid] if pid else []
        candidates += [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        for candidate in candidates:
            try:
                argv = Path(f"/proc/{candidate}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"join" in argv and needle in argv:
                return candidate
        return None

    def temp_dir(self, machine_id: str) -> Path:
        """The host directory behind the machine's temporary drive (/mnt inside)."""
        return self.store_dir / "temp" / machine_id

    # --- the Batch file API: node and task files (race-free, see nodefiles) -------------------------------
    def list_node_files(self, machine_id: str, root: str, *, recursive: bool) -> list[dict[str, Any]]:
        """Files below ``root`` (a path on the machine's temporary drive, relative to /mnt)."""
        return nodefiles.list_files(self._drive(machine_id), root, recursive=recursive)

    def stat_node_file(self, machine_id: str, root: str, path: str) -> dict[str, Any]:
        return nodefiles.stat_file(self._drive(machine_id), root, path)

    def read_node_file(self, machine_id: str, root: str, path: str, start: int = 0,
                       end: int | None = None) -> tuple[dict[str, Any], bytes]:
        return nodefiles.read_file(self._drive(machine_id), root, path, start, end)

    def delete_node_file(self, machine_id: str, root: str, path: str, *, recursive: bool) -> None:
        nodefiles.delete_file(self._drive(machine_id), root, path, recursive=recursive)

    # --- files on a machine's temporary drive ---------------------------------------------------------------
    def owner(self, machine_id: str, inside_uid: int = 0) -> tuple[int, int]:
        """The host uid/gid of a user inside a machine (its range, or the id itself without a user namespace)."""
        if isinstance(self.machines, ProcessRuntime):
            return self.machines.owner(inside_uid)
        ids = self.machines.id_range(machine_id) if isinstance(self.machines, NamespaceRuntime) else None
        host = ids.host(inside_uid) if ids is not None else inside_uid
        return host, host

    def make_dirs(self, machine_id: str, paths: list[str], *, inside_uid: int = 0, mode: int = 0o755,
                  owned_tail: int | None = None) -> None:
        """``mkdir -p`` of paths under the machine's /mnt (paths inside it), owned by a user of the machine
        (``owned_tail``: only the last that many components of each; the parents it makes are the machine
        root's). Nothing is followed that the machine could have made a link."""
        root = self.temp_dir(machine_id)
        owner = self.owner(machine_id, inside_uid)
        parents = None if owned_tail is None else self.owner(machine_id, 0)
        for path in paths:
            safepath.makedirs_beneath(root, _under_mnt(path), owner, mode, own_existing=True, tail=owned_tail or 1,
                                      parents_owner=parents)

    def remove_path(self, machine_id: str, path: str) -> None:
        """Remove a file or tree under the machine's /mnt (or the logs it left), without following links."""
        safepath.remove_beneath(self._drive(machine_id), _under_mnt(path))

    def write_file(self, machine_id: str, path: str, data: bytes, *, inside_uid: int = 0) -> None:
        """Write a file under the machine's /mnt (e.g. an upload log), as a user of the machine."""
        safepath.write_beneath(self.temp_dir(machine_id), _under_mnt(path), data, self.owner(machine_id, inside_uid))

    def _exit_file(self, machine_id: str, key: str) -> str:
        """Where the final status of a command is kept (out of the machine's reach: it is written with the
        host's rights; spawn makes the directory)."""
        return f"{self._exits_dir(machine_id)}/{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    def _exits_dir(self, machine_id: str) -> Path:
        return self.store_dir / "machines" / machine_id / "exits"

    def adopt(self) -> dict[str, str]:
        return dict(self.machines.adopt())

    # --- gallery replicas ---------------------------------------------------------------------------------
    def prepare_replica(self, region: str, replica_id: str, os_stack: list[str],
                        data_stacks: dict[str, list[str]]) -> str:
        """A ready-to-mount copy of an image in a region: each disk's layers (bottom first) flattened into one
        lower directory, hard-linked from the layer store (see ``replicas.py``)."""
        try:
            path = str(self.replicas.prepare(region, replica_id, os_stack, data_stacks))
        except ReplicaError as exc:
            raise AgentError(str(exc)) from exc
        self.machines.start_provisioner(path)  # ready to build nodes from it before a pool asks
        return path

    def delete_replicas(self, replica_prefix: str) -> None:
        """Remove a version's replicas (and stop their provisioners); those running nodes mount are retired
        until the nodes are gone."""
        for path in self.replicas.of_version(replica_prefix):
            self.machines.stop_provisioner(str(path))
        self.replicas.delete(replica_prefix, self._mounted_lowers())

    def _mounted_lowers(self) -> set[str]:
        """The lower directories of every machine on this host (from the records the runtime keeps)."""
        records: Any = getattr(self.machines, "records", None)
        lowers: set[str] = set()
        for machine_id in self.machines.list():
            record = records.read(machine_id) if records is not None else None
            if not record or "spec" not in record:
                continue
            spec = MachineSpec.from_dict(record["spec"])
            for disk in (spec.os_disk, *spec.data_disks.values()):
                lowers.update(disk.lower)
        return lowers

    def layer_inventory(self) -> list[dict[str, Any]]:
        """Every layer this host stores, with its age in seconds."""
        now, found = time.time(), []
        for digest in self.layers.digests():
            try:
                found.append({"digest": digest, "ageSeconds": now - self.layers.blob(digest).stat().st_mtime})
            except OSError:
                continue  # collected meanwhile
        return found

    def gc_layers(self, referenced: list[str]) -> list[str]:
        """Collect unreferenced layers, and retired replicas no machine mounts any more."""
        self.replicas.sweep(self._mounted_lowers())
        return self.layers.gc(set(referenced) | self.bases.referenced_digests())

    # --- task file transfers (inside the node, as the task's user) ----------------------------------------------
    @property
    def transfers_enabled(self) -> bool:
        return self.transfers is not None

    def download_resource(self, machine_id: str, resource: dict[str, Any], wd: str, user: str | None) -> list[str]:
        """Fetch one ``resourceFiles`` entry into ``wd`` (inside the node) as ``user``; the files written."""
        if self.transfers is None:
            raise AgentError("Task file transfers are not configured on this host.")
        return self.transfers.download(machine_id, resource, wd, user)

    def upload_output(self, machine_id: str, output: dict[str, Any], env: dict[str, str],
                      user: str | None) -> dict[str, Any]:
        """Upload what one ``outputFiles`` entry matches: ``{"files": count, "log": [lines]}``."""
        if self.transfers is None:
            raise AgentError("Task file transfers are not configured on this host.")
        lines: list[str] = []
        count = self.transfers.upload(machine_id, output, env, user, lines.append)
        return {"files": count, "log": lines}



def _under_mnt(path: str) -> str:
    """A path inside a machine under its temporary drive, relative to that drive."""
    if path != "/mnt" and not path.startswith("/mnt/"):
        raise AgentError(f"{path} is not on the machine's temporary drive (/mnt)")
    return path[len("/mnt"):].lstrip("/")

