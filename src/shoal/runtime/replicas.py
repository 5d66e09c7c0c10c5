"""Gallery replicas on a host: ready-to-mount, flattened copies of an image version's disks.

A replica is prepared once, when the version is replicated, so that the nodes provisioned from it do not
compose the image's layer stack themselves::

    replicas/<region>/<replica id>/
        replica.json   {"format": 2, "os": [digests, bottom first], "data": {"<lun>": [...]}, "flat": true}
        os/            the OS disk's layers flattened into ONE overlay lower directory
        lun<N>/        each data disk's layers flattened the same way

Flattening applies the layers bottom to top with overlay semantics and hard-links every non-directory (no
file data is copied): a whiteout removes what the layers below it put at its path, an opaque directory
replaces the directory below it. What the layers hide of the *base* (not part of the replica: the host root
or a marketplace root filesystem) stays hidden: whiteouts stay whiteouts, and a directory that replaces a
whiteout or a non-directory becomes opaque, exactly as overlayfs stops merging at a non-directory. The
flattened tree therefore shows, over any base, what the whole stack shows.

A node from a replica mounts one lower per disk whatever the depth of the image (a node from a managed image
mounts every layer of every disk): its overlay mounts and every path lookup inside it do less work, and a
deep image (one layer per generation of updates) never reaches the kernel's limits on lower layers. The host
agent also keeps a resident provisioner for each replica (``native/provisioner.py``): the nodes booted from
a replica are built by it, one stream per replica, side by side with the other replicas' streams.

Without root (no whiteouts, no ``trusted.*`` xattrs) a replica holds plain per-layer copies (``"flat":
false``) and nodes keep mounting the layer store's layers.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.runtime.layers import OPAQUE_XATTR, LayerStore

FORMAT = 2
MANIFEST = "replica.json"


class ReplicaError(Exception):
    """A replica could not be prepared; the message says why."""


# --------------------------------------------------------------------------------------------------------------
# flattening


def flatten(layers_bottom_to_top: Sequence[Path], dest: Path) -> None:
    """Apply unpacked layer directories (BOTTOM first) into the new directory ``dest`` as one overlay lower.

    See the module docstring for the rules. Needs root (opaque markers are ``trusted.*`` xattrs).
    """
    dest.mkdir(mode=0o755)
    for layer in layers_bottom_to_top:
        _apply(Path(layer), dest)


def _apply(src: Path, dst: Path) -> None:
    if _is_opaque(src):  # this directory replaces the one below it (and anything of the base)
        _clear(dst)
        os.setxattr(dst, OPAQUE_XATTR, b"y")
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        target = dst / entry.name
        st = entry.stat(follow_symlinks=False)
        below = _lstat(target)
        if stat.S_ISDIR(st.st_mode):
            if below is not None and not stat.S_ISDIR(below.st_mode):
                # A whiteout or a non-directory below: overlayfs stops merging here, so nothing of the base
                # shows through this directory either.
                os.unlink(target)
                below = None
                _mkdir(target)
                os.setxattr(target, OPAQUE_XATTR, b"y")
            elif below is None:
                _mkdir(target)
            _apply(Path(entry.path), target)
            _attrs(target, st)
        else:  # a regular file, a symlink or a whiteout (char 0/0): the layer's own inode
            if below is not None:
                _remove(target, below)
            _link(Path(entry.path), target, st)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _mkdir(path: Path) -> None:
    os.mkdir(path, 0o700)  # the layer's mode is applied after its content


def _clear(path: Path) -> None:
    for name in os.listdir(path):
        child = path / name
        _remove(child, os.lstat(child))


def _remove(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _attrs(path: Path, st: os.stat_result) -> None:
    os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns))


def _link(src: Path, dst: Path, st: os.stat_result) -> None:
    """Hard-link a non-directory (the layer's immutable inode); copy it where links are not possible."""
    try:
        os.link(src, dst, follow_symlinks=False)
        return
    except OSError as exc:
        if exc.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM):
            raise
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISCHR(st.st_mode):
        os.mknod(dst, stat.S_IFCHR, st.st_rdev)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)


# --------------------------------------------------------------------------------------------------------------
# the replicas of a host


def _normal(data: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    return {str(lun): list(stack) for lun, stack in (data or {}).items() if stack}


class ReplicaStore:
    """``replicas/`` under the host agent's store directory."""

    def __init__(self, root: Path, layers: LayerStore) -> None:
        self.root = root
        self.layers = layers
        self._manifests: dict[Path, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def path(self, region: str, replica_id: str) -> Path:
        return self.root / region / replica_id

    def prepare(self, region: str, replica_id: str, os_stack: Sequence[str],
                data_stacks: Mapping[str, Sequence[str]] | None) -> Path:
        """Make the replica ready (idempotent): flattened disks, or per-layer copies without root."""
        target = self.path(region, replica_id)
        data = _normal(data_stacks)
        wanted: dict[str, Any] = {"os": list(os_stack), "data": data}
        with self._lock:
            current = self._read(target)
            if current is not None:
                if {"os": current["os"], "data": current["data"]} != wanted:  # nodes may be using it: keep it
                    raise ReplicaError(f"The replica {target} already holds other content.")
                self._manifests[target] = current
                return target
            staging = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}")
            try:
                flat = os.geteuid() == 0
                staging.mkdir(parents=True)
                try:
                    if flat:
                        flatten([self.layers.unpacked(d) for d in os_stack], staging / "os")
                        for lun, stack in data.items():
                            flatten([self.layers.unpacked(d) for d in stack], staging / f"lun{lun}")
                    else:
                        for digest in sorted({*os_stack, *(d for stack in data.values() for d in stack)}):
                            _copy_tree(self.layers.unpacked(digest), staging / digest)
                except KeyError as exc:
                    raise ReplicaError(f"The layer {exc.args[0]} of the image is missing from the layer store.") \
                        from None
                manifest = {"format": FORMAT, **wanted, "flat": flat}
                (staging / MANIFEST).write_text(json.dumps(manifest))
                (staging / ".ready").touch()
                if target.exists():  # an older replica (per-layer copies, before flattening): no node uses it
                    trash = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
                    os.rename(target, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                os.rename(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._manifests[target] = manifest
            return target

    def disks(self, region: str, replica_id: str, os_stack: Sequence[str],
              data_stacks: Mapping[str, Sequence[str]] | None) -> dict[str, Any] | None:
        """The ready-to-mount lowers of a replica for a machine with these layer stacks:
        ``{"os": path, "data": {lun: path}, "replica": the replica's directory}``, or None when the replica is
        gone, not flattened or holds other content (the caller then mounts the layer store's layers).

        A replica prepared before replicas were flattened is flattened here, once, on its first use."""
        target = self.path(region, replica_id)
        data = _normal(data_stacks)
        manifest = self._manifests.get(target) or self._read(target)
        if manifest is None:
            if not (target / ".ready").exists():
                return None
            manifest = self._read(self.prepare(region, replica_id, os_stack, data))
            if manifest is None:
                return None
        self._manifests[target] = manifest
        if not manifest.get("flat") or manifest["os"] != list(os_stack) or \
                any(manifest["data"].get(lun) != stack for lun, stack in data.items()):
            return None
        if not (target / "os").is_dir():  # deleted under us (its version is being deleted)
            self._manifests.pop(target, None)
            return None
        return {"os": str(target / "os"), "data": {lun: str(target / f"lun{lun}") for lun in data},
                "replica": str(target)}

    def _read(self, target: Path) -> dict[str, Any] | None:
        try:
            manifest = json.loads((target / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            return None
        return manifest

    def delete(self, replica_prefix: str, in_use: set[str] | frozenset[str] = frozenset()) -> None:
        """Remove every replica (in every region) whose id starts with ``replica_prefix``. One that a running
        machine mounts (a path of ``in_use``) is retired instead: renamed, so no new node uses it, and removed
        by :meth:`sweep` once no machine mounts it (nodes that exist keep working when their image goes)."""
        if not self.root.exists():
            return
        with self._lock:
            for region in self.root.iterdir():
                # ".<id>.*": staging and replaced copies a crash left behind
                for item in [*self.of_version(replica_prefix, region), *region.glob(f".{replica_prefix}*")]:
                    self._manifests.pop(item, None)
                    if _used(item, in_use):
                        os.rename(item, region / f".retired.{item.name}.{secrets.token_hex(4)}")
                    else:
                        shutil.rmtree(item, ignore_errors=True)

    def of_version(self, replica_prefix: str, region: Path | None = None) -> list[Path]:
        """The replicas (in one region directory, or in all) whose id starts with ``replica_prefix``."""
        if region is None:
            return [p for r in (self.root.iterdir() if self.root.exists() else []) for p in self.of_version(
                replica_prefix, r)]
        return sorted(region.glob(f"{replica_prefix}*"))

    def sweep(self, in_use: set[str] | frozenset[str]) -> list[str]:
        """Remove retired replicas that no running machine mounts any more; returns their names."""
        removed: list[str] = []
        if not self.root.exists():
            return removed
        with self._lock:
            for region in self.root.iterdir():
                for item in region.glob(".retired.*"):
                    if not _used(item, in_use):
                        shutil.rmtree(item, ignore_errors=True)
                        removed.append(item.name)
        return removed


def _used(replica: Path, in_use: set[str] | frozenset[str]) -> bool:
    prefix = str(replica) + "/"
    return any(path.startswith(prefix) for path in in_use)

def _copy_tree(src: Path, dst: Path) -> None:
    """Copy preserving overlay metadata (whiteout devices, opaque xattrs), hard-linking regular files."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["cp", "-a", "--link", str(src), str(dst)], capture_output=True, text=True)
    if result.returncode != 0:
        result = subprocess.run(["cp", "-a", str(src), str(dst)], capture_output=True, text=True)
        if result.returncode != 0:
            raise ReplicaError(f"Preparing a replica failed: {result.stderr.strip()}")


__all__ = ["FORMAT", "MANIFEST", "ReplicaError", "ReplicaStore", "flatten"]
