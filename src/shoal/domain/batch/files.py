"""The Batch file API's use cases: where a node's or a task's files are, and listing, reading and deleting
below that directory through the host agent's :class:`~shoal.domain.host.NodeFiles` calls.

The agent does the file work (every path opened beneath the node's temporary drive without following a link,
and read from that one descriptor); here the request's path is checked, the node (or the task's node) is
found, and the agent's failures become Batch's error codes. Results are the agent's plain data; the API turns
them into Batch's JSON and headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.core.hostfiles import NodeFileError
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import pools, retired
from shoal.domain.batch import tasks as task_rules
from shoal.domain.host import NodeFiles

NODE_FILES = "batch/tasks"  # what the file API shows of a node: its tasks' directories on /mnt


@dataclass(frozen=True)
class Tree:
    """A directory on a machine: ``root`` is relative to the machine's temporary drive (/mnt)."""

    machine_id: str
    root: str


def node_tree(s: Session, account_key: str, pool_id: str, node_id: str) -> Tree:
    """The files of a pool's node (404 PoolNotFound / NodeNotFound). A node that is gone (resized away, its pool
    deleted) still answers for the task and start-task logs it held, until they expire: where Azure answers 404
    and the logs are lost, on purpose (see ``retired``)."""
    try:
        node = node_rules.get(s, pools.get(s, account_key, pool_id), node_id)
    except (errors.PoolNotFound, errors.NodeNotFound):
        machine = retired.machine_of_node(s, pools.pool_key(account_key, pool_id), node_id.lower())
        if machine is None:
            raise
        return Tree(machine, NODE_FILES)
    return Tree(node.machine_id, NODE_FILES)


def task_tree(s: Session, account_key: str, job_id: str, task_id: str) -> Tree:
    """The task's directory on the node it ran on: 409 once its retention time has passed and the node
    cleaned it up, 404 before it has run."""
    task = task_rules.get(s, job_rules.get(s, account_key, job_id), task_id)
    node = task_rules.node_of(s, task)
    kept = retired.machine_of_key(s, task.node_key) if node is None and task.node_key else None
    if kept is not None and task.node_info:  # its node is gone; its logs were kept
        return Tree(kept, f"batch/tasks/{task.node_info['taskRootDirectory']}")
    if node is None and task.node_info and task.state == "completed" and task.files_expire_at is None \
            and task.execution_info.get("endTime"):
        raise errors.TaskFilesCleanedup(
            "The files of the specified task are cleaned up (its retentionTime has passed).")
    if node is None or not task.node_info:
        missing = errors.TaskFileNotFound if node is None else errors.FileNotFound
        raise missing("The task has not run on a node yet, so it has no files.")
    return Tree(node.machine_id, f"batch/tasks/{task.node_info['taskRootDirectory']}")


def check_path(relative: str) -> str:
    """A file path of a request: relative, without ``..`` or NUL (400 otherwise)."""
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith("/") or any(p == ".." for p in parts) or "\0" in relative:
        raise errors.InvalidPropertyValue(f"The file path '{relative}' is invalid: it must stay inside the directory.",
                                          values={"FilePath": relative})
    return "/".join(p for p in parts if p not in ("", "."))


def _failed(exc: NodeFileError, relative: str) -> errors.AzureError:
    if exc.kind == "notempty":
        return errors.DirectoryNotEmpty(str(exc))
    if exc.kind == "invalid":
        return errors.InvalidPropertyValue(f"The file path '{relative}' is invalid: {exc}.",
                                           values={"FilePath": relative})
    return errors.FileNotFound("The specified file does not exist.")


def _served(agent: NodeFiles | None) -> NodeFiles:
    if agent is None:  # a server started without a host agent (admin commands): no machine has files
        raise errors.FileNotFound("The task has not run on a node yet, so it has no files.")
    return agent


def list_files(agent: NodeFiles | None, tree: Tree, *, recursive: bool) -> list[dict[str, Any]]:
    """The entries below the tree (name relative to it, isDirectory, size, mtime, mode)."""
    try:
        return _served(agent).list_node_files(tree.machine_id, tree.root, recursive=recursive)
    except NodeFileError as exc:
        raise _failed(exc, "") from None


def stat_file(agent: NodeFiles | None, tree: Tree, file_path: str) -> dict[str, Any]:
    path = check_path(file_path)
    try:
        return _served(agent).stat_node_file(tree.machine_id, tree.root, path)
    except NodeFileError as exc:
        raise _failed(exc, file_path) from None


def read_file(agent: NodeFiles | None, tree: Tree, file_path: str, start: int, end: int | None, *,
              suffix: bool) -> tuple[dict[str, Any], bytes]:
    """The file's bytes from ``start`` to ``end`` (inclusive), or with ``suffix`` its last ``start`` bytes."""
    path = check_path(file_path)
    try:
        if suffix:  # the last n bytes: their offset needs the size, read from the same descriptor
            info, data = _served(agent).read_node_file(tree.machine_id, tree.root, path)
            return info, data[-start:] if start else b""
        return _served(agent).read_node_file(tree.machine_id, tree.root, path, start, end)
    except NodeFileError as exc:
        raise _failed(exc, file_path) from None


def delete_file(agent: NodeFiles | None, tree: Tree, file_path: str, *, recursive: bool) -> None:
    path = check_path(file_path)
    try:
        _served(agent).delete_node_file(tree.machine_id, tree.root, path, recursive=recursive)
    except NodeFileError as exc:
        raise _failed(exc, file_path) from None
