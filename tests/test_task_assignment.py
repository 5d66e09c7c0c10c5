"""Unit tests of the task assignment rules (domain/batch/assignment.py): which free node a task goes to."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shoal.domain.batch.assignment import FreeNodes, nodes_wanted
from shoal.store import models


def _pool(slots: int, fill: str = "spread") -> models.Pool:
    return models.Pool(key="acct/p", pool_id="p", spec={"taskSlotsPerNode": slots,
                                                        "taskSchedulingPolicy": {"nodeFillType": fill}})


def _node(i: int, used: int) -> models.Node:
    return models.Node(key=f"acct/p/tvmps_{i:03d}", node_id=f"tvmps_{i:03d}", running_slots=used)


def _task(slots: int = 1, affinity: str | None = None) -> models.Task:
    spec: dict[str, Any] = {"affinityInfo": {"affinityId": affinity}} if affinity else {}
    return models.Task(key="acct/j/t", job_key="acct/j", spec=spec, slots=slots)


JOB = models.Job(key="acct/j", spec={})


def _reference(pool: models.Pool, nodes: list[models.Node], task: models.Task,
               failed: frozenset[str] = frozenset()) -> models.Node | None:
    """The rule as written: the least (spread) or most (pack) used node with room, ties by key (``failed``:
    nodes where the job's preparation failed, which get none of its tasks)."""
    per_node = int(pool.spec["taskSlotsPerNode"])
    free = [n for n in nodes if n.running_slots + task.slots <= per_node and n.key not in failed]
    if not free:
        return None
    pack = pool.spec["taskSchedulingPolicy"]["nodeFillType"] == "pack"
    return (max if pack else min)(free, key=lambda n: (n.running_slots, n.key))


def _assign_each(pool: models.Pool, free: FreeNodes, twins: dict[str, models.Node], slots: list[int],
                 job: models.Job, failed: frozenset[str] = frozenset()) -> None:
    """Tasks of these slots one after another: each goes where the rule over ``twins`` (copies of every node,
    given the same tasks) says."""
    prepared = {("acct/j", key): {"state": "completed", "result": "failure"} for key in failed}
    for need in slots:
        task = _task(need)
        expected = _reference(pool, list(twins.values()), task, failed)
        got = free.pick(job, task, prepared)
        assert (got.key if got else None) == (expected.key if expected else None)
        if got is not None and expected is not None:
            before = got.running_slots
            got.running_slots += need
            twins[expected.key].running_slots += need
            free.take(got, before)


def test_spread_fills_the_least_used_node_first_and_pack_the_most_used() -> None:
    nodes = [_node(0, 2), _node(1, 0), _node(2, 3)]
    assert FreeNodes(_pool(4), nodes).pick(JOB, _task(), {}) is nodes[1]
    assert FreeNodes(_pool(4, "pack"), nodes).pick(JOB, _task(), {}) is nodes[2]
    assert FreeNodes(_pool(4, "pack"), nodes).pick(JOB, _task(slots=2), {}) is nodes[0]
    assert FreeNodes(_pool(4), nodes).pick(JOB, _task(slots=5), {}) is None


def test_affinity_names_a_node_with_room_else_it_is_only_a_hint() -> None:
    nodes = [_node(0, 0), _node(1, 1), _node(2, 2)]
    assert FreeNodes(_pool(2), nodes).pick(JOB, _task(affinity="TVM:TVMPS_001"), {}) is nodes[1]
    assert FreeNodes(_pool(2), nodes).pick(JOB, _task(affinity="TVM:tvmps_002"), {}) is nodes[0]


def test_a_node_whose_job_preparation_failed_gets_no_task_of_that_job() -> None:
    nodes = [_node(0, 0), _node(1, 0)]
    failed = {("acct/j", nodes[0].key): {"state": "completed", "result": "failure"}}
    assert FreeNodes(_pool(1), nodes).pick(JOB, _task(), failed) is nodes[1]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.sampled_from(["spread", "pack"]), st.lists(st.integers(0, 6), max_size=12),
       st.lists(st.integers(1, 3), max_size=30), st.integers(0, 2**16))
def test_assigning_one_task_after_another_chooses_as_the_rule_says(per_node: int, fill: str, used: list[int],
                                                                  slots: list[int], seed: int) -> None:
    pool = _pool(per_node, fill)
    nodes = [_node(i, min(u, per_node)) for i, u in enumerate(used)]
    random.Random(seed).shuffle(nodes)
    twins = {n.key: _node(int(n.node_id[-3:]), n.running_slots) for n in nodes}
    free = FreeNodes(pool, nodes)
    _assign_each(pool, free, twins, slots, JOB)
    assert free.free_slots() == sum(per_node - n.running_slots for n in twins.values())


@settings(max_examples=80, deadline=None)
@example(2, "spread", [0, 0], [1, 1], 1, set(), 0)  # the loaded node is now used more than one not loaded
@example(1, "spread", [0, 0], [1], 1, {0}, 0)  # the loaded node takes none of the job's tasks
@example(2, "pack", [0, 1], [2], 1, set(), 0)  # a task of two slots fits only a node not loaded
@given(st.integers(1, 4), st.sampled_from(["spread", "pack"]), st.lists(st.integers(0, 4), max_size=14),
       st.lists(st.integers(1, 2), max_size=20), st.integers(0, 14), st.sets(st.integers(0, 13), max_size=5),
       st.integers(0, 2**16))
def test_a_pass_that_loads_only_the_first_nodes_chooses_as_if_it_had_loaded_them_all(
        per_node: int, fill: str, used: list[int], slots: list[int], first: int, failed_at: set[int],
        seed: int) -> None:
    """free_nodes loads a pool's first nodes in the order of its fill type, and the rest only when a choice
    needs them: every choice is the rule's over all the nodes, whatever the size of the first load, tasks of
    several slots and nodes that take none of the job's tasks included."""
    pool = _pool(per_node, fill)
    nodes = [_node(i, min(u, per_node)) for i, u in enumerate(used)]
    failed = frozenset(n.key for i, n in enumerate(nodes) if i in failed_at)
    job = models.Job(key="acct/j", spec={"jobPreparationTask": {"waitForSuccess": True}})
    with_room = [n for n in nodes if n.running_slots < per_node]
    in_order = sorted(with_room, key=lambda n: (n.running_slots, n.key), reverse=fill == "pack")
    random.Random(seed).shuffle(nodes)
    loads: list[int] = []

    def rest() -> list[models.Node]:
        loads.append(1)
        return [n for n in nodes if n.running_slots < per_node]  # as the database holds them now

    twins = {n.key: _node(int(n.node_id[-3:]), n.running_slots) for n in nodes}
    first = min(first, max(0, len(in_order) - 1))  # a part only (all of them: the test above)
    free = FreeNodes(pool, in_order[:first], rest if in_order else None)
    _assign_each(pool, free, twins, slots, job, failed)
    assert len(loads) <= 1


def test_a_first_load_is_completed_for_a_hinted_node_and_for_whole_nodes_it_lacks() -> None:
    nodes = [_node(i, 0) for i in range(4)]
    loads: list[int] = []

    def rest() -> list[models.Node]:
        loads.append(1)
        return nodes

    hinted = FreeNodes(_pool(2), nodes[:1], rest)
    assert hinted.pick(JOB, _task(affinity="TVM:TVMPS_003"), {}) is nodes[3] and loads == [1]
    prep = models.Job(key="acct/j", spec={"jobPreparationTask": {"waitForSuccess": True}})
    failed = {("acct/j", nodes[0].key): {"state": "completed", "result": "failure"}}
    whole = FreeNodes(_pool(2), nodes[:2], rest)  # of the two loaded, one takes none of the job's tasks
    assert whole.pick_many(prep, _task(), failed, 2) == [nodes[1], nodes[2]] and loads == [1, 1]
    packed = FreeNodes(_pool(2, "pack"), nodes[2:], rest)  # a pack pool's first load ends at its least used
    assert packed.pick_many(JOB, _task(), {}, 2) == [nodes[0], nodes[1]] and loads == [1, 1, 1]


def test_a_pass_counts_the_nodes_its_candidates_could_take_and_a_corrupt_record_counts_one() -> None:
    """``nodes_wanted`` reads each candidate's multi-instance settings before the pass rejects a bad record: a
    record of the wrong shape must not fail the whole pass, nor ask for no node at all."""
    job = models.Job(key="acct/j", account_key="acct", pool_id="p", spec={})

    def task(settings: Any) -> models.Task:
        return models.Task(key="acct/j/t", job_key="acct/j", spec={} if settings is None else
                           {"multiInstanceSettings": settings}, slots=1)

    hostile = [task({"numberOfInstances": "x"}), task(["not", "a", "dict"]), task({"numberOfInstances": -5}),
               task({"numberOfInstances": {"deep": [1]}})]
    wanted = nodes_wanted([task(None), task({"numberOfInstances": 3}), *hostile], {"acct/j": job})
    assert wanted == {"acct/p": 1 + 3 + len(hostile)}
