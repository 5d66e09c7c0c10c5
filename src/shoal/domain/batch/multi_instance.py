"""Multi-instance tasks (``multiInstanceSettings``), as Azure Batch runs them (docs: "Use multi-instance tasks to
run MPI applications", "Compute node environment variables", "Task - List Subtasks").

- A task with ``multiInstanceSettings`` runs on ``numberOfInstances`` nodes at once (default 1): a primary
  (instance 0) on the master node and subtasks 1..n-1 on the others, one instance per node.
- It is only scheduled on a pool with ``enableInterNodeCommunication`` and ``taskSlotsPerNode`` 1; on any other
  pool it "is never scheduled — it remains indefinitely in the active state" (Azure's words), and so it does
  here. It waits, active, until that many nodes of its pool are free at the same time.
- Every instance downloads ``commonResourceFiles`` into the task directory (``AZ_BATCH_TASK_SHARED_DIR``, the
  same path on every node), then runs the coordination command; when all of them returned 0, the primary
  downloads the task's own ``resourceFiles`` and runs the task's command line (the application command).
  A coordination command that fails fails the attempt with its exit code (retried as any task).
- The primary's exit code is the task's; when it ends, the subtasks end, and the processes the coordination
  commands left running in the background are killed on every node.
- It runs as a whole: losing any of its nodes (removed, rebooted, preempted, or its host lost) takes the whole
  attempt off (requeued: ``requeueCount``, not ``retryCount``) and frees every node it held, as deleting the
  running task does. The scheduler kills what still runs of the attempt on the other nodes before a new attempt
  starts there.
- ``requiredSlots`` must be 1 (the REST spec: "For multi-instance Tasks, this must be 1").

The subtasks' records (``Task.subtasks``, wire-shaped ``SubtaskInformation`` plus the node's key) are written by
the scheduler: running from the assignment, completed with their coordination command's exit code when the
task's attempt ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import taskfiles
from shoal.domain.batch.pools import bad_value, missing
from shoal.store import models

FIELD = "multiInstanceSettings"
MASTER_PORT = 6000  # AZ_BATCH_MASTER_NODE is "address:port"; Azure's docs show port 6000 (reserved for Batch)


def settings(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The task's multi-instance settings, or None for an ordinary task."""
    found = spec.get(FIELD)
    return found if isinstance(found, dict) else None


def is_multi(task: models.Task) -> bool:
    return settings(task.spec or {}) is not None


def instances(spec: dict[str, Any]) -> int:
    """How many nodes the task runs on (``numberOfInstances``, 1 when omitted)."""
    found = (settings(spec) or {}).get("numberOfInstances")
    return 1 if found is None else int(found)


def coordination(spec: dict[str, Any]) -> str:
    return str((settings(spec) or {}).get("coordinationCommandLine") or "")


def common_resources(spec: dict[str, Any]) -> list[dict[str, Any]]:
    found = (settings(spec) or {}).get("commonResourceFiles") or []
    if not isinstance(found, list):
        raise ValueError("multiInstanceSettings.commonResourceFiles must be a list")
    return found


def validate(spec: dict[str, Any]) -> None:
    """Refuse a task whose multi-instance settings Azure would refuse (raises an AzureError)."""
    if FIELD not in spec or spec[FIELD] is None:
        spec.pop(FIELD, None)
        return
    mi = spec[FIELD]
    if not isinstance(mi, dict):
        raise bad_value(FIELD, mi, "an object")
    if not isinstance(mi.get("coordinationCommandLine"), str) or not mi["coordinationCommandLine"]:
        raise missing(f"{FIELD}.coordinationCommandLine")
    count = mi.get("numberOfInstances", 1)
    if count is None:
        count = 1
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise bad_value(f"{FIELD}.numberOfInstances", count, "a positive integer")
    if spec.get("requiredSlots", 1) != 1:
        raise bad_value("requiredSlots", spec.get("requiredSlots"), "must be 1 for a multi-instance task")
    taskfiles.validate_resource_files(mi.get("commonResourceFiles"), f"{FIELD}.commonResourceFiles")


def pool_runs_it(pool: models.Pool) -> bool:
    """Whether a multi-instance task can ever be scheduled on this pool (else it stays active, as in Azure)."""
    spec = pool.spec or {}
    return bool(spec.get("enableInterNodeCommunication")) and int(spec.get("taskSlotsPerNode", 1)) == 1


def environment(shared_dir: str, ips: list[str], master: bool) -> dict[str, str]:
    """The variables of one instance (the primary's node first in ``ips``)."""
    return {"AZ_BATCH_HOST_LIST": ",".join(ips), "AZ_BATCH_NODE_LIST": ";".join(ips),
            "AZ_BATCH_MASTER_NODE": f"{ips[0]}:{MASTER_PORT}",
            "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if master else "false",
            "AZ_BATCH_TASK_SHARED_DIR": shared_dir,
            "CCP_NODES": " ".join([str(len(ips)), *(f"{ip} 1" for ip in ips)])}


def start_subtasks(task: models.Task, infos: list[tuple[str, dict[str, Any]]], clock: Clock) -> None:
    """The subtasks of a new attempt, running on these nodes (node key, nodeInfo), ids 1..n-1."""
    now = timefmt.format_timestamp(clock.now())
    task.subtasks = [{"id": i, "nodeKey": key, "nodeInfo": info, "state": "running", "stateTransitionTime": now,
                      "previousState": "preparing", "previousStateTransitionTime": now, "startTime": now}
                     for i, (key, info) in enumerate(infos, start=1)]


def node_keys(task: models.Task) -> list[str]:
    """The nodes the running subtasks hold."""
    return [str(s["nodeKey"]) for s in task.subtasks or [] if s.get("state") != "completed" and s.get("nodeKey")]


def running_on(s: Session, keys: Sequence[str]) -> dict[str, list[models.Task]]:
    """The multi-instance tasks whose running subtasks hold some of these nodes: node key -> tasks. A lost
    subtask node ends the whole attempt, yet the task is not found by its node key (the primary's). Running
    multi-instance tasks are few (each holds whole nodes): they are all loaded and filtered here."""
    wanted = set(keys)
    found: dict[str, list[models.Task]] = {}
    for task in s.scalars(select(models.Task).where(models.Task.attempt.is_not(None),
                                                     models.Task.subtasks.is_not(None))):
        for key in node_keys(task):
            if key in wanted:
                found.setdefault(key, []).append(task)
    return found


def end_subtasks(s: Any, task: models.Task, results: dict[int, dict[str, Any]] | None, clock: Clock) -> None:
    """The attempt ended: its subtasks complete (with their coordination command's exit code when known) and
    give their nodes back. ``s``: the session (the nodes are loaded by key)."""
    if not task.subtasks:
        return
    now = timefmt.format_timestamp(clock.now())
    ended = []
    for sub in task.subtasks:
        sub = dict(sub)
        if sub.get("state") != "completed":
            node = s.get(models.Node, sub.get("nodeKey")) if sub.get("nodeKey") else None
            if node is not None:
                free_node(node, clock)
            result = (results or {}).get(int(sub["id"])) or {}
            code = result.get("exitCode")
            sub.update({"previousState": sub.get("state"), "previousStateTransitionTime": sub.get(
                "stateTransitionTime"), "state": "completed", "stateTransitionTime": now, "endTime": now})
            if code is not None:
                sub["exitCode"] = code
            failure = result.get("failureInfo")
            if failure is None and code not in (None, 0):
                failure = {"category": "usererror", "code": "FailureExitCode",
                           "message": "The task process exited with an unexpected exit code", "details": []}
            sub["result"] = "failure" if failure is not None or code is None else "success"
            if failure is not None:
                sub["failureInfo"] = failure
        ended.append(sub)
    task.subtasks = ended


def free_node(node: models.Node, clock: Clock) -> None:
    """A subtask's node is free again (one slot, one task)."""
    node.running_slots = max(0, node.running_slots - 1)
    node.running_tasks = max(0, node.running_tasks - 1)
    if node.running_tasks == 0 and node.state == "running":
        node_rules.set_state(node, clock, node_rules.after_last_task(node))


def take_node(node: models.Node, clock: Clock) -> None:
    node.running_slots += 1
    node.running_tasks += 1
    if node.state == "idle":
        node_rules.set_state(node, clock, "running")


def render(task: models.Task) -> list[dict[str, Any]]:
    """``subtasksinfo``: the subtasks of the task's latest attempt (empty for an ordinary task)."""
    return [{k: v for k, v in sub.items() if k != "nodeKey"} for sub in task.subtasks or []]
