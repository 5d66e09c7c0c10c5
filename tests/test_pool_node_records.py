"""The allocator's node records in the store, on SQLite and PostgreSQL: new nodes inserted in bulk get free
addresses and NAT indexes (a removed node's are given again), bulk state changes are compare-and-set with the
same transitions as single ones and move each row's version on, and leaving nodes are remembered in bulk."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness import scratch_database
from shoal.core import errors
from shoal.core.clock import Clock
from shoal.domain.batch import assignment, nodes, pool_nodes, retired
from shoal.store import models
from shoal.store.db import Database

SSH: dict[str, Any] = {"networkConfiguration": {"endpointConfiguration": {"inboundNATPools": [
    {"name": "ssh", "protocol": "tcp", "backendPort": 22, "frontendPortRangeStart": 50000,
     "frontendPortRangeEnd": 50009}]}}}
SPACE = "10.224.0.0/12"


class StepClock(Clock):
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
def db(database_url: str | None) -> Iterator[Database]:
    with scratch_database(database_url) as database:
        yield database


def make_pool(db: Database, clock: Clock, spec: dict[str, Any]) -> models.Pool:
    now = clock.now()
    with db.write() as s:
        pool = models.Pool(key="acct/p1", account_key="acct", pool_id="p1", spec=spec, content={}, state="active",
                           state_transition_time=now, allocation_state="resizing",
                           allocation_state_transition_time=now, resize_errors=[], autoscale={}, etag="e",
                           created_at=now, last_modified=now)
        s.add(pool)
    return pool


def add(db: Database, clock: Clock, pool: models.Pool, count: int) -> list[pool_nodes.NodeRecord]:
    with db.write() as s:
        row = s.get(models.Pool, pool.key)
        assert row is not None
        existing = pool_nodes.load(s, row)
        return pool_nodes.add(s, clock, row, count, 0, existing, ("127.0.0.1", "localhost"), SPACE,
                              own_network=False)


def test_new_nodes_get_free_addresses_and_nat_indexes_and_a_removed_nodes_are_given_again(db: Database) -> None:
    clock = StepClock()
    pool = make_pool(db, clock, SSH)
    first = add(db, clock, pool, 3)
    assert [n.nat_index for n in first] == [0, 1, 2]
    assert len({n.ip_address for n in first}) == 3 and all(n.state == "creating" for n in first)
    with db.read() as s:
        loaded = {n.key: n for n in pool_nodes.load(s, pool)}
    assert loaded == {n.key: n for n in first}
    with db.write() as s:
        assert pool_nodes.mark_leaving(s, [first[1].key], "requeue") == [first[1].key]
        assert pool_nodes.mark_leaving(s, [first[1].key], "terminate") == []  # already leaving: keeps its option
        assert pool_nodes.has_leaving(s, pool.key) and pool_nodes.has_work_left(s, pool.key)
        pool_nodes.delete_nodes(s, [first[1].key])
    again = add(db, clock, pool, 1)
    assert again[0].nat_index == 1 and again[0].ip_address == first[1].ip_address
    with db.read() as s:
        row = s.get(models.Node, again[0].key)
        assert row is not None and row.endpoints[0]["frontendPort"] == 50001 and row.version == 1


def test_bulk_state_changes_are_compare_and_set_with_the_single_transitions(db: Database) -> None:
    clock = StepClock()
    pool = make_pool(db, clock, {})
    a, b, c = add(db, clock, pool, 3)
    booted_at = clock.now()
    with db.write() as s:
        s.get_one(models.Node, c.key).state = "starting"  # changed meanwhile: left alone below
    with db.write() as s:
        nodes.set_states_each(s, "creating", "idle", [(k, booted_at, {"errors": [], "last_boot_time": booted_at})
                                                      for k in (a.key, c.key)], via=("starting",))
        nodes.set_states_each(s, "creating", "unusable", [(b.key, booted_at, {
            "errors": [{"code": "NodeProvisioningFailed"}], "last_boot_time": booted_at})])
    with db.read() as s:
        rows = {k: s.get_one(models.Node, k) for k in (a.key, b.key, c.key)}
    assert rows[a.key].state == "idle" and rows[a.key].state_transition_time == booted_at
    assert rows[a.key].version == 2 and rows[a.key].last_boot_time == booted_at
    assert rows[b.key].state == "unusable" and rows[b.key].errors == [{"code": "NodeProvisioningFailed"}]
    assert rows[c.key].state == "starting" and rows[c.key].version == 2
    with db.write() as s:
        assert nodes.set_states(s, clock, [a.key, c.key], "starting", "waitingforstarttask",
                                values={"start_task_info": {"state": "running"}}) == [c.key]
        with pytest.raises(errors.NodeStateConflict):
            nodes.set_states(s, clock, [b.key], "unusable", "idle")
        with pytest.raises(errors.NodeStateConflict):
            nodes.set_states_each(s, "creating", "idle", [])  # not without going through starting
    with db.read() as s:
        node = s.get_one(models.Node, c.key)
        assert node.state == "waitingforstarttask" and node.start_task_info == {"state": "running"}


def test_leaving_nodes_are_remembered_in_bulk_and_a_reused_id_forgets_the_older_machine(db: Database) -> None:
    clock = StepClock()
    pool = make_pool(db, clock, {})
    leaving = add(db, clock, pool, 3)
    with db.write() as s:
        assert retired.remember_all(s, clock, leaving) == []
    again = dataclasses.replace(leaving[0], machine_id="node-new")  # a new node of the same id, gone too
    with db.write() as s:
        assert retired.remember_all(s, clock, [again]) == [leaving[0].machine_id]
    with db.read() as s:
        assert retired.machine_of_key(s, leaving[0].key) == "node-new"
        assert retired.machine_of_key(s, leaving[2].key) == leaving[2].machine_id


def test_the_assignment_probe_sees_a_waiting_task_only_where_its_pool_has_a_free_slot(db: Database) -> None:
    """``assignment.can_assign`` is one statement over jobs, tasks, pools and nodes (the pool's
    ``taskSlotsPerNode`` read from its stored spec); it must agree with what an assignment pass would load."""
    clock = StepClock()
    pool = make_pool(db, clock, {"taskSlotsPerNode": 4})
    records = add(db, clock, pool, 2)

    def probe() -> bool:
        with db.read() as s:
            return assignment.can_assign(s)

    def nodes_are(state: str, used: int, **values: Any) -> None:
        with db.write() as s:
            for row in s.query(models.Node):
                row.state, row.running_slots = state, used
                for name, value in values.items():
                    setattr(row, name, value)

    now = clock.now()
    nodes_are("idle", 0)
    assert probe() is False, "no task at all"
    with db.write() as s:
        for key, pool_id in (("acct/elsewhere", "nowhere"), ("acct/j1", "p1")):
            s.add(models.Job(key=key, account_key="acct", job_id=key.split("/")[1], pool_id=pool_id, spec={},
                             state="active", state_transition_time=now, execution_info={}, etag="e",
                             created_at=now, last_modified=now))
        s.add(models.Task(key="acct/elsewhere/t", job_key="acct/elsewhere", task_id="t", seq=1, spec={},
                          state="active", state_transition_time=now, execution_info={}, etag="e", created_at=now,
                          last_modified=now))
    assert probe() is False, "a task waits, but for a pool that does not exist"
    with db.write() as s:
        s.add(models.Task(key="acct/j1/t", job_key="acct/j1", task_id="t", seq=2, spec={}, state="active",
                          state_transition_time=now, execution_info={}, etag="e", created_at=now, last_modified=now))
    assert probe() is True
    nodes_are("running", 3)
    assert probe() is True, "3 of 4 slots used: room for one more"
    nodes_are("running", 4)
    assert probe() is False, "every slot used"
    nodes_are("idle", 0, scheduling_state="disabled")
    assert probe() is False, "no node takes tasks"
    nodes_are("idle", 0, scheduling_state="enabled", pending="remove")
    assert probe() is False, "the nodes are leaving"
    nodes_are("starting", 0, pending="")
    assert probe() is False, "the nodes are not ready"
    nodes_are("idle", 0)
    assert probe() is True
    with db.write() as s:
        s.get(models.Task, "acct/j1/t").attempt = "a1"
    assert probe() is False, "the task has its attempt"
    with db.write() as s:
        s.get(models.Task, "acct/j1/t").attempt = None
        s.get(models.Job, "acct/j1").state = "disabled"
    assert probe() is False, "its job is disabled"
    with db.write() as s:
        s.get(models.Job, "acct/j1").state = "active"
        s.get(models.Pool, "acct/p1").state = "deleting"
    assert probe() is False, "its pool is being deleted"
    with db.write() as s:
        row = s.get(models.Pool, "acct/p1")
        row.state, row.spec = "active", {}  # one slot per node when the spec does not say
    assert probe() is True
    nodes_are("running", 1)
    assert probe() is False, "the one slot is used"
    assert len(records) == 2


@pytest.mark.parametrize("fill", ["spread", "pack"])
def test_a_pass_counts_free_slots_in_the_database_and_loads_only_the_nodes_it_may_choose(
        db: Database, fill: str) -> None:
    """``free_slots`` is an aggregate over the schedulable nodes; ``free_nodes`` with ``wanted`` loads a pool's
    first nodes in the order its fill type chooses them (twice the wanted, and a few more), and all of them
    once a choice needs more."""
    clock = StepClock()
    pool = make_pool(db, clock, {"taskSlotsPerNode": 3, "taskSchedulingPolicy": {"nodeFillType": fill}})
    records = add(db, clock, pool, 40)
    with db.write() as s:
        for i, record in enumerate(records):
            row = s.get(models.Node, record.key)
            row.state, row.running_slots = "idle", i % 4 if i % 4 < 3 else 3  # 0, 1, 2, 3 (full), ...
            if i == 5:
                row.scheduling_state = "disabled"  # not schedulable: neither counted nor loaded
    with db.write() as s:
        row_pool = s.get(models.Pool, pool.key)
        assert assignment.free_slots(s, {pool.key: row_pool}) == sum(3 - (i % 4 if i % 4 < 3 else 3)
                                                                     for i in range(40) if i != 5)
        free = assignment.free_nodes(s, {pool.key: row_pool}, {pool.key: 1})[pool.key]
        with_room = sorted(((r.running_slots, r.key) for r in s.query(models.Node)
                            if r.running_slots < 3 and r.scheduling_state == "enabled"), reverse=fill == "pack")
        first = with_room[:2 * 1 + assignment.FIRST_LOAD_SPARE]
        assert free.free_slots() == sum(3 - used for used, _ in first), "only the first nodes in fill order"
        job = models.Job(key="acct/j", spec={})
        task = models.Task(key="acct/j/t", job_key="acct/j", spec={}, slots=3)  # only a node running nothing
        if fill == "pack":  # the first load holds the busiest nodes: a task of 3 slots needs the rest
            assert all(used > 0 for used, _ in first)
        chosen = free.pick(job, task, {})
        assert chosen is not None and chosen.running_slots == 0
        loaded = with_room if fill == "pack" else first  # spread's first load holds the nodes running nothing
        assert free.free_slots() == sum(3 - used for used, _ in loaded)
