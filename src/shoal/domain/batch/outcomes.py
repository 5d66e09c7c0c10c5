"""How an attempt of a task ends: recorded, retried, requeued or rejected.

An attempt's end arrives as a :class:`Finished` (plain data: the process's exit, or why there was none). The
scheduler records a batch of them in one transaction: :func:`end_attempt` gives the node its slots back and
decides the task's next state; what the completed task's exit options ask of its job, and whether its job is
now complete, is :mod:`shoal.domain.batch.jobs`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from shoal.core import etags, timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import tasks
from shoal.domain.batch.assignment import constraints
from shoal.store import models


@dataclass
class Finished:
    """The end of one attempt of a task."""

    task_key: str
    attempt: str
    exit_code: int | None
    timed_out: bool = False
    error: str | None = None
    lost: bool = False  # the attempt vanished (machine gone): requeue
    # A resource file that could not be downloaded (the command never ran) or an output file that could not be
    # uploaded: the task's failureInfo. Neither is retried (as in Azure).
    failure: dict[str, Any] | None = None
    # A multi-instance task's subtasks: their coordination command's end, by subtask id.
    subtasks: dict[int, dict[str, Any]] | None = None

    @property
    def failed(self) -> bool:
        return self.exit_code != 0 or self.timed_out or self.error is not None


def count_on_node(node: models.Node, task: models.Task, item: Finished, clock: Clock) -> None:
    """The node's slots come back, and its task totals count the attempt."""
    tasks.free_slot(node, task, clock)
    node.total_tasks_run += 1
    if item.exit_code == 0 and not item.timed_out:
        node.total_tasks_succeeded += 1


def max_retries(task: models.Task, job: models.Job | None) -> int:
    """The task's own ``maxTaskRetryCount``, else its job's (-1: retry without limit). A value that is not
    an integer (a record written by hand) counts as no retries: the task must end."""
    own = constraints(task.spec).get("maxTaskRetryCount")
    if own is None:
        own = constraints(job.spec if job is not None else {}).get("maxTaskRetryCount")
    return own if isinstance(own, int) and not isinstance(own, bool) and own >= -1 else 0


def end_attempt(task: models.Task, job: models.Job | None, item: Finished, now: datetime, clock: Clock) -> bool:
    """Record the attempt's end on its task: back in the queue (lost, or a retry), or completed. True when the
    task completed (its job may have to act). Raises one of ``BAD_RECORD`` when the task's record is unreadable."""
    if item.lost:
        tasks.requeue(task, clock)
        return False
    info = dict(task.execution_info)
    task.attempt, task.pid = None, None
    info["endTime"] = timefmt.format_timestamp(now)
    # A file transfer that failed is not retried; otherwise the process's end decides.
    failure = item.failure or tasks.run_failure(item.exit_code, item.timed_out, item.error)
    if item.exit_code is not None:
        info["exitCode"] = item.exit_code
    else:
        info.pop("exitCode", None)
    retries = max_retries(task, job)
    if failure is not None and not item.timed_out and item.failure is None and \
            (retries == -1 or int(info.get("retryCount", 0)) < retries):
        info["retryCount"] = int(info.get("retryCount", 0)) + 1
        info["lastRetryTime"] = timefmt.format_timestamp(now)
        info["failureInfo"] = failure
        info["result"] = "failure"
        task.execution_info = info
        task.node_key = None
        tasks.set_state(task, clock, "active")
        return False
    info["result"] = "success" if failure is None else "failure"
    if failure is None:
        info.pop("failureInfo", None)
    else:
        info["failureInfo"] = failure
    task.execution_info = info
    tasks.set_state(task, clock, "completed")
    task.etag = etags.new_etag()
    task.last_modified = now
    if task.node_key is not None:
        task.files_expire_at = now + tasks.retention(task.spec)
    return True


def reject(task: models.Task, exc: Exception, clock: Clock) -> None:
    """Complete a task whose stored record cannot be run."""
    info = dict(task.execution_info or {})
    now = timefmt.format_timestamp(clock.now())
    info.update({"startTime": info.get("startTime") or now, "endTime": now, "result": "failure",
                 "failureInfo": {"category": "servererror", "code": "TaskRecordInvalid",
                                 "message": f"The task's stored definition cannot be run: {exc}. Delete the "
                                            "task and add it again.", "details": []}})
    task.execution_info = info
    task.attempt, task.pid = None, None
    tasks.set_state(task, clock, "completed")
    task.etag = etags.new_etag()
    task.last_modified = clock.now()


def take_off(task: models.Task, node: models.Node | None, option: str, clock: Clock) -> None:
    """End the running attempt of a task whose job is being disabled: ``requeue`` puts it back in the queue,
    ``terminate`` completes it as failed. The attempt is cleared, so the killed process's exit is ignored when
    it arrives."""
    if node is not None:
        tasks.free_slot(node, task, clock)
    if option != "terminate":
        tasks.requeue(task, clock)
        return
    task.attempt, task.pid = None, None
    task.execution_info = {**task.execution_info, "result": "failure",
                           "endTime": timefmt.format_timestamp(clock.now()), "failureInfo": {
                               "category": "usererror", "code": "TaskEnded",
                               "message": "The task was terminated because its job was disabled.",
                               "details": []}}
    tasks.set_state(task, clock, "completed")


def record_pids(s: Session, started_: list[tuple[str, str, int]]) -> None:
    """The host processes of attempts that started: rows of (task key, attempt, pid), in one statement for all
    (executemany). A task whose attempt changed meanwhile is left alone; each changed row's version moves on, as
    an ORM write would. Recovery after a restart finds a live attempt by its pid first."""
    if not started_:
        return
    table = tasks.TASKS
    stmt = (update(table).where(table.c.key == bindparam("b_key"), table.c.attempt == bindparam("b_attempt"))
            .values(version=table.c.version + 1, pid=bindparam("b_pid")))
    s.execute(stmt, [{"b_key": key, "b_attempt": attempt, "b_pid": pid} for key, attempt, pid in started_])


def started(task: models.Task, clock: Clock, pid: int | None, at: str) -> None:
    """The attempt's process (or its file downloads) began at ``at``: the task runs."""
    task.pid = pid
    # Running includes downloading resource files (startTime is when that began).
    tasks.set_state(task, clock, "running")
    task.execution_info = {**task.execution_info, "startTime": at}
