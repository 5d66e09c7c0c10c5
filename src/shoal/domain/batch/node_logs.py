"""``uploadbatchservicelogs``: a node's Batch service logs, written to a Shoal-served container.

Azure uploads its node agent's logs to the container URL given (a SAS URL). Shoal has no agent process on the
node; what stands for its logs is a Shoal agent log written from the service's own records of the node (its
allocation, boots, state, errors, start task) plus the node's task and start-task logs (``stdout.txt``,
``stderr.txt`` and the other files of the ``startup`` and ``workitems`` directories) modified since
``startTime``. The container URL must be a Shoal container URL (``shoal container url``): its signature is the
SAS. The blobs go under ``{poolId}/{nodeId}/{unique id}/`` as Azure names the virtual directory.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shoal.core import errors
from shoal.domain import containers
from shoal.domain.host import NodeFiles
from shoal.store import models

ROOT = "batch/tasks"  # the node files root, on the temporary drive
LOG_DIRS = ("startup", "workitems")
AGENT_LOG = "shoal-agent.log"


@dataclass(frozen=True)
class Upload:
    container: str
    directory: str  # the virtual directory, ending with "/"


def target(key: bytes, container_url: Any, pool_id: str, node_id: str) -> Upload:
    """Where the logs go: the container of a Shoal container URL whose signature grants it."""
    if not container_url or not isinstance(container_url, str):
        raise errors.MissingRequiredProperty("The containerUrl property is required.",
                                             values={"PropertyName": "containerUrl"})
    parts = urlsplit(container_url)
    name, _, prefix = parts.path.partition("/containers/")[2].partition("/")
    sigs = parse_qs(parts.query).get("sig") or []
    sig = sigs[0] if sigs else None
    if "/containers/" not in parts.path or not name or not containers.verify(key, name, sig):
        raise errors.InvalidPropertyValue(
            "The containerUrl must be a Shoal container URL with its signature (get one with `shoal container "
            "url NAME`); the node cannot write to other storage.",
            values={"PropertyName": "containerUrl", "PropertyValue": container_url.split("?")[0]})
    prefix = prefix.strip("/")
    directory = "/".join(p for p in (prefix, pool_id, node_id, str(uuid.uuid4())) if p) + "/"
    return Upload(name, directory)


def agent_log(node: models.Node, pool: models.Pool, isolation: str, now: datetime) -> bytes:
    """The Shoal agent log of a node, from the service's records of it."""
    lines = [f"{now.isoformat()} node {node.node_id} of pool {pool.pool_id} (machine {node.machine_id}, "
             f"isolation {isolation}, vmSize {pool.spec.get('vmSize')})",
             f"{node.allocation_time.isoformat()} allocated, address {node.ip_address}, "
             f"{'dedicated' if node.is_dedicated else 'low priority'}"]
    if node.last_boot_time is not None:
        lines.append(f"{node.last_boot_time.isoformat()} booted")
    lines.append(f"{node.state_transition_time.isoformat()} state {node.state}, scheduling "
                 f"{node.scheduling_state}, {node.total_tasks_run} tasks run ({node.total_tasks_succeeded} "
                 f"succeeded), {node.running_tasks} running")
    if node.start_task_info:
        lines.append(f"start task: {node.start_task_info}")
    for e in node.errors or []:
        lines.append(f"error {e.get('code')}: {e.get('message')}")
    return ("\n".join(lines) + "\n").encode()


def log_files(files: NodeFiles, machine_id: str, since: datetime) -> list[str]:
    """The node's task and start-task log files (paths below ``ROOT``) modified since
    ``since`` (a whole file is uploaded when it holds messages of the range, as Azure does)."""
    out: list[str] = []
    for root in LOG_DIRS:
        for f in files.list_node_files(machine_id, f"{ROOT}/{root}", recursive=True):
            if not f["isDirectory"] and f["mtime"] >= since.timestamp():
                out.append(f"{root}/{f['name']}")
    return out
