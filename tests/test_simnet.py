"""The simulated hosts' network (shoal.cluster.simnet): namespaces on a bridge, routes between node subnets,
and a ``down`` that leaves nothing behind, also after a crash.

Every test uses a cluster name, a bridge name and a /24 of its own (in 10.253.0.0/16, outside the node address
spaces test servers pick, 10.64.0.0-10.251.255.255), so nothing collides with other work on this machine.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.cluster import simnet
from shoal.cluster.simnet import SimHost, SimNetError


def _netns_usable() -> str | None:
    """Why simulated hosts cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"shoal-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


needs_netns = pytest.mark.skipif(bool(_netns_usable()), reason=f"simulated hosts: {_netns_usable()}")


@dataclass
class Sim:
    cluster: str
    network: str
    bridge: str
    third: int

    def up(self, hosts: int = 2) -> list[SimHost]:
        return simnet.up(self.cluster, hosts, self.network, bridge=self.bridge)


@pytest.fixture
def sim() -> Iterator[Sim]:
    tag = uuid.uuid4().hex[:8]
    third = random.randint(0, 255)
    made = Sim(f"t{tag}", f"10.253.{third}.0/24", f"st{tag}", third)
    yield made
    simnet.down(made.cluster)


def ns_run(host: SimHost, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(simnet.exec_argv(host, list(argv)), capture_output=True, text=True, timeout=timeout)


# An ICMP echo for machines without ping (iputils-ping): one request, two seconds for the reply.
_ECHO = textwrap.dedent("""
    import os, socket, struct, sys, time
    def checksum(data):
        total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
        total = (total >> 16) + (total & 0xFFFF)
        return ~(total + (total >> 16)) & 0xFFFF
    ident = os.getpid() & 0xFFFF
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"shoal-simnet"
    packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(2)
        s.sendto(packet, (sys.argv[1], 0))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            data, (sender, _) = s.recvfrom(2048)
            icmp = data[(data[0] & 0x0F) * 4:]
            if sender == sys.argv[1] and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                sys.exit(0)
    sys.exit(1)
""")


def ping_argv(address: str) -> list[str]:
    if shutil.which("ping"):
        return ["ping", "-c1", "-W2", address]
    return [sys.executable, "-c", _ECHO, address]


def pings(host: SimHost | None, address: str) -> bool:
    """One ICMP echo from ``host``'s namespace (None: the root namespace) is answered."""
    argv = ping_argv(address) if host is None else simnet.exec_argv(host, ping_argv(address))
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ", 2)[1].split("@", 1)[0] for line in out.splitlines()}


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split(" ", 1)[0] for line in out.splitlines()}


def assert_gone(sim: Sim, hosts: list[SimHost]) -> None:
    assert not {h.netns for h in hosts} & namespaces()
    assert not ({h.veth for h in hosts} | {sim.bridge}) & links()
    assert simnet.leftover_namespaces(sim.cluster) == [] and simnet.leftover_links(sim.cluster) == []


# --- without root ---------------------------------------------------------------------------------------------
def test_names_are_short_unique_per_cluster_and_exec_runs_in_the_namespace() -> None:
    names = {simnet.veth_name(f"cluster-{i}", n) for i in range(200) for n in (1, 2, 244)}
    assert len(names) == 600 and max(len(n) for n in names) <= 15
    assert simnet.netns_name("demo", 3) == "shoal-demo-h3"
    host = SimHost("h1", "shoal-demo-h1", "10.213.0.11", simnet.veth_name("demo", 1))
    # nsenter keeps the machine's mounts (ip netns exec would mount a sysfs without the cgroup hierarchies)
    assert simnet.exec_argv(host, ["ray", "start"]) == ["nsenter", "--net=/run/netns/shoal-demo-h1", "--", "ray",
                                                       "start"]


@pytest.mark.parametrize("network", ["10.213.0.0/16", "10.213.0.5/24", "fd00::/120", "nonsense"])
def test_only_an_ipv4_slash_24_is_a_network(network: str) -> None:
    with pytest.raises(SimNetError, match="/24"):
        simnet.up("ok", 2, network)


@pytest.mark.parametrize("cluster", ["", "a/b", "-x", "a b", "x" * 49, "é"])
def test_cluster_names_are_checked(cluster: str) -> None:
    with pytest.raises(SimNetError, match="cluster name"):
        simnet.down(cluster)


def test_a_missing_ip_command_says_to_install_iproute2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simnet.shutil, "which", lambda _: None)
    with pytest.raises(SimNetError, match="iproute2"):
        simnet.down("demo")


# --- with root ------------------------------------------------------------------------------------------------
@needs_netns
def test_a_failing_command_is_named_with_its_stderr() -> None:
    ghost = SimHost("h1", f"shoal-missing-{uuid.uuid4().hex[:8]}-h1", "10.253.0.11", "svnoneh1")
    with pytest.raises(SimNetError) as caught:
        simnet.add_route(ghost, "10.254.0.0/24", "10.253.0.12")
    assert "ip -n shoal-missing-" in str(caught.value) and "route replace" in str(caught.value)
    assert "namespace" in str(caught.value).lower()


@needs_netns
def test_two_hosts_reach_each_other_the_bridge_and_the_head(sim: Sim) -> None:
    hosts = sim.up(2)
    gateway = f"10.253.{sim.third}.1"
    assert [(h.name, h.netns, h.address) for h in hosts] == [
        ("h1", f"shoal-{sim.cluster}-h1", f"10.253.{sim.third}.11"),
        ("h2", f"shoal-{sim.cluster}-h2", f"10.253.{sim.third}.12")]
    assert all(len(h.veth) <= 15 for h in hosts) and len({h.veth for h in hosts}) == 2
    assert {h.veth for h in hosts} | {sim.bridge} <= links()
    for host in hosts:
        assert ns_run(host, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        assert f"default via {gateway}" in ns_run(host, "ip", "route").stdout
        assert pings(host, "127.0.0.1") and pings(host, gateway)
    assert pings(hosts[0], hosts[1].address) and pings(hosts[1], hosts[0].address)
    assert not pings(hosts[0], f"10.253.{sim.third}.99")  # nobody's address: the echo check can fail

    # The head listens on the bridge address in the root namespace (Shoal's API, Ray's GCS).
    with socket.create_server((gateway, 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"head:" + conn.recv(64))

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        client = textwrap.dedent(f"""
            import socket
            with socket.create_connection(("{gateway}", {port}), timeout=5) as s:
                s.sendall(b"h2")
                print(s.recv(64).decode())
        """)
        done = ns_run(hosts[1], sys.executable, "-c", client)
        thread.join(10)
    assert done.returncode == 0 and done.stdout.strip() == "head:h2", done.stderr

    simnet.down(sim.cluster)
    assert_gone(sim, hosts)
    simnet.down(sim.cluster)  # idempotent


@needs_netns
def test_route_subnets_reach_a_node_address_on_another_host(sim: Sim) -> None:
    hosts = sim.up(2)
    h1, h2 = hosts
    subnets = {"h1": f"10.254.{sim.third}.0/25", "h2": f"10.254.{sim.third}.128/25"}
    node = f"10.254.{sim.third}.129"
    # A node address inside h2: on a dummy interface, or (kernels without the dummy module) on a veth pair.
    nic = ["link", "add", "node0", "type", "dummy"]
    if subprocess.run(["ip", "-n", h2.netns, *nic], capture_output=True).returncode != 0:
        nic = ["link", "add", "node0", "type", "veth", "peer", "name", "node1"]
        subprocess.run(["ip", "-n", h2.netns, *nic], check=True, capture_output=True)
        subprocess.run(["ip", "-n", h2.netns, "link", "set", "node1", "up"], check=True, capture_output=True)
    for argv in (["addr", "add", f"{node}/25", "dev", "node0"], ["link", "set", "node0", "up"]):
        subprocess.run(["ip", "-n", h2.netns, *argv], check=True, capture_output=True)
    # Before: h1 would send it to its default route (the root namespace), which knows nothing of it.
    assert f"via 10.253.{sim.third}.1 " in ns_run(h1, "ip", "route", "get", node).stdout

    simnet.route_subnets(hosts, subnets)
    simnet.route_subnets(hosts, subnets)  # again: routes are replaced, not refused
    assert f"via {h2.address} " in ns_run(h1, "ip", "route", "get", node).stdout
    assert pings(h1, node)
    assert f"{subnets['h1']} via {h1.address}" in ns_run(h2, "ip", "route").stdout
    root = subprocess.run(["ip", "route", "show", subnets["h2"]], capture_output=True, text=True).stdout
    assert f"via {h2.address}" in root
    assert pings(None, node)

    simnet.down(sim.cluster)
    assert_gone(sim, hosts)
    assert subprocess.run(["ip", "route", "show", subnets["h2"]], capture_output=True, text=True).stdout == ""


@needs_netns
def test_down_cleans_up_after_a_crash(sim: Sim) -> None:
    """A process that brought the cluster up and started a host's process dies: down finds it all by name."""
    crash = textwrap.dedent(f"""
        import os, signal, subprocess
        from shoal.cluster import simnet
        hosts = simnet.up({sim.cluster!r}, 3, {sim.network!r}, bridge={sim.bridge!r})
        subprocess.Popen(simnet.exec_argv(hosts[0], ["sleep", "600"]), start_new_session=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", crash], timeout=60).returncode == -signal.SIGKILL
    left = simnet.leftover_namespaces(sim.cluster)
    assert left == [simnet.netns_name(sim.cluster, n) for n in (1, 2, 3)]
    assert sim.bridge in simnet.leftover_links(sim.cluster)
    pids = subprocess.run(["ip", "netns", "pids", left[0]], capture_output=True, text=True).stdout.split()
    assert pids, "the host's process should still be running in its namespace"

    # up on the leftovers starts afresh (it clears them first) ...
    hosts = sim.up(2)
    assert simnet.leftover_namespaces(sim.cluster) == [h.netns for h in hosts]
    # ... and down removes everything, the orphaned process too.
    simnet.down(sim.cluster)
    assert_gone(sim, [*hosts, SimHost("h3", left[2], "", simnet.veth_name(sim.cluster, 3))])
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone (or dead, not yet reaped)


@needs_netns
def test_a_bridge_of_another_cluster_is_not_taken(sim: Sim) -> None:
    sim.up(1)
    other = f"o{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(SimNetError, match=f"{sim.bridge} already exists for 'shoal-sim:{sim.cluster}'"):
            simnet.up(other, 1, "10.253.0.0/24" if sim.third else "10.253.1.0/24", bridge=sim.bridge)
        assert simnet.leftover_namespaces(other) == []
        assert sim.bridge in links()
    finally:
        simnet.down(other)
