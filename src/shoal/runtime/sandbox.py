"""What a host offers to isolate machines, what the operator asked for, and the checks between the two.

``shoal serve`` asks for everything by default: machines in user namespaces of their own, with networks of
their own and cgroup limits (see ``machines.py``, "Hardened machines"). When the kernel lacks a piece it
refuses to start, naming the piece and the flag that accepts less; it never runs with less silently.
``shoal doctor`` prints every check.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shoal.runtime.cgroups import Cgroups, detect, store_group
from shoal.runtime.nodenet import DEFAULT_SPACE, NetworkError, NodeNetwork, check_tools


class SandboxUnavailable(Exception):
    """The isolation the operator asked for is not possible here (the message says what and which flag)."""


@dataclass(frozen=True)
class SandboxOptions:
    user_namespaces: bool = True
    network: str = "isolated"  # "isolated" or "host"
    address_space: str = DEFAULT_SPACE
    api_ports: tuple[int, ...] = field(default_factory=tuple)  # open to machines at their gateway
    cgroups: bool = True
    api_forward: str | None = None  # "address:port" of a cluster's API, reached at the gateway (nodenet.py)
    node_reserve: int = 0  # machines' namespaces made ahead (reserve.py): with user namespaces and own networks

    @classmethod
    def legacy(cls) -> SandboxOptions:
        """Machines as they were before hardening: no user namespace, the host's network, no limits."""
        return cls(user_namespaces=False, network="host", cgroups=False)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    flag: str = ""  # what accepts running without it


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The resolvers of the host, which nodes use too (their /etc/resolv.conf is the host's)."""
    found = []
    for line in _read(path).splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append(str(ipaddress.ip_address(words[1].split("%")[0])))
            except ValueError:
                continue
    return found


def checks(options: SandboxOptions) -> list[Check]:
    """Every check the namespaces runtime needs with these options (cheap: nothing is mounted or started)."""
    out = [Check("linux", sys.platform == "linux", f"platform {sys.platform}", "--runtime process")]
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    out.append(Check("root", root, "running as root" if root else "namespaces and mounts need root",
                     "--runtime process"))
    cc = any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang")) or \
        bool(os.environ.get("SHOAL_MACHINE_HELPER"))
    out.append(Check("machine helper", cc, "a C compiler builds it on first use" if cc else
                     "no C compiler (install gcc and libc6-dev) and no SHOAL_MACHINE_HELPER", "--runtime process"))
    overlay = "overlay" in _read("/proc/filesystems")
    out.append(Check("overlayfs", overlay, "overlay in /proc/filesystems" if overlay else
                     "the kernel has no overlayfs (modprobe overlay)", "--runtime process"))
    if options.user_namespaces:
        limit = _read("/proc/sys/user/max_user_namespaces")
        userns = os.path.exists("/proc/self/ns/user") and limit not in ("", "0")
        out.append(Check("user namespaces", userns, f"user.max_user_namespaces = {limit or 'n/a'}",
                         "--no-user-namespaces"))
        seccomp = "Seccomp:" in _read("/proc/self/status")
        out.append(Check("seccomp", seccomp, "seccomp filters supported" if seccomp else
                         "the kernel has no seccomp", "--no-user-namespaces"))
        release = os.uname().release.split(".")
        try:
            new_api = (int(release[0]), int(release[1].split("-")[0])) >= (6, 8)
        except (ValueError, IndexError):
            new_api = False
        out.append(Check("id-mapped overlay layers", new_api, f"kernel {os.uname().release} "
                         + ("(>= 6.8: lowerdir+ and id-mapped layers)" if new_api else "(needs >= 6.8)"),
                         "--no-user-namespaces"))
    if options.network == "isolated":
        problem = check_tools()
        out.append(Check("node networks", problem is None,
                         f"nftables, iproute2 and forwarding; address space {options.address_space}"
                         if problem is None else problem, "--node-network host"))
        servers = nameservers()
        reachable = [a for a in servers if not ipaddress.ip_address(a).is_loopback]
        detail = (f"nodes use the host's resolvers {', '.join(reachable)}" if reachable else
                  f"the host's resolver {servers[0]} is on its loopback: relayed at the nodes' gateway" if servers
                  else "the host has no resolver in /etc/resolv.conf")
        out.append(Check("node DNS", bool(servers), detail, "--node-network host"))
    if options.cgroups:
        version, why = detect()
        out.append(Check("cgroups", version is not None, why, "--no-cgroups"))
    return out


@dataclass
class Built:
    """The pieces of a hardened runtime, ready for ``NamespaceRuntime(hardening=...)``."""

    user_namespaces: bool
    network: NodeNetwork | None
    cgroups: Cgroups | None
    reserve: int = 0


def build(options: SandboxOptions, store_dir: Path | None = None) -> Built:
    """Check, then set up the host side (network table, gateway). Raises SandboxUnavailable."""
    failed = [c for c in checks(options) if not c.ok]
    if failed:
        first = failed[0]
        raise SandboxUnavailable(f"{first.name}: {first.detail}. To run with less isolation, start with "
                                 f"{first.flag} (see `shoal doctor`).")
    network = None
    if options.network == "isolated":
        network = NodeNetwork(options.address_space, options.api_ports, options.api_forward)
        try:
            network.up()
        except NetworkError as exc:
            raise SandboxUnavailable(f"node networks: {exc}. To share the host's network instead, start with "
                                     "--node-network host.") from exc
        if store_dir is not None:
            network.record(store_dir)
        servers = nameservers()
        if os.environ.get("SHOAL_NODE_DNS") == "relay" or not any(
                not ipaddress.ip_address(a).is_loopback for a in servers):
            try:
                network.relay_dns(next((a for a in servers if ipaddress.ip_address(a).is_loopback), servers[0]))
            except NetworkError as exc:
                raise SandboxUnavailable(f"node DNS: {exc}") from exc
    cgroups = None
    if options.cgroups:
        version, _ = detect()
        assert version is not None
        cgroups = Cgroups(version, group=store_group(store_dir))
    return Built(options.user_namespaces, network, cgroups,
                 options.node_reserve if options.user_namespaces and network is not None else 0)
