"""The rules of node hosts without Ray running: placement, process ids, errors over the wire, a lost host's nodes
(on SQLite and PostgreSQL), the API forwarded to a cluster's head, and an embedded default that never imports
Ray. The same code paths run for real in ``test_cluster.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness import scratch_database
from shoal.cluster import control
from shoal.cluster.control import ClusterHostAgent, Host
from shoal.cluster.hostside import FENCED_FILE, HostSide, error_data, raise_error
from shoal.cluster.join import lowest_priority
from shoal.core import hosterrors, hostfiles
from shoal.core.clock import Clock
from shoal.domain.batch import host_loss, pool_nodes
from shoal.domain.batch import nodes as node_rules
from shoal.reconcilers.host_loss import HostLossReconciler
from shoal.runtime.nodenet import NodeNetwork
from shoal.store import models
from shoal.store.db import Database


class ManualClock(Clock):
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


class HeadAgent:
    """The head's own agent, as far as placement needs it (it holds no machine)."""

    def status(self, machine_id: str) -> str:
        return "missing"


def agent_with(*hosts: Host) -> ClusterHostAgent:
    agent = ClusterHostAgent(HeadAgent(), "head:1", dict)
    for host in hosts:
        agent.hosts[host.name] = host
        agent._by_slot[host.slot] = host
    return agent


def node(pool: str, cores: int = 1, memory_mb: int = 1024) -> dict[str, Any]:
    return {"placement": {"pool": pool}, "limits": {"cores": cores, "memoryBytes": memory_mb << 20}}


def test_a_pools_nodes_are_spread_over_the_hosts_that_are_up() -> None:
    a, b, c = (Host(n, None, i + 1, 8, 32768, None, f"10.0.0.{i}") for i, n in enumerate("abc"))
    c.state = "lost"
    agent = agent_with(a, b, c)
    placed = []
    for i in range(10):
        host = agent._place(node("p1"))
        host.machines[f"m{i}"] = {"pool": "p1", "cores": 1, "memoryMb": 1024}
        placed.append(host.name)
    assert sorted(placed.count(h) for h in "ab") == [5, 5] and "c" not in placed
    # a second pool starts again on the host with the fewest of its nodes, then the lowest load
    a.machines["other"] = {"pool": "p2", "cores": 4, "memoryMb": 0}
    assert agent._place(node("p2")).name == "b"


def test_a_hosts_machine_sums_follow_every_change_so_placement_never_rescans_them() -> None:
    machines = control.Machines()

    def check() -> None:
        values = list(machines.values())
        assert machines.cores == sum(int(m.get("cores") or 0) for m in values)
        assert machines.memory_mb == sum(int(m.get("memoryMb") or 0) for m in values)
        pools = [m["pool"] for m in values if m.get("pool") is not None]
        assert machines.per_pool == {p: pools.count(p) for p in set(pools)}

    for i in range(6):
        machines[f"m{i}"] = {"pool": "a" if i % 2 else "b", "cores": i, "memoryMb": 100 * i}
    check()
    machines["m1"] = {"pool": "c", "cores": 7, "memoryMb": 1}  # replaced
    machines.setdefault("m2", {"pool": "z", "cores": 99})  # there already: unchanged
    machines.setdefault("adopted", {"pool": None, "cores": 0, "address": None})
    machines.pop("m3")
    assert machines.pop("gone", None) is None
    del machines["m4"]
    machines.update({"m9": {"pool": "a", "cores": 2, "memoryMb": 5}})
    check()
    machines.popitem()
    check()
    machines.clear()
    check()
    assert (machines.cores, machines.memory_mb, machines.per_pool) == (0, 0, {})


def test_every_host_routes_to_the_nodes_of_the_others_and_a_host_that_missed_them_gets_them_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """enableInterNodeCommunication across hosts: a pool's nodes are spread over the hosts, and each host reaches
    every node of the others through the host that holds it (any pool's: placement and routes do not depend on
    the pool's settings, and the hosts' filters let the nodes of one subnet reach each other)."""
    a, b, c = (Host(n, n, i + 1, 8, 32768, None, f"192.168.0.{i + 1}") for i, n in enumerate("abc"))
    agent = agent_with(a, b, c)
    for i in range(6):
        host = agent._place(node("mpi"))
        host.machines[f"m{i}"] = {"pool": "mpi", "cores": 1, "memoryMb": 1024, "address": f"10.224.16.{i + 4}"}
    assert all(len(h.machines) == 2 for h in (a, b, c))
    pushed: dict[str, dict[str, str]] = {}
    unreachable = {"c"}

    changes: dict[str, list[tuple[dict[str, str], list[str]]]] = {}

    def call(handle: str, method: str, routes: dict[str, str], *gone: list[str], timeout: float) -> int:
        if handle in unreachable:
            raise control.raylink.HostUnreachable("busy")
        if method == "change_routes":  # only what changed since the last push
            changes.setdefault(handle, []).append((routes, gone[0]))
            pushed[handle] = {a: v for a, v in {**pushed[handle], **routes}.items() if a not in gone[0]}
            return len(routes) + len(gone[0])
        assert method == "set_routes"
        pushed[handle] = routes
        return len(routes)

    monkeypatch.setattr(control.raylink, "call", call)
    agent._push_routes()
    for host in (a, b):
        others = {m["address"]: h.address for h in (a, b, c) if h is not host for m in h.machines.values()}
        assert pushed[host.name] == others and len(others) == 4
    assert agent._routes_dirty.is_set(), "the host that missed its routes is pushed to again at the next tick"
    unreachable.clear()
    agent._routes_dirty.clear()
    agent._push_routes()
    assert set(pushed["c"]) == {m["address"] for h in (a, b) for m in h.machines.values()}
    assert not agent._routes_dirty.is_set()
    assert changes == {}, "hosts whose routes did not change are not called"
    # A node boots on a and one leaves b: the others get that change alone, not their whole table again.
    a.machines["new"] = {"pool": "mpi", "cores": 1, "memoryMb": 1024, "address": "10.224.16.99"}
    left = next(iter(b.machines))
    left_address = b.machines.pop(left)["address"]
    agent._push_routes()
    assert changes["b"] == [({"10.224.16.99": a.address}, [])]
    assert changes["c"] == [({"10.224.16.99": a.address}, [left_address])]
    assert changes["a"] == [({}, [left_address])]

    def all_routes_right() -> None:
        for host in (a, b, c):
            others = {m["address"]: h.address for h in (a, b, c) if h is not host for m in h.machines.values()}
            assert pushed[host.name] == others

    all_routes_right()
    # The left node's address is given again to a node on b itself: b drops its route, the others route it to b.
    changes.clear()
    b.machines["again"] = {"pool": "mpi", "cores": 1, "memoryMb": 1024, "address": "10.224.16.99"}
    a.machines.pop("new")
    agent._push_routes()
    assert changes["b"] == [({}, ["10.224.16.99"])]
    assert changes["c"] == [({"10.224.16.99": b.address}, [])]
    assert changes["a"] == [({"10.224.16.99": b.address}, [])]
    all_routes_right()
    # c comes back with another address: every route through it changes on the others.
    changes.clear()
    c.address = "192.168.0.33"
    agent._push_routes()
    through_c = {m["address"]: "192.168.0.33" for m in c.machines.values()}
    assert changes["a"] == [(through_c, [])] and changes["b"] == [(through_c, [])] and "c" not in changes
    all_routes_right()
    # A host asked for its whole table while a push is under way (its agent restarted) gets it at the next push.
    changes.clear()
    original = call

    def restart_during(handle: str, method: str, routes: dict[str, str], *gone: list[str], timeout: float) -> int:
        if handle == "c":  # b was pushed to already (hosts go in order)
            agent._resync("b")
        return original(handle, method, routes, *gone, timeout=timeout)

    monkeypatch.setattr(control.raylink, "call", restart_during)
    a.machines["late"] = {"pool": "mpi", "cores": 1, "memoryMb": 1024, "address": "10.224.16.120"}
    agent._push_routes()
    monkeypatch.setattr(control.raylink, "call", call)
    pushed["b"] = {}  # what a restarted agent holds
    agent._push_routes()
    all_routes_right()


def test_overcommit_bounds_cores_and_memory_and_no_room_is_a_clear_error() -> None:
    small = Host("small", None, 1, 2, 4096, 1.0, None)
    agent = agent_with(small)
    small.machines["m1"] = {"pool": "p", "cores": 2, "memoryMb": 1024}
    with pytest.raises(hosterrors.AgentError, match="no node host has room"):
        agent._place(node("p", cores=1))
    small.overcommit = 2.0
    assert agent._place(node("p", cores=1, memory_mb=1024)).name == "small"
    with pytest.raises(hosterrors.AgentError):
        agent._place(node("p", cores=1, memory_mb=8000))  # 9 GB > 2 x 4 GB
    unbounded = Host("big", None, 2, 1, 1, None, None)  # no overcommit factor: no bound, as on one host
    assert agent_with(unbounded)._place(node("p", cores=64, memory_mb=10**6)).name == "big"


def test_process_ids_carry_their_hosts_slot() -> None:
    h = Host("h", None, 3, 1, 1, None, None)
    agent = agent_with(h)
    gpid = (3 << control.PID_BITS) | 4_194_303
    assert agent._split_pid(gpid) == (h, 4_194_303)
    assert agent._split_pid(1234) == (None, 1234)  # slot 0: the head's own
    with pytest.raises(hosterrors.AgentError):
        agent._split_pid(9 << control.PID_BITS)


def test_errors_cross_the_wire_as_their_own_types() -> None:
    cases: list[Exception] = [
        hosterrors.AgentError("no room"), hosterrors.LayerError("bad member"), hosterrors.HostUnavailable("fenced"),
        hostfiles.NodeFileError("notfound", "nope"),
        hosterrors.TransferError("BlobAccessDenied", "denied", "usererror", (("Url", "https://x"),))]
    for exc in cases:
        with pytest.raises(type(exc)) as raised:
            raise_error(error_data(exc))
        assert str(raised.value) == str(exc)
        if isinstance(exc, hostfiles.NodeFileError):
            assert raised.value.kind == "notfound"  # type: ignore[attr-defined]
        if isinstance(exc, hosterrors.TransferError):
            assert raised.value.failure_info() == exc.failure_info()  # type: ignore[attr-defined]
    with pytest.raises(hosterrors.AgentError, match="KeyError"):
        raise_error(error_data(KeyError("x")))  # anything else: an AgentError naming it, never a pickled object


def test_a_fenced_host_refuses_new_work_as_lost_and_the_head_stops_sending_it_any(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The raylet of a host died: ``shoal host join`` fences at once (stops the machines), but the actor may
    still answer for seconds before Ray declares the node dead. A task sent there then must come back lost
    (requeued), never failed because its machine vanished; and the head must count the host lost from then on."""
    side = HostSide("h9", str(tmp_path / "store"), {"runtime": "process"})
    request = dict(machine_id="node-gone", argv=["/bin/true"], env={}, cwd="/", user=None, stdout="/dev/null",
                   stderr="/dev/null", timeout=None, exit_key="k")
    before = side.call("spawn_many", [[request]], {})["value"][0]["error"]
    assert before["type"] == "AgentError"  # a missing machine on a healthy host is the work's failure
    spawn_many = side.agent.spawn_many

    def fenced_meanwhile(requests: list[dict[str, Any]]) -> list[Any]:  # the fence stops the machine under it
        (tmp_path / "store" / FENCED_FILE).write_text("1\n")
        return list(spawn_many(requests))

    monkeypatch.setattr(side.agent, "spawn_many", fenced_meanwhile)
    assert side.call("spawn_many", [[request]], {})["value"][0]["error"]["type"] == "HostUnavailable"
    monkeypatch.setattr(side.agent, "spawn_many", spawn_many)
    (tmp_path / "store" / FENCED_FILE).write_text("1\n")
    assert side.call("spawn_many", [[request]], {})["error"]["type"] == "HostUnavailable" and side.info()["fenced"]
    assert side.call("machine_ids", [], {}) == {"value": []}  # reading what is there is still answered

    host = Host("h9", "handle", 4, 2, 4096, None, "10.0.0.9")
    agent = agent_with(host)
    agent._where["node-gone"] = host
    changed: list[bool] = []
    agent.on_change = lambda: changed.append(True)
    calls: list[str] = []

    def call(handle: str, method: str, *args: Any, timeout: float | None = None) -> Any:
        calls.append(method)
        if method == "info":
            return side.info()
        return side.call(*args)

    monkeypatch.setattr(control.raylink, "call", call)
    [found] = agent.spawn_many([request])
    assert isinstance(found, hosterrors.HostUnavailable)  # lost: the launch stage requeues it
    assert host.state == "lost" and changed, "the host is lost from the moment it says it fenced itself"
    agent._rejoin(host)  # Ray still lists its node: it is not taken back while it is fenced
    assert host.state == "lost"
    [again] = agent.spawn_many([request])
    assert isinstance(again, hosterrors.HostUnavailable) and calls == ["call", "info"]  # no call to a lost host


@pytest.fixture
def db(database_url: str | None) -> Iterator[Database]:
    with scratch_database(database_url) as database:
        yield database


def steady_pool(db: Database, clock: Clock, size: int) -> list[pool_nodes.NodeRecord]:
    """A steady pool acct/p1 of ``size`` new node records."""
    now = clock.now()
    with db.write() as s:
        pool = models.Pool(key="acct/p1", account_key="acct", pool_id="p1", spec={}, content={}, state="active",
                           state_transition_time=now, allocation_state="resizing", target_dedicated=size,
                           allocation_state_transition_time=now, resize_errors=[], autoscale={}, etag="e",
                           created_at=now, last_modified=now)
        s.add(pool)
        nodes = pool_nodes.add(s, clock, pool, size, 0, [], ("127.0.0.1", "localhost"), "10.64.0.0/14",
                               own_network=False)
        pool.allocation_state = "steady"
    return nodes


def test_a_host_that_says_it_fenced_itself_is_lost_at_once_and_the_head_is_told_where_it_can_hear_it(
        tmp_path: Path) -> None:
    """``shoal host join`` tells the head of its fence through the API (``join.tell_head``), with what the agent
    was configured with; the head counts the host lost from then on, and an unknown host changes nothing."""
    side = HostSide("h8", str(tmp_path / "store"), {"runtime": "process"})
    side.configure({"caPem": "-----", "nodeBaseUrl": "https://10.0.0.1:1", "baseUrl": "https://10.0.0.1:1",
                    "fenceUrl": "https://10.0.0.1:1/_shoal/cluster/fenced", "clusterToken": "t" * 43})
    head = tmp_path / "store" / "head.json"
    assert head.stat().st_mode & 0o777 == 0o600
    assert json.loads(head.read_text()) == {"host": "h8", "fenceUrl": "https://10.0.0.1:1/_shoal/cluster/fenced",
                                            "clusterToken": "t" * 43}
    host = Host("h8", "handle", 3, 2, 4096, None, "10.0.0.8")
    agent = agent_with(host)
    changed: list[bool] = []
    agent.on_change = lambda: changed.append(True)
    assert not agent.host_fenced("h7") and host.state == "up" and not changed
    assert agent.host_fenced("h8") and host.state == "lost" and changed
    assert agent.lost_machines() == {}  # its machines (none here) count as lost from now


def test_a_lost_hosts_nodes_go_unusable_then_leave_after_the_fence_and_the_pool_resizes(db: Database) -> None:
    clock = ManualClock()
    nodes = steady_pool(db, clock, 3)
    with db.write() as s:
        rows = {n.machine_id: n for n in s.query(models.Node)}
        for machine, row in rows.items():
            row.state = "running" if machine == nodes[0].machine_id else "idle"
    lost = {nodes[0].machine_id: 0.5, nodes[1].machine_id: 0.5}
    with db.write() as s:
        assert host_loss.apply(s, clock, lost, fence_seconds=3.0) == ["acct/p1"]
    with db.read() as s:
        by_machine = {n.machine_id: n for n in s.query(models.Node)}
        assert [by_machine[m].state for m in lost] == ["unusable", "unusable"]
        assert by_machine[nodes[0].machine_id].errors[0]["code"] == "NodeHostLost"
        assert all(by_machine[m].pending == "" for m in lost), "nothing leaves before the fence time"
        assert by_machine[nodes[2].machine_id].state == "idle"
        assert s.get(models.Pool, "acct/p1").allocation_state == "steady"
    clock.at += timedelta(seconds=5)
    with db.write() as s:
        host_loss.apply(s, clock, {m: 3.5 for m in lost}, fence_seconds=3.0)
    with db.read() as s:
        by_machine = {n.machine_id: n for n in s.query(models.Node)}
        assert all((by_machine[m].pending, by_machine[m].pending_option) == ("remove", "requeue") for m in lost)
        p = s.get(models.Pool, "acct/p1")
        assert (p.allocation_state, p.target_dedicated) == ("resizing", 3), "the pool grows back to its target"
    with db.write() as s:  # applying again changes nothing
        assert host_loss.apply(s, clock, {m: 9.0 for m in lost}, fence_seconds=3.0) == []


def test_a_lost_node_that_another_transaction_changes_meanwhile_is_judged_by_its_new_state(db: Database) -> None:
    """The host-loss write reads no row first: its statements' conditions are the compare-and-set. A node that
    another loop's open transaction moves on (a task starts on it; it starts leaving the pool) is written by
    what that transaction committed: a running node still goes unusable, a leaving one is left to leave."""
    clock = ManualClock()
    nodes = steady_pool(db, clock, 3)
    with db.write() as s:
        for row in s.query(models.Node):
            row.state = "idle"
    with db.read() as s:
        versions = {n.key: n.version for n in s.query(models.Node)}
    holding, release = threading.Event(), threading.Event()

    def other_loop() -> None:
        with db.write() as s:  # its changes stay uncommitted while the host-loss write starts
            node_rules.set_states(s, clock, [nodes[0].key], "idle", "running")
            node_rules.set_states(s, clock, [nodes[1].key], "idle", "leavingpool")
            holding.set()
            release.wait(30)

    def host_loss_write() -> None:
        with db.write() as s:
            result.extend(host_loss.apply(s, clock, {n.machine_id: 0.5 for n in nodes}, fence_seconds=3.0))

    result: list[str] = []
    other = threading.Thread(target=other_loop)
    other.start()
    assert holding.wait(30)
    writer = threading.Thread(target=host_loss_write)
    writer.start()
    writer.join(0.5)  # it waits for the other transaction (on either database)
    release.set()
    other.join(30)
    writer.join(30)
    assert not writer.is_alive() and result == ["acct/p1"]
    with db.read() as s:
        by_key = {n.key: n for n in s.query(models.Node)}
    assert [by_key[n.key].state for n in nodes] == ["unusable", "leavingpool", "unusable"]
    assert by_key[nodes[0].key].errors[0]["code"] == "NodeHostLost" and by_key[nodes[1].key].errors == []
    assert by_key[nodes[0].key].version == versions[nodes[0].key] + 2  # the other loop's change, then this one
    assert by_key[nodes[2].key].version == versions[nodes[2].key] + 1


def test_the_host_loss_loop_writes_when_what_is_lost_changes_and_wakes_the_pool_loop(db: Database) -> None:
    clock = ManualClock()
    nodes = steady_pool(db, clock, 2)
    with db.write() as s:
        for row in s.query(models.Node):
            row.state = "idle"
    lost = {nodes[0].machine_id: 0.5}

    class Agent:
        def lost_machines(self) -> dict[str, float]:
            return dict(lost)

    loop = HostLossReconciler(db, clock, Agent(), fence_seconds=3.0)  # type: ignore[arg-type]
    woken: list[bool] = []
    loop.nudge = lambda: woken.append(True)

    def states() -> list[tuple[str, str]]:
        with db.read() as s:
            return [(s.get(models.Node, n.key).state, s.get(models.Node, n.key).pending) for n in nodes]

    assert loop.run_once() is False and woken == [True]
    assert states() == [("unusable", ""), ("idle", "")]
    with db.write() as s:  # a pass with nothing new writes nothing (this change by hand stays)
        s.get(models.Node, nodes[0].key).state = "idle"
    loop.run_once()
    assert states() == [("idle", ""), ("idle", "")] and woken == [True]
    lost[nodes[0].machine_id] = 3.5  # the fence time passed: the node leaves
    loop.run_once()
    assert states() == [("unusable", "remove"), ("idle", "")] and woken == [True, True]


def test_nodes_reach_a_clusters_api_at_their_gateway() -> None:
    net = NodeNetwork("10.224.0.0/12", [8443], api_forward="10.213.0.1:9443")
    rules = net.ruleset()
    assert "ip saddr 10.224.0.0/12 ip daddr 10.224.0.1 tcp dport 9443 dnat ip to 10.213.0.1:9443" in rules
    assert "tcp dport { 8443, 9443 } accept" in rules
    with pytest.raises(ValueError):
        NodeNetwork("10.224.0.0/12", [], api_forward="not-an-address:1")


def test_the_embedded_default_never_imports_ray() -> None:
    probe = ("import sys; import shoal.cli.main, shoal.services, shoal.api.app, shoal.cluster.wiring; "
             "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))")
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_a_fences_clean_up_yields_the_cpu_and_only_its_own_thread_does() -> None:
    seen: list[int] = []

    def clean_up() -> None:
        me = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, me)
        with lowest_priority():
            seen.append(os.getpriority(os.PRIO_PROCESS, me))
            seen.append(os.getpriority(os.PRIO_PROCESS, os.getpid()))  # the process's main thread
        seen.append(os.getpriority(os.PRIO_PROCESS, me) - before)

    main_before = os.getpriority(os.PRIO_PROCESS, os.getpid())
    worker = threading.Thread(target=clean_up)
    worker.start()
    worker.join()
    assert seen == [19, main_before, 0]
