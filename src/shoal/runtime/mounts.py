"""File systems mounted in a node (its pool's ``mountConfiguration``): what the host turns them into.

- A Shoal container (``kind`` "blob") becomes an id-mapped read-write bind of the container's directory at the
  mount path (``shoal-machine init --idbind``): the node's root reads and writes the files as the host's root
  owns them, so what a task writes is a blob the server serves at once, and the node's id range never comes to
  own the server's files.
- NFS and CIFS (SMB, also Azure Files) need the host kernel's client. Where the kernel has none (not in
  ``/proc/filesystems``, no module for this kernel) the mount fails naming what is missing, before the machine
  is built. Where it has one, a user-namespaced root cannot mount them, so the host does, once the machine
  runs (``shoal-machine netmount``): in the machine's mount namespace, from its network namespace, with the
  server's address resolved here (the kernel's mount(2) takes an address, not a name; ``mount.nfs`` and
  ``mount.cifs`` would do that on a VM).

Every mount point is made beforehand on the node's temporary drive without following links: the drive is the
node's, and a link it left there (before a reboot) must not redirect a mount.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shoal.core.hosterrors import MountFailed
from shoal.runtime import safepath

MNT = "/mnt/"
# The kernel's names of each network file system, and the module files that provide them.
_CLIENTS = {"nfs": (("nfs4", "nfs"), ("nfsv4", "nfs")), "cifs": (("cifs", "smb3"), ("cifs",)),
            "azurefiles": (("cifs", "smb3"), ("cifs",))}
_CLIENT_NAMES = {"nfs": "NFS", "cifs": "CIFS/SMB", "azurefiles": "CIFS/SMB (Azure Files)"}
Resolver = Callable[[str], str]


@dataclass
class Prepared:
    """What a node's mounts need: binds made when the machine is built, network mounts made once it runs."""

    binds: list[tuple[str, str, bool]] = field(default_factory=list)  # (host dir, path inside, read only)
    network: list[dict[str, str]] = field(default_factory=list)  # {"path", "type", "source", "data"}


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


def resolve_ipv4(host: str) -> str:
    return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])


def _options(text: str, path: str) -> list[str]:
    """``mountOptions`` as Azure takes them (``-o a=b,c``, or bare ``a=b,c``) -> the kernel's options."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise MountFailed(path, f"the mountOptions cannot be read: {exc}") from exc
    out: list[str] = []
    it = iter(tokens)
    for token in it:
        value = next(it, "") if token == "-o" else token
        if value.startswith("-"):
            raise MountFailed(path, f"the mount option {value} cannot be given to the kernel (use -o name=value)")
        out += [o for o in value.split(",") if o]
    if any("\0" in o or "\n" in o for o in out):
        raise MountFailed(path, "a mount option holds a control character")
    return out


def network_mount(mount: dict[str, Any], resolve: Resolver = resolve_ipv4) -> dict[str, str]:
    """The kernel's mount of an NFS or CIFS entry: ``{"path", "type", "source", "data"}``."""
    path, kind, source = str(mount["path"]), str(mount["kind"]), str(mount["source"])
    options = _options(str(mount.get("options") or ""), path)
    if kind == "azurefiles":  # https://{account}.file.core.windows.net/{share} -> //{host}/{share}
        url = urlsplit(source)
        source, options = f"//{url.hostname}{url.path}", ["vers=3.0", "serverino", *options]
    if kind == "nfs":
        host, sep, export = source.partition(":")
        if not sep or not host or not export.startswith("/"):
            raise MountFailed(path, f"the NFS source {source!r} is not server:/export")
    else:
        host = source.lstrip("/").split("/", 1)[0] if source.startswith("//") else ""
        if not host or source.count("/") < 3:
            raise MountFailed(path, f"the CIFS source {source!r} is not //server/share")
        credentials = [f"username={mount.get('username') or ''}", f"password={mount.get('password') or ''}"]
        if any("," in c for c in credentials):
            raise MountFailed(path, "a CIFS user name or password with a comma cannot be given to the kernel")
        options = [*credentials, *options]
    try:
        address = resolve(host.strip("[]"))
    except OSError as exc:
        raise MountFailed(path, f"the server {host} cannot be resolved: {exc}") from exc
    options.append(f"addr={address}" if kind == "nfs" else f"ip={address}")
    return {"path": path, "type": "nfs" if kind == "nfs" else "cifs", "source": source, "data": ",".join(options)}


def prepare(mounts: list[dict[str, Any]], temp_dir: Path, containers_dir: Path | None,
            owner: tuple[int, int] | None, resolve: Resolver = resolve_ipv4) -> Prepared:
    """What a node's mounts need, their mount points made on its temporary drive (``temp_dir``, the node's /mnt).
    Raises :class:`MountFailed` for the first that cannot be mounted."""
    prepared = Prepared()
    filesystems: set[str] | None = None
    for mount in mounts:
        path = str(mount["path"])
        if not path.startswith(MNT) or ".." in path.split("/"):
            raise MountFailed(path, "the mount path is not inside the node's mounts directory")
        if mount["kind"] == "blob":
            source = containers_dir / str(mount["container"]) if containers_dir is not None else None
            # The container's directory must be a directory, not a link (the name was checked by the domain).
            if source is None or not source.is_dir() or source.is_symlink():
                raise MountFailed(path, f"the container '{mount['container']}' does not exist on this host "
                                  "(ContainerNotFound)")
            prepared.binds.append((str(source), path, bool(mount.get("readOnly"))))
        else:
            filesystems = kernel_filesystems() if filesystems is None else filesystems
            missing = missing_client(mount["kind"], filesystems, kernel_modules())
            if missing:
                raise MountFailed(path, missing)
            prepared.network.append(network_mount(mount, resolve))
        try:
            safepath.makedirs_beneath(temp_dir, path[len(MNT):], owner)
        except OSError as exc:
            raise MountFailed(path, f"the mount point cannot be made: {exc.strerror or exc}") from exc
    return prepared
