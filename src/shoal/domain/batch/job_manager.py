"""Job Manager tasks (a job's ``jobManagerTask``), as the Batch service runs them.

Azure's rules (``JobManagerTask``): the task is made with the job (a job schedule's jobs included) and runs
before the job's other tasks; it is one of the job's tasks (listed, read and terminated like them, under its own
``id``); ``killJobOnCompletion`` (default true) terminates the job when the task completes, whatever its result,
with ``terminateReason`` ``JMComplete`` (other running tasks are then terminated, the release task runs);
``runExclusive`` (default true) gives it a whole node (no other task runs there while it does);
``allowLowPriorityNode`` (default true) false keeps it on dedicated nodes.

Shoal keeps these three settings in the task's spec under ``jobManager`` (not rendered: a Job Manager task
reads as any other task). It is made with the lowest sequence number of its job, so the scheduler, which takes a
job's tasks in that order, starts it first. ``authenticationTokenSettings`` (a token the task would use to call
the Batch API for its job) is refused: Shoal issues no task-scoped tokens.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.domain.batch import tasks
from shoal.domain.batch.pools import bad_value, missing
from shoal.store import models

FIELD = "jobManagerTask"
KEY = "jobManager"  # where a task's spec keeps its Job Manager settings
SETTINGS = {"killJobOnCompletion": True, "runExclusive": True, "allowLowPriorityNode": True}


def validate(spec: dict[str, Any]) -> None:
    """Check a job's ``jobManagerTask`` (400 naming the property)."""
    jm = spec.get(FIELD)
    if jm is None:
        return
    if not isinstance(jm, dict):
        raise bad_value(FIELD, jm, "an object is required")
    for name in ("id", "commandLine"):
        if not jm.get(name):
            raise missing(f"{FIELD}.{name}")
    for name in SETTINGS:
        if name in jm and not isinstance(jm[name], bool):
            raise bad_value(f"{FIELD}.{name}", jm[name], "true or false")
    if jm.get("authenticationTokenSettings"):
        raise bad_value(f"{FIELD}.authenticationTokenSettings", "authenticationTokenSettings",
                        "Shoal issues no task-scoped tokens: give the task the account's credentials in its "
                        "environment settings, or add the job's tasks from outside")


def add_task(s: Session, clock: Clock, job: models.Job) -> models.Task | None:
    """Make the job's Job Manager task (None for a job without one)."""
    jm = job.spec.get(FIELD)
    if not isinstance(jm, dict):
        return None
    body = {k: v for k, v in jm.items() if k not in SETTINGS}
    spec = tasks.validate(job, body)
    spec[KEY] = {name: bool(jm.get(name, default)) for name, default in SETTINGS.items()}
    task = tasks.new_task(job, clock, body, spec, tasks.next_seq(s))
    s.add(task)
    return task


def settings(task: models.Task) -> dict[str, bool] | None:
    """The task's Job Manager settings (None: an ordinary task)."""
    found = task.spec.get(KEY) if isinstance(task.spec, dict) else None
    return found if isinstance(found, dict) else None


def runs_exclusive(task: models.Task) -> bool:
    found = settings(task)
    return bool(found and found.get("runExclusive"))


def allows_low_priority(task: models.Task) -> bool:
    found = settings(task)
    return not found or bool(found.get("allowLowPriorityNode", True))


def kills_job(task: models.Task) -> bool:
    """The task's completion terminates its job (``killJobOnCompletion``)."""
    found = settings(task)
    return bool(found and found.get("killJobOnCompletion"))
