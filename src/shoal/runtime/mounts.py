"""File systems mounted in a node (its pool's ``mountConfiguration``): what the host turns them into.

- A Shoal container (``kind`` "blob") becomes an id-mapped read-write bind of the container's directory at the
  mount path (``shoal-machine init --idbind``): the node's root reads and writes the files as the host's root
  owns them, so what a task writes is a blob the server serves at once, and the node's id range never comes to
  own the server's files. The mount point is made beforehand on the node's temporary drive without following
  links: the drive is the node's, and a link it left there (before a reboot) must not redirect the mount.
- NFS and CIFS (SMB, also Azure Files) need the host kernel's client: a user-namespaced root cannot mount them,
  so the host would mount them in the node's mount namespace. Where the kernel has no client (not in
  ``/proc/filesystems``, no module for this kernel) the mount fails naming what is missing. Where it has one,
  Shoal does not mount them yet and says so (the mount fails too, not silently skipped).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shoal.core.hosterrors import MountFailed
from shoal.runtime import safepath

MNT = "/mnt/"
# The kernel's names of each network file system, and the module files that provide them.
_CLIENTS = {"nfs": (("nfs4", "nfs"), ("nfsv4", "nfs")), "cifs": (("cifs", "smb3"), ("cifs",)),
            "azurefiles": (("cifs", "smb3"), ("cifs",))}
_CLIENT_NAMES = {"nfs": "NFS", "cifs": "CIFS/SMB", "azurefiles": "CIFS/SMB (Azure Files)"}


def kernel_filesystems(proc_filesystems: str = "/proc/filesystems") -> set[str]:
    try:
        text = Path(proc_filesystems).read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.split()}


def kernel_modules(modules_dir: str | None = None) -> set[str]:
    """The file system modules this kernel could load (from ``modules.dep`` and ``modules.builtin``)."""
    directory = Path(modules_dir or f"/lib/modules/{os.uname().release}")
    found: set[str] = set()
    for name in ("modules.dep", "modules.builtin"):
        try:
            lines = (directory / name).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            module = line.split(":", 1)[0].rsplit("/", 1)[-1]
            found.add(module.split(".ko", 1)[0].replace("-", "_"))
    return found


def missing_client(kind: str, filesystems: Iterable[str], modules: Iterable[str]) -> str | None:
    """Why the host cannot mount a ``kind`` file system (None: its client is there)."""
    names, module_names = _CLIENTS[kind]
    if set(names) & set(filesystems) or set(module_names) & set(modules):
        return None
    return (f"the host kernel has no {_CLIENT_NAMES[kind]} client ({' or '.join(names)} not in /proc/filesystems "
            f"and no {' or '.join(m + '.ko' for m in module_names)} module for kernel {os.uname().release})")


def binds(mounts: list[dict[str, Any]], temp_dir: Path, containers_dir: Path | None,
          owner: tuple[int, int] | None) -> list[tuple[str, str, bool]]:
    """The id-mapped binds ``(host dir, path inside, read only)`` of a node's mounts, their mount points made on
    its temporary drive (``temp_dir``, the node's /mnt). Raises :class:`MountFailed` for the first that cannot
    be mounted."""
    out: list[tuple[str, str, bool]] = []
    filesystems: set[str] | None = None
    for mount in mounts:
        path = str(mount["path"])
        if not path.startswith(MNT) or ".." in path.split("/"):
            raise MountFailed(path, "the mount path is not inside the node's mounts directory")
        if mount["kind"] != "blob":
            filesystems = kernel_filesystems() if filesystems is None else filesystems
            missing = missing_client(mount["kind"], filesystems, kernel_modules())
            raise MountFailed(path, missing or f"Shoal does not mount {_CLIENT_NAMES[mount['kind']]} file systems "
                              "yet, although the host kernel has the client")
        source = containers_dir / str(mount["container"]) if containers_dir is not None else None
        # The container's directory itself must be a directory, not a link (the name was checked by the domain).
        if source is None or not source.is_dir() or source.is_symlink():
            raise MountFailed(path, f"the container '{mount['container']}' does not exist on this host "
                              "(ContainerNotFound)")
        try:
            safepath.makedirs_beneath(temp_dir, path[len(MNT):], owner)
        except OSError as exc:
            raise MountFailed(path, f"the mount point cannot be made: {exc.strerror or exc}") from exc
        out.append((str(source), path, bool(mount.get("readOnly"))))
    return out
