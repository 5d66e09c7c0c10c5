"""The host's side of isolated machine networks (``--node-network isolated``, the default).

Every machine has a network namespace of its own, joined to the host by a routed veth pair (the native
helper plugs it: ``--net``). There is no bridge between machines, because a Linux bridge holds at most 1,024
ports and a host must hold 2,500 nodes; instead the host routes:

- each machine has an address in the Shoal server's **address space** (``--node-address-space``, default
  ``10.224.0.0/12``), on the subnet of its pool (a ``/20`` each) or on the default subnet of VMs (the first
  one); a ``/32`` route leads to its veth;
- the **gateway** is the first address of the space, held by the host (on the ``shoal0`` device). Machines
  route everything through it (on-link: the host's end of each veth answers ARP for it, and for the other
  machines of the subnet, by proxy ARP). Shoal's API listens there too, so nodes reach Shoal's endpoints at
  their gateway, as Azure's endpoints are reachable from a VM;
- a strict reverse-path filter on each host-side veth drops packets whose source is not the machine's own
  address (its root holds ``CAP_NET_ADMIN`` in its namespace and may change its addresses);
- an nftables table per address space: machines of one subnet reach each other, other subnets of the space
  are unreachable, from the machines the host answers only the API port and ping at the gateway (its loopback
  services and its other addresses are not reachable, nor link-local addresses such as a cloud's metadata
  service at 169.254.169.254, which would hand out the host's credentials), and traffic leaving the space is
  masqueraded so that ``apt-get`` and ``pip`` work inside; inbound NAT endpoints are forwarded to their node
  (``nat_endpoints``).

One Shoal server owns an address space on a host: ``up()`` takes a lock on it, and a second server asking for
the same space is refused with a message naming the flag that picks another.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from shoal.runtime.dnsrelay import DnsRelay

log = logging.getLogger(__name__)

DEFAULT_SPACE = "10.224.0.0/12"
SUBNET_PREFIX = 20
GATEWAY_DEVICE = "shoal0"
LOCK_DIR = Path("/run/shoal")


class NetworkError(Exception):
    """The host's network cannot be set up as asked (the message says what is missing and what to do)."""


def veth_name(space: str, machine_id: str) -> str:
    """The host-side interface of a machine (15 characters at most, unique per space and machine)."""
    return "sh" + hashlib.sha256(f"{space}|{machine_id}".encode()).hexdigest()[:12]


def _table(space: str) -> str:
    """The nftables table of the Shoal server that uses this node address space."""
    return "shoal_" + hashlib.sha256(space.encode()).hexdigest()[:10]


def claim_path(space: str) -> Path:
    """The file a running server holds locked while it uses this node address space: one owner per space and
    network namespace (simulated cluster hosts share /run but not networks)."""
    return LOCK_DIR / f"net-{_table(space)}-{_netns_id()}.lock"


def space_in_use(space: str) -> bool:
    """Whether a running server of this network namespace uses this node address space."""
    try:
        probe = open(claim_path(space))  # noqa: SIM115 (closed below; read-only: a probe makes no file)
    except OSError:  # no claim file: no server has used this space here
        return False
    with probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def _netns_id() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def gateway_of(space: str) -> str:
    return str(ipaddress.ip_network(space).network_address + 1)


def subnets(space: str) -> list[ipaddress.IPv4Network]:
    net = ipaddress.ip_network(space)
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > SUBNET_PREFIX:
        raise NetworkError(f"the node address space {space} must be an IPv4 network of /{SUBNET_PREFIX} or larger")
    return list(net.subnets(new_prefix=SUBNET_PREFIX))


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True)


def check_tools() -> str | None:
    """None when this host can give machines networks of their own, else what is missing."""
    if shutil.which("nft") is None:
        return "nftables (the `nft` command) is not installed: apt-get install nftables"
    if shutil.which("ip") is None:
        return "iproute2 (the `ip` command) is not installed: apt-get install iproute2"
    probe = _run(["nft", "list", "tables"])
    if probe.returncode != 0:
        return f"nftables does not work here: {probe.stderr.strip()}"
    if not os.access("/proc/sys/net/ipv4/ip_forward", os.W_OK):
        return "cannot enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward is not writable)"
    return None


def _overlaps_host_routes(net: ipaddress.IPv4Network, gateway: str) -> str | None:
    shown = _run(["ip", "-4", "route", "show", "table", "all"])
    for line in shown.stdout.splitlines():
        words = line.split()
        if not words or words[0] in ("local", "broadcast", "multicast", "unreachable"):
            continue
        dest = words[0] if words[0] != "default" else "0.0.0.0/0"
        try:
            route = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if route.prefixlen == 0 or not isinstance(route, ipaddress.IPv4Network):
            continue
        if route.overlaps(net) and not (route.prefixlen == 32 and route.subnet_of(net)) \
                and str(route.network_address) != gateway:
            return line
    return None


class NodeNetwork:
    """The host side of one address space."""

    def __init__(self, space: str, api_ports: Iterable[int], api_forward: str | None = None) -> None:
        """``api_forward``: ``address:port`` of a Shoal API elsewhere (a cluster's control plane) that machines
        reach at their gateway's API port, as they reach the local server on a single host."""
        self.subnets = subnets(space)
        self.net = ipaddress.IPv4Network(space)
        self.space = str(self.net)
        self.gateway = gateway_of(self.space)
        self.api_ports = sorted(set(api_ports))
        self.api_forward = api_forward
        if api_forward is not None:
            address, _, port = api_forward.rpartition(":")
            ipaddress.IPv4Address(address)
            self.api_ports = sorted({*self.api_ports, int(port)})
        self.table = _table(self.space)
        self._lock_file: IO[str] | None = None
        self._nat: dict[tuple[str, int], tuple[str, int]] = {}
        self._public: set[str] = set()
        self._vm_public: set[str] = set()  # public IP addresses of VMs on the gateway device
        self._vm_chains: set[str] = set()  # the inbound filter chains of VMs (network security groups)
        self.relay: DnsRelay | None = None  # DNS at the gateway, when the host's resolver is on its loopback
        self._nat_lock = threading.Lock()

    def veth(self, machine_id: str) -> str:
        return veth_name(self.space, machine_id)

    # ------------------------------------------------------------------ set-up

    def up(self) -> None:
        """Claim the space on this host and install the gateway, forwarding and the nftables table."""
        problem = check_tools()
        if problem:
            raise NetworkError(problem)
        self._claim()
        clash = _overlaps_host_routes(self.net, self.gateway)
        if clash:
            raise NetworkError(f"the node address space {self.space} overlaps a route of this host ({clash}); "
                               "choose another with --node-address-space")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        self._gateway_device()
        self._load_table()

    def _claim(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        path = claim_path(self.space)
        lock = open(path, "w")  # noqa: SIM115 (held for the life of the process)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise NetworkError(f"another Shoal server on this host uses the node address space {self.space}; "
                               "give this one another with --node-address-space") from None
        self._lock_file = lock

    def relay_dns(self, upstream: str) -> None:
        """Answer DNS at the gateway by asking ``upstream`` (the host's loopback resolver)."""
        try:
            self.relay = DnsRelay(self.gateway, upstream).start()
        except OSError as exc:
            raise NetworkError(f"cannot relay DNS at {self.gateway}:53 to {upstream}: {exc.strerror}") from exc

    def resolv_conf(self) -> str | None:
        """What machines read as /etc/resolv.conf when the host's own is of no use to them (None: the host's)."""
        return f"# Shoal: DNS relayed by the host at the gateway\nnameserver {self.gateway}\n" if self.relay else None

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _gateway_device(self) -> None:
        show = _run(["ip", "link", "show", GATEWAY_DEVICE])
        if show.returncode != 0:
            # A bridge without ports holds the address (the dummy driver is not everywhere).
            made = _run(["ip", "link", "add", GATEWAY_DEVICE, "type", "dummy"])
            if made.returncode != 0:
                made = _run(["ip", "link", "add", GATEWAY_DEVICE, "type", "bridge"])
            if made.returncode != 0 and "File exists" not in made.stderr:
                raise NetworkError(f"cannot create the gateway device {GATEWAY_DEVICE}: {made.stderr.strip()}")
        _run(["ip", "link", "set", GATEWAY_DEVICE, "up"])
        added = _run(["ip", "addr", "add", f"{self.gateway}/32", "dev", GATEWAY_DEVICE])
        if added.returncode != 0 and "File exists" not in added.stderr and "already assigned" not in added.stderr:
            raise NetworkError(f"cannot give {GATEWAY_DEVICE} the gateway address {self.gateway}: "
                               f"{added.stderr.strip()}")

    def ruleset(self) -> str:
        s, g = self.space, self.gateway
        pairs = ", ".join(f"{n} . {n}" for n in self.subnets)
        ports = ", ".join(str(p) for p in self.api_ports) or "0"
        forward = ""
        if self.api_forward is not None:
            port = self.api_forward.rpartition(":")[2]
            forward = f"\n    ip saddr {s} ip daddr {g} tcp dport {port} dnat ip to {self.api_forward}"
        return f"""table inet {self.table} {{
  set same_subnet {{ type ipv4_addr . ipv4_addr; flags interval; elements = {{ {pairs} }} }}
  map nat_endpoints {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  map vm_public {{ type ipv4_addr : ipv4_addr; }}
  map vm_inbound {{ type ipv4_addr : verdict; }}
  map subnet_inbound {{ type ipv4_addr : verdict; flags interval; }}
  chain input {{ type filter hook input priority filter; policy accept;
    ip saddr {s} ct state established,related accept
    ip saddr {s} ip daddr {g} tcp dport {{ {ports} }} accept
    ip saddr {s} ip daddr {g} icmp type echo-request accept
    ip saddr {s} ip daddr {g} meta l4proto {{ tcp, udp }} th dport 53 accept
    ip saddr {s} drop
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    ip saddr {s} ip daddr {{ 169.254.0.0/16, 224.0.0.0/4 }} drop
    ip saddr {s} ip daddr {s} ip saddr . ip daddr @same_subnet accept
    ip saddr {s} ip daddr {s} drop
    ip daddr {s} ct state established,related accept
    ip daddr {s} ct status dnat accept
    ip daddr {s} drop
  }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    dnat ip to ip daddr . tcp dport map @nat_endpoints{forward}
    dnat ip to ip daddr map @vm_public
  }}
  chain output {{ type nat hook output priority -100; policy accept;
    dnat ip to ip daddr . tcp dport map @nat_endpoints
    dnat ip to ip daddr map @vm_public
  }}
  chain vm_filter {{ type filter hook postrouting priority filter; policy accept;
    ip daddr vmap @subnet_inbound
    ip daddr vmap @vm_inbound
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {s} ip daddr != {s} masquerade
    ip daddr {s} ct status dnat snat ip to {g}
  }}
}}
"""

    def _load_table(self) -> None:
        # Replace the table atomically (one transaction): no moment without the rules.
        script = f"table inet {self.table} {{}}\ndelete table inet {self.table}\n{self.ruleset()}"
        done = _run(["nft", "-f", "-"], stdin=script)
        if done.returncode != 0:
            raise NetworkError(f"cannot load the nftables rules for {self.space}: {done.stderr.strip()}")
        self._nat.clear()
        self._vm_chains.clear()

    # ------------------------------------------------------------------ inbound NAT

    def nat_endpoints(self, wanted: dict[tuple[str, int], tuple[str, int]]) -> None:
        """Make each (public address, TCP frontend port) forward to (node address, backend port), exactly as
        given. The public addresses (host-local, one per pool) are added to the gateway device."""
        with self._nat_lock:
            for public in {a for a, _ in wanted} - self._public:
                added = _run(["ip", "addr", "add", f"{public}/32", "dev", GATEWAY_DEVICE])
                if added.returncode != 0 and "File exists" not in added.stderr \
                        and "already assigned" not in added.stderr:
                    raise NetworkError(f"cannot add the public address {public}: {added.stderr.strip()}")
                self._public.add(public)
            remove = [k for k in self._nat if k not in wanted or self._nat[k] != wanted[k]]
            add = {k: t for k, t in wanted.items() if self._nat.get(k) != t}
            if not remove and not add:
                return
            lines = []
            if remove:
                keys = ", ".join(f"{a} . {p}" for a, p in remove)
                lines.append(f"delete element inet {self.table} nat_endpoints {{ {keys} }}")
            if add:
                items = ", ".join(f"{a} . {p} : {na} . {np}" for (a, p), (na, np) in sorted(add.items()))
                lines.append(f"add element inet {self.table} nat_endpoints {{ {items} }}")
            done = _run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
            if done.returncode != 0:
                raise NetworkError(f"cannot update the inbound NAT endpoints: {done.stderr.strip()}")
            for k in remove:
                self._nat.pop(k, None)
            self._nat.update(add)

    # ------------------------------------------------------------------ VMs' public IPs and inbound filters

    def vm_inbound(self, entries: list[dict[str, Any]]) -> None:
        """Make the host forward each VM's public address to it (every port: one-to-one NAT) and filter
        inbound traffic to VMs, exactly as given (others are withdrawn), in one nftables transaction.

        ``entries``: ``[{"address", "publicIPAddress" (or None), "stages": [[rule, ...], ...]}]``; a packet
        for ``address`` (after NAT, before the source is rewritten to the gateway) must pass every stage in
        turn: a rule ``{"allow", "protocol", "sources", "ports"}`` that matches ends the stage (allow) or drops
        the packet (deny). Established and related traffic always passes (replies, and connections admitted
        before a rule changed). A VM without stages is not filtered. An entry ``{"subnet", "stages"}`` filters
        every address of a subnet the same way (before a VM's own entry), and its rules may name their
        ``destinations`` in it (pools' nodes in a virtual network's subnet)."""
        with self._nat_lock:
            publics = {str(e["publicIPAddress"]): str(e["address"]) for e in entries if e.get("publicIPAddress")}
            for public in set(publics) - self._vm_public:
                added = _run(["ip", "addr", "add", f"{public}/32", "dev", GATEWAY_DEVICE])
                if added.returncode != 0 and "File exists" not in added.stderr \
                        and "already assigned" not in added.stderr:
                    raise NetworkError(f"cannot add the public address {public}: {added.stderr.strip()}")
                self._vm_public.add(public)
            t = self.table
            lines = [f"flush map inet {t} vm_public", f"flush map inet {t} vm_inbound",
                     f"flush map inet {t} subnet_inbound"]
            wanted: dict[str, list[str]] = {}
            elements: list[str] = []
            subnets: list[str] = []
            for e in entries:
                stages = e.get("stages") or []
                if not stages:
                    continue
                target = str(e.get("subnet") or e["address"])
                head = ("sn_" if e.get("subnet") else "vm_") + hashlib.sha256(target.encode()).hexdigest()[:12]
                body = ["ct state established,related accept"]
                for i, rules in enumerate(stages):
                    name = f"{head}_{i}"
                    wanted[name] = [_filter_rule(r) for r in rules]
                    body.append(f"jump {name}")
                # A subnet's chain falls through to the machine's own entry; a machine's accepts.
                wanted[head] = body if e.get("subnet") else [*body, "accept"]
                (subnets if e.get("subnet") else elements).append(f"{target} : jump {head}")
            for chain in self._vm_chains - set(wanted):
                lines.append(f"flush chain inet {t} {chain}")
            for chain in self._vm_chains - set(wanted):
                lines.append(f"delete chain inet {t} {chain}")
            for chain in sorted(wanted, key=lambda c: -len(c)):  # stages before the chains that jump to them
                lines += [f"add chain inet {t} {chain}", f"flush chain inet {t} {chain}"]
                lines += [f"add rule inet {t} {chain} {rule}" for rule in wanted[chain]]
            if publics:
                items = ", ".join(f"{p} : {a}" for p, a in sorted(publics.items()))
                lines.append(f"add element inet {t} vm_public {{ {items} }}")
            if elements:
                lines.append(f"add element inet {t} vm_inbound {{ {', '.join(elements)} }}")
            if subnets:
                lines.append(f"add element inet {t} subnet_inbound {{ {', '.join(subnets)} }}")
            done = _run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
            if done.returncode != 0:
                raise NetworkError(f"cannot update the VMs' public addresses and inbound filters: "
                                   f"{done.stderr.strip()}")
            self._vm_chains = set(wanted)
            for public in self._vm_public - set(publics):
                _run(["ip", "addr", "del", f"{public}/32", "dev", GATEWAY_DEVICE])
            self._vm_public &= set(publics)

    def down(self) -> None:
        """Remove this space's table, gateway and public addresses (uninstall, tests)."""
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        _run(["nft", "delete", "table", "inet", self.table])
        for address in [self.gateway, *self._public, *self._vm_public]:
            _run(["ip", "addr", "del", f"{address}/32", "dev", GATEWAY_DEVICE])
        self.release()

    def record(self, store_dir: Path) -> None:
        """Note the space in the store, so that tearing the store down later can remove it too."""
        (Path(store_dir) / NETWORK_RECORD).write_text(self.space + "\n")


NETWORK_RECORD = "node-network"


def _filter_rule(rule: dict[str, Any]) -> str:
    """One rule of a VM's inbound stage as an nftables rule (allow: ``return`` to the next stage; deny: drop)."""
    parts = []
    if rule.get("destinations") is not None:
        targets = [str(ipaddress.ip_network(str(x), strict=False)) for x in rule["destinations"]]
        parts.append(f"ip daddr {{ {', '.join(targets)} }}")
    if rule.get("sources") is not None:
        sources = [str(ipaddress.ip_network(str(x), strict=False)) for x in rule["sources"]]
        parts.append(f"ip saddr {{ {', '.join(sources)} }}")
    proto = rule.get("protocol")
    ports = [f"{int(lo)}" if int(lo) == int(hi) else f"{int(lo)}-{int(hi)}" for lo, hi in rule.get("ports") or []]
    if proto in ("tcp", "udp"):
        parts.append(f"meta l4proto {proto}")
    elif proto == "icmp":
        parts.append("meta l4proto icmp")
        ports = []
    elif ports:
        parts.append("meta l4proto { tcp, udp }")
    if ports:
        parts.append(f"th dport {{ {', '.join(ports)} }}")
    parts.append("return" if rule.get("allow") else "drop")
    return " ".join(parts)


def teardown(store_dir: Path) -> bool:
    """Remove the network of a store's machines (after they are all gone and its server has stopped)."""
    try:
        space = (Path(store_dir) / NETWORK_RECORD).read_text().strip()
    except OSError:
        return False
    network = NodeNetwork(space, [])
    try:
        network._claim()  # refused while a server uses it
    except NetworkError:
        return False
    show = _run(["ip", "-4", "-o", "addr", "show", "dev", GATEWAY_DEVICE]).stdout.split()
    network._public = {a.split("/")[0] for a in show if "/" in a and network.net.overlaps(
        ipaddress.ip_network(a, strict=False))} - {network.gateway}
    network.down()
    (Path(store_dir) / NETWORK_RECORD).unlink(missing_ok=True)
    return True
