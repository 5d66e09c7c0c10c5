"""What the scheduler does in a node, through the host agent: a task directory ready for an attempt, a
command started there, and the output files an attempt's outcome asks for uploaded."""

from __future__ import annotations

import logging
from typing import Any

from shoal.core.hosterrors import TransferError
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import taskfiles
from shoal.domain.batch.assignment import NOBODY, task_user
from shoal.domain.batch.outcomes import Finished
from shoal.domain.host import HostAgent

log = logging.getLogger(__name__)


def prepare_dir(agent: HostAgent, machine: str, task_dir: str, admin: bool) -> None:
    """The task directory in the node, with its working directory, ready for a new attempt (owned by the
    task's user; the parents by the node's root)."""
    agent.make_dirs(machine, [f"{task_dir}/wd"], inside_uid=0 if admin else NOBODY, owned_tail=2)  # one walk
    agent.clear_exit(machine, task_dir)


def spawn(agent: HostAgent, machine: str, task_dir: str, command: str, env: dict[str, str], admin: bool,
          timeout: float | None) -> int:
    """Start a command in a node's machine: cwd the task's wd (made by the machine if missing, as
    :func:`prepare_dir` makes it), output in its directory, the final status where the agent keeps it."""
    found = spawn_many(agent, [(machine, task_dir, command, env, admin, timeout)])[0]
    if isinstance(found, Exception):
        raise found
    return found


Command = tuple[str, str, str, dict[str, str], bool, "float | None"]
"""What :func:`spawn_many` starts: (machine, task directory, command line, environment, admin, timeout)."""


def spawn_many(agent: HostAgent, commands: list[Command]) -> list[int | Exception]:
    """:func:`spawn` for each command, started together (the node's starters fork them meanwhile): a pid, or
    the error of that command alone."""
    # The agent clears each task's old exit status itself, and the machine makes its directories (_request).
    return agent.spawn_many([_request(*command) for command in commands]) if commands else []


def _request(machine: str, task_dir: str, command: str, env: dict[str, str], admin: bool,
             timeout: float | None) -> dict[str, Any]:
    # The task directory and its wd are made from inside the machine, by its root, following no link: the
    # task's user owns both (make_cwd=2), their parents stay root's. That costs the server nothing per task.
    return dict(machine_id=machine, argv=node_rules.command_argv(command), env=env, cwd=f"{task_dir}/wd",
                make_cwd=2, user=task_user(admin), stdout=f"{task_dir}/stdout.txt", stderr=f"{task_dir}/stderr.txt",
                timeout=timeout, exit_key=task_dir)


def upload_outputs(agent: HostAgent, item: Finished, machine: str, task_dir: str, outputs: list[dict[str, Any]],
                   env: dict[str, str], admin: bool) -> Finished:
    """Upload the output files the attempt's outcome asks for; a failed upload fails the task."""
    if not outputs or not agent.transfers_enabled:
        return item
    lines: list[str] = []
    failure = None
    for output in outputs:
        if not taskfiles.wants_upload(output, item.exit_code, item.failed):
            continue
        try:
            lines += agent.upload_output(machine, output, env, task_user(admin))["log"]
        except TransferError as exc:
            lines.append(f"ERROR {exc.code}: {exc.message}")
            failure = failure or exc.failure_info()
    try:
        agent.write_file(machine, f"{task_dir}/fileuploadout.txt", "".join(
            f"{line}\n" for line in lines if not line.startswith("ERROR")).encode())
        agent.write_file(machine, f"{task_dir}/fileuploaderr.txt", "".join(
            f"{line}\n" for line in lines if line.startswith("ERROR")).encode())
    except OSError:
        log.warning("could not write the upload log of %s", item.task_key)
    if failure is not None:
        item.failure = failure
    return item


# What uploading an attempt's output files needs after a restart: machine, task dir, outputs, env, admin.
After = tuple[str, str, list[dict[str, Any]], dict[str, str], bool]
