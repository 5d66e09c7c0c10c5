"""Compute node rules: state transitions, node actions, and what a node's machine is made of."""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from sqlalchemy import select
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
    "starting": {"waitingforstarttask", "idle", "starttaskfailed", "unusable", "leavingpool"},
    "waitingforstarttask": {"idle", "starttaskfailed", "unusable", "rebooting", "reimaging", "leavingpool"},
    "idle": {"running", "rebooting", "reimaging", "offline", "leavingpool", "unusable"},
    "running": {"idle", "rebooting", "reimaging", "offline", "leavingpool", "unusable"},
    "offline": {"idle", "running", "rebooting", "reimaging", "leavingpool"},
    "starttaskfailed": {"rebooting", "reimaging", "leavingpool", "idle"},
    "unusable": {"rebooting", "reimaging", "leavingpool", "starting"},
    "rebooting": {"starting", "unusable", "leavingpool"},
    "reimaging": {"starting", "unusable", "leavingpool"},
    "leavingpool": set(),
}


def set_state(node: models.Node, clock: Clock, state: str, at: datetime | None = None) -> None:
    """The one place a node's state changes (``at``: when it did, if that was before now)."""
    if state == node.state:
        return
    if state not in _TRANSITIONS.get(node.state, set()):
        raise errors.NodeStateConflict(f"Node {node.node_id} cannot go from {node.state} to {state}.")
    node.state = state
    node.state_transition_time = at or clock.now()


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


def disable_scheduling(node: models.Node, clock: Clock, option: str | None) -> None:
    if option and option.lower() not in ("requeue", "terminate", "taskcompletion"):
        raise errors.InvalidPropertyValue("nodeDisableSchedulingOption must be requeue, terminate or taskcompletion.")
    node.scheduling_state = "disabled"
    if node.state == "idle":
        set_state(node, clock, "offline")


def enable_scheduling(node: models.Node, clock: Clock) -> None:
    node.scheduling_state = "enabled"
    if node.state == "offline":
        set_state(node, clock, "idle")


def machine_spec(pool: models.Pool, node: models.Node, space: str = network.DEFAULT_SPACE) -> dict[str, Any]:
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
                            "limits": vmsizes.machine_limits(str(pool.spec.get("vmSize") or ""))}
    if pool.subnet and node.ip_address:
        spec["network"] = network.machine_network(node.ip_address, pool.subnet, space)
    return spec


def disk_uppers(pool: models.Pool, node: models.Node) -> list[str]:
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


def base_environment(account: str, account_url: str, pool: models.Pool, node: models.Node) -> dict[str, str]:
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
