"""The network of simulated node hosts for ``shoal dev cluster --hosts N``: several "machines" on one.

Each simulated host ``hN`` is a network namespace ``shoal-<cluster>-hN`` joined by a veth pair to a bridge in
the root namespace (the recipe measured in ``reference/runtime/ray-host-agents.md`` §5)::

    root namespace:  bridge shoalsim0  10.213.0.1/24   (the head: Ray GCS and Shoal's API listen here)
                       |-- veth sv<hash>h1 ---- eth0 in shoal-<cluster>-h1  10.213.0.11/24
                       `-- veth sv<hash>h2 ---- eth0 in shoal-<cluster>-h2  10.213.0.12/24

Inside each namespace the loopback is up, the default route goes to the bridge address and
``net.ipv4.ip_forward`` is 1 (the host agent there routes its machines' traffic). :func:`route_subnets` adds
the routes to every host's node subnet (via that host's address) in the other hosts and in the root namespace.
Run a host's processes with :func:`exec_argv`.

Everything made is found again by name, so :func:`down` also cleans up after a crash: namespaces
``shoal-<cluster>-hN``, root-side veths ``sv<hash>hN`` (``<hash>`` from the cluster name: interface names are
at most 15 characters) and the bridge, which carries the alias ``shoal-sim:<cluster>``.

Needs root and iproute2 (``ip``). Standard library only: no Ray here.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_NETWORK = "10.213.0.0/24"
DEFAULT_BRIDGE = "shoalsim0"
PEER = "eth0"  # the veth end inside a host's namespace
MAX_HOSTS = 244  # host N is at .(10+N) of the /24
_CLUSTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class SimNetError(RuntimeError):
    """A simulated-network command failed (the message names the command and its stderr)."""


@dataclass(frozen=True)
class SimHost:
    name: str  # "h1"
    netns: str  # "shoal-<cluster>-h1"
    address: str  # "10.213.0.11" (no prefix length)
    veth: str  # the root-side end of the host's veth pair, on the bridge


def netns_name(cluster: str, index: int) -> str:
    return f"shoal-{cluster}-h{index}"


def veth_name(cluster: str, index: int) -> str:
    """``sv`` + 6 hex digits of the cluster name's hash + ``h<N>``: at most 15 characters, one per cluster."""
    return f"sv{_digest(cluster)}h{index}"


def alias(cluster: str) -> str:
    return f"shoal-sim:{cluster}"


def bridge_name(cluster: str) -> str:
    """A bridge of the cluster's own, so that several clusters can run on one machine."""
    return f"sb{_digest(cluster)}"


def exec_argv(host: SimHost, argv: Sequence[str]) -> list[str]:
    """``argv`` to run in ``host``'s network namespace, with the machine's mounts as they are (``ip netns exec``
    would mount a sysfs of its own, without the cgroup hierarchies a host agent puts its machines in)."""
    return ["nsenter", f"--net=/run/netns/{host.netns}", "--", *argv]


def up(cluster: str, hosts: int, network: str = DEFAULT_NETWORK, *, bridge: str = DEFAULT_BRIDGE) -> list[SimHost]:
    """Make the bridge (``.1`` of ``network``) and ``hosts`` namespaces at ``.11``, ``.12``, ... of it.

    Leftovers of an earlier ``up`` of the same cluster are removed first; a bridge of that name that belongs to
    something else is refused. On a failure half-way, what was made is removed again."""
    _check_cluster(cluster)
    if not 1 <= hosts <= MAX_HOSTS:
        raise SimNetError(f"A simulated cluster has 1 to {MAX_HOSTS} hosts, not {hosts}.")
    if not _IFNAME.fullmatch(bridge):
        raise SimNetError(f"'{bridge}' is not an interface name (at most 15 of [A-Za-z0-9_.-]).")
    net = _network(network)
    gateway = net.network_address + 1
    down(cluster)
    owner = _link_alias(bridge)
    if owner is not None:
        raise SimNetError(f"The bridge {bridge} already exists" + (f" for '{owner}'" if owner else "")
                          + f": bring that cluster down first, or pass another bridge name for '{cluster}'.")
    made: list[SimHost] = []
    try:
        _ip("link", "add", "name", bridge, "type", "bridge")
        _ip("link", "set", "dev", bridge, "alias", alias(cluster))
        _ip("addr", "add", f"{gateway}/{net.prefixlen}", "dev", bridge)
        _ip("link", "set", "dev", bridge, "up")
        for index in range(1, hosts + 1):
            host = SimHost(f"h{index}", netns_name(cluster, index), str(net.network_address + 10 + index),
                           veth_name(cluster, index))
            _ip("netns", "add", host.netns)
            made.append(host)
            _ip("link", "add", "name", host.veth, "type", "veth", "peer", "name", PEER, "netns", host.netns)
            _ip("link", "set", "dev", host.veth, "master", bridge)
            _ip("link", "set", "dev", host.veth, "up")
            _ip("-n", host.netns, "link", "set", "dev", "lo", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/{net.prefixlen}", "dev", PEER)
            _ip("-n", host.netns, "link", "set", "dev", PEER, "up")
            _ip("-n", host.netns, "route", "add", "default", "via", str(gateway))
            _run(exec_argv(host, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]))
    except BaseException:
        down(cluster)
        raise
    return made


def down(cluster: str) -> None:
    """Remove everything :func:`up` made for ``cluster`` (found by name: also after a crash); idempotent.

    Processes still running in the hosts' namespaces (host agents, their machines) are killed: a namespace
    whose name is gone would otherwise live on with them."""
    _check_cluster(cluster)
    _require_ip()
    prefix = veth_name(cluster, 0)[:-1]  # "sv<hash>h"
    for link in _links():
        name = str(link.get("ifname", "")).split("@", 1)[0]
        if re.fullmatch(re.escape(prefix) + r"\d+", name):
            _ip("link", "del", "dev", name, check=False)
    for ns in leftover_namespaces(cluster):
        _kill_inside(ns)
        _ip("netns", "del", ns, check=False)
    for link in _links():
        if link.get("ifalias") == alias(cluster):
            _ip("link", "del", "dev", str(link["ifname"]), check=False)
    still = leftover_namespaces(cluster)
    if still:
        raise SimNetError(f"Could not remove the network namespaces {', '.join(still)}: see `ip netns list`.")


def leftover_namespaces(cluster: str) -> list[str]:
    """The namespaces of ``cluster``'s simulated hosts that exist now."""
    pattern = re.compile(re.escape(f"shoal-{cluster}-h") + r"\d+")
    listed = _run(["ip", "netns", "list"]).stdout.splitlines()
    return sorted((n for n in (line.split(" ", 1)[0] for line in listed) if pattern.fullmatch(n)),
                  key=lambda n: int(n.rsplit("h", 1)[1]))


def leftover_links(cluster: str) -> list[str]:
    """The root-namespace interfaces ``cluster`` made (its veths and its bridge) that exist now."""
    prefix = veth_name(cluster, 0)[:-1]
    return sorted(str(link["ifname"]).split("@", 1)[0] for link in _links()
                  if link.get("ifalias") == alias(cluster)
                  or re.fullmatch(re.escape(prefix) + r"\d+", str(link.get("ifname", "")).split("@", 1)[0]))


def add_route(host: SimHost | None, subnet: str, via: str) -> None:
    """Route ``subnet`` via ``via`` in ``host``'s namespace (None: the root namespace); replaces an older one."""
    try:
        ipaddress.ip_network(subnet, strict=True)
        ipaddress.ip_address(via)
    except ValueError as exc:
        raise SimNetError(f"Not a route: {subnet} via {via} ({exc}).") from None
    where = ["-n", host.netns] if host is not None else []
    _ip(*where, "route", "replace", subnet, "via", via)


def route_subnets(hosts: Sequence[SimHost], subnet_of: dict[str, str]) -> None:
    """Make every host's node subnet (``subnet_of[host.name]``) reachable from the other hosts and from the root
    namespace, via that host's address. Hosts without a subnet are skipped as destinations."""
    for target in hosts:
        subnet = subnet_of.get(target.name)
        if subnet is None:
            continue
        for host in hosts:
            if host.name != target.name:
                add_route(host, subnet, target.address)
        add_route(None, subnet, target.address)


# --- helpers -----------------------------------------------------------------------------------------------
def _digest(cluster: str) -> str:
    return hashlib.sha256(cluster.encode()).hexdigest()[:6]


def _check_cluster(cluster: str) -> None:
    if not _CLUSTER.fullmatch(cluster):
        raise SimNetError(f"'{cluster}' is not a cluster name: 1 to 48 of [A-Za-z0-9_.-], starting with a letter "
                          "or digit.")


def _network(network: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(network, strict=True)
    except ValueError as exc:
        raise SimNetError(f"'{network}' is not a network: {exc}. Give an IPv4 /24 such as {DEFAULT_NETWORK}.") \
            from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen != 24:
        raise SimNetError(f"'{network}' is not an IPv4 /24: simulated hosts live in a /24 such as {DEFAULT_NETWORK}.")
    return net


def _require_ip() -> None:
    if shutil.which("ip") is None:
        raise SimNetError("The `ip` command is missing: install iproute2 (apt-get install iproute2).")


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    _require_ip()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimNetError(f"`{' '.join(argv)}` failed: {exc}") from None
    if check and done.returncode != 0:
        hint = " (simulated hosts need root and iproute2)" if "ermission" in done.stderr else ""
        raise SimNetError(f"`{' '.join(argv)}` failed with exit code {done.returncode}: "
                          f"{done.stderr.strip() or done.stdout.strip()}{hint}")
    return done


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check=check)


def _links() -> list[dict[str, object]]:
    out = _ip("-details", "-json", "link", "show").stdout
    try:
        links = json.loads(out or "[]")
    except ValueError:
        raise SimNetError(f"`ip -json link show` printed no JSON: {out[:200]!r} (iproute2 is too old?)") from None
    return [link for link in links if isinstance(link, dict)]


def _link_alias(name: str) -> str | None:
    """The alias of interface ``name`` ('' without one; None: no such interface)."""
    for link in _links():
        if link.get("ifname") == name:
            return str(link.get("ifalias") or "")
    return None


def _kill_inside(ns: str) -> None:
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        if pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
