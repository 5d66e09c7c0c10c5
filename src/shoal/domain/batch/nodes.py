"""Compute node rules: state transitions, node actions, and what a node's machine is made of."""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.core.clock import Clock
from shoal.domain import network
from shoal.domain.batch import vmsizes
from shoal.domain.host import HostAgent
from shoal.store import models

NODE_ROOT = "/mnt/batch/tasks"
NOBODY = 65534  # the unprivileged user (inside the node) that non-admin tasks run as
TRANSITIONAL = ("creating", "starting", "rebooting", "reimaging", "waitingforstarttask")
_TRANSITIONS: dict[str, set[str]] = {
    "creating": {"starting", "unusable", "leavingpool"},
    "starting": {"waitingforstarttask", "idle", "starttaskfailed", "unusable", "leavingpool", "preempted"},
    "waitingforstarttask": {"idle", "starttaskfailed", "unusable", "rebooting", "reimaging", "leavingpool",
                            "preempted"},
    "idle": {"running", "rebooting", "reimaging", "offline", "leavingpool", "unusable", "preempted", "deallocating"},
    "running": {"idle", "rebooting", "reimaging", "offline", "leavingpool", "unusable", "preempted",
                "deallocating"},
    "offline": {"idle", "running", "rebooting", "reimaging", "leavingpool", "preempted"},
    "starttaskfailed": {"rebooting", "reimaging", "leavingpool", "idle", "preempted"},
    "unusable": {"rebooting", "reimaging", "leavingpool", "starting", "preempted"},
    "rebooting": {"starting", "unusable", "leavingpool"},
    "reimaging": {"starting", "unusable", "leavingpool"},
    # A low-priority (Spot) node whose capacity Azure took back: listed until capacity returns, then it starts
    # again (domain/batch/eviction.py).
    "preempted": {"starting", "unusable", "leavingpool"},
    # Deallocate / start (the node's VM stopped and started again; its disks are kept).
    "deallocating": {"deallocated", "unusable", "leavingpool"},
    "deallocated": {"starting", "unusable", "leavingpool"},
    "leavingpool": set(),
}


BULK_CHUNK = 500  # keys per statement in bulk changes (bound parameters per statement stay well below limits)
NODES = cast(Table, models.Node.__table__)  # bulk changes are written to the table, without loading rows


class NodeLike(Protocol):
    """What machine specs and task environments read of a node: its row, or a lighter record of it."""

    @property
    def node_id(self) -> str: ...
    @property
    def machine_id(self) -> str: ...
    @property
    def ip_address(self) -> str: ...
    @property
    def is_dedicated(self) -> bool: ...


def sources(state: str) -> list[str]:
    """The states a node may leave for ``state`` (a bulk change's compare-and-set condition)."""
    return sorted(current for current, targets in _TRANSITIONS.items() if state in targets)


def can_become(current: str, state: str) -> bool:
    """Whether a node in state ``current`` may go to ``state``."""
    return state in _TRANSITIONS.get(current, set())


def set_state(node: models.Node, clock: Clock, state: str, at: datetime | None = None) -> None:
    """The one place a node's state changes (``at``: when it did, if that was before now). The bulk forms
    below are the same door for many nodes at once, with the same transitions."""
    if state == node.state:
        return
    if state not in _TRANSITIONS.get(node.state, set()):
        raise errors.NodeStateConflict(f"Node {node.node_id} cannot go from {node.state} to {state}.")
    node.state = state
    node.state_transition_time = at or clock.now()


def _check_path(path: Sequence[str]) -> None:
    for a, b in itertools.pairwise(path):
        if a != b and b not in _TRANSITIONS.get(a, set()):
            raise errors.NodeStateConflict(f"A node cannot go from {a} to {b}.")


def set_states(s: Session, clock: Clock, keys: Sequence[str], from_state: str, to_state: str, *,
               values: dict[str, Any] | None = None) -> list[str]:
    """Nodes still in ``from_state`` go to ``to_state`` (with the same ``values`` written to every one) in one
    statement per chunk of keys; nodes that changed state meanwhile are left alone (compare-and-set). Returns
    the keys that changed. Each changed row's version moves on, as an ORM write would."""
    _check_path((from_state, to_state))
    table = NODES
    changes: dict[str, Any] = dict(values or {})
    if to_state != from_state:
        changes.update(state=to_state, state_transition_time=clock.now())
    changed: list[str] = []
    for i in range(0, len(keys), BULK_CHUNK):
        stmt = (update(table).where(table.c.key.in_(keys[i:i + BULK_CHUNK]), table.c.state == from_state)
                .values(version=table.c.version + 1, **changes).returning(table.c.key))
        changed.extend(s.execute(stmt).scalars())
    return changed


def set_states_each(s: Session, from_state: str, to_state: str, rows: Sequence[tuple[str, datetime, dict[str, Any]]],
                    *, via: Sequence[str] = ()) -> None:
    """Nodes still in ``from_state`` go to ``to_state`` (through the states of ``via``, all at once), each at
    its own time and with its own ``values``: rows of (key, when, values), every values dict with the same
    columns. One statement for all (executemany); nodes that changed state meanwhile are left alone."""
    _check_path((from_state, *via, to_state))
    if not rows:
        return
    table = NODES
    columns = sorted(rows[0][2])
    stmt = (update(table).where(table.c.key == bindparam("b_key"), table.c.state == from_state)
            .values(version=table.c.version + 1, state=to_state, state_transition_time=bindparam("b_at"),
                    **{c: bindparam(f"b_{c}") for c in columns}))
    s.execute(stmt, [{"b_key": key, "b_at": at, **{f"b_{c}": v[c] for c in columns}} for key, at, v in rows])


def get(s: Session, pool: models.Pool, node_id: str) -> models.Node:
    node = s.get(models.Node, f"{pool.key}/{node_id.lower()}")
    if node is None:
        raise errors.NodeNotFound("The specified node does not exist.")
    return node


def isolation(agent: HostAgent | None) -> str:
    """How isolated the nodes are, as each node reports it: the host agent's level ("unknown" on a server
    started without one)."""
    return agent.isolation if agent is not None else "unknown"


def list_nodes(s: Session, pool_key: str) -> list[models.Node]:
    return list(s.scalars(select(models.Node).where(models.Node.pool_key == pool_key).order_by(models.Node.key)))


def request(node: models.Node, clock: Clock, action: str, option: str | None) -> None:
    """reboot / reimage: the node goes into that state now; the reconciler does the work."""
    allowed = ("idle", "running", "starttaskfailed", "unusable", "offline", "waitingforstarttask")
    if node.state not in allowed or node.pending:
        refused = errors.NodeStateConflict if node.pending else errors.OperationInvalidForCurrentState
        raise refused(f"The node is {node.state}; {action} needs an idle or running node.")
    node.pending, node.pending_option = action, (option or "requeue").lower()
    set_state(node, clock, "rebooting" if action == "reboot" else "reimaging")


def deallocate(node: models.Node, clock: Clock, option: str | None) -> None:
    """Deallocate: Azure allows it for an idle or running node; the node is ``deallocating`` until the
    reconciler has stopped its machine (its tasks handled per ``nodeDeallocateOption``), then ``deallocated``."""
    choice = (option or "requeue").lower()
    if choice not in ("requeue", "terminate", "taskcompletion", "retaineddata"):
        raise errors.InvalidPropertyValue(
            "nodeDeallocateOption must be requeue, terminate, taskcompletion or retaineddata.",
            values={"PropertyName": "nodeDeallocateOption", "PropertyValue": str(option)})
    if node.state not in ("idle", "running") or node.pending:
        raise errors.OperationInvalidForCurrentState(
            f"The node is {node.state}; a compute node can be deallocated only when it is idle or running.")
    node.pending, node.pending_option = "deallocate", "taskcompletion" if choice == "retaineddata" else choice
    set_state(node, clock, "deallocating")


def start(node: models.Node, clock: Clock) -> None:
    """Start a deallocated node: ``starting`` now; the reconciler boots its machine again (start task, idle)."""
    if node.state != "deallocated" or node.pending:
        raise errors.OperationInvalidForCurrentState(
            f"The node is {node.state}; only a deallocated compute node can be started.")
    node.pending, node.pending_option = "start", ""
    set_state(node, clock, "starting")


def disable_scheduling(node: models.Node, clock: Clock, option: str | None) -> str:
    """The node takes no new task; it is ``offline`` once nothing runs there: now when it is idle, or when its
    running tasks stop (``requeue``, the default, and ``terminate``: the caller takes them off); with
    ``taskcompletion`` when the last of them ends. Returns the option, checked."""
    option = (option or "requeue").lower()
    if option not in ("requeue", "terminate", "taskcompletion"):
        raise errors.InvalidPropertyValue("nodeDisableSchedulingOption must be requeue, terminate or taskcompletion.")
    node.scheduling_state = "disabled"
    if node.state == "idle" or (node.state == "running" and option != "taskcompletion"):
        set_state(node, clock, "offline")
    return option


def after_last_task(node: models.Node) -> str:
    """The state of a running node whose last task ended: idle, or offline when its scheduling is disabled."""
    return "offline" if node.scheduling_state == "disabled" else "idle"


def enable_scheduling(node: models.Node, clock: Clock) -> None:
    node.scheduling_state = "enabled"
    if node.state == "offline":
        set_state(node, clock, "running" if node.running_tasks else "idle")


def machine_spec(pool: models.Pool, node: NodeLike, space: str = network.DEFAULT_SPACE) -> dict[str, Any]:
    """What the host agent boots for a node: the pool image's layers, one upper per disk, volatile; its address
    on the pool's subnet and the cores and memory of the pool's VM size."""
    content = pool.content
    data: dict[str, Any] = {lun: {"layers": list(stack), "upper": f"{node.machine_id}-lun{lun}"}
                            for lun, stack in (content.get("data") or {}).items()}
    for disk in (pool.spec.get("virtualMachineConfiguration") or {}).get("dataDisks") or []:
        lun = str(disk.get("lun"))
        data.setdefault(lun, {"layers": [], "upper": f"{node.machine_id}-lun{lun}"})
    spec: dict[str, Any] = {"machineId": node.machine_id, "hostname": node.machine_id, "base": content.get("base"),
                            "osDisk": {"layers": list(content.get("os") or []), "upper": f"{node.machine_id}-os"},
                            "dataDisks": data, "volatile": True,
                            "limits": vmsizes.machine_limits(str(pool.spec.get("vmSize") or "")),
                            # A cluster spreads a pool's nodes over its node hosts (cluster/control.py).
                            "placement": {"pool": pool.key}}
    if pool.subnet and node.ip_address:
        spec["network"] = network.machine_network(node.ip_address, pool.subnet, space)
    return spec


def disk_uppers(pool: models.Pool, node: NodeLike) -> list[str]:
    spec = machine_spec(pool, node)
    return [spec["osDisk"]["upper"], *(d["upper"] for d in spec["dataDisks"].values())]


def command_argv(command_line: str) -> list[str]:
    """Batch does not run command lines under a shell: split them like a shell would, without expansion."""
    try:
        argv = shlex.split(command_line)
    except ValueError as exc:
        raise errors.InvalidPropertyValue(f"The command line could not be parsed: {exc}.") from exc
    if not argv:
        raise errors.InvalidPropertyValue("The command line is empty.")
    return argv


def base_environment(account: str, account_url: str, pool: models.Pool, node: NodeLike) -> dict[str, str]:
    """The AZ_BATCH_* variables every task on a node sees (see the Batch compute node environment docs)."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
        "HOME": "/root",
        "AZ_BATCH_ACCOUNT_NAME": account, "AZ_BATCH_ACCOUNT_URL": account_url, "AZ_BATCH_POOL_ID": pool.pool_id,
        "AZ_BATCH_NODE_ID": node.node_id, "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.is_dedicated else "false",
        "AZ_BATCH_NODE_ROOT_DIR": NODE_ROOT, "AZ_BATCH_NODE_SHARED_DIR": f"{NODE_ROOT}/shared",
        "AZ_BATCH_NODE_STARTUP_DIR": f"{NODE_ROOT}/startup", "AZ_BATCH_NODE_MOUNTS_DIR": f"{NODE_ROOT}/fsmounts",
        "AZ_BATCH_CERTIFICATES_DIR": f"{NODE_ROOT}/startup/certs",
        "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES": "1000000000",
    }
