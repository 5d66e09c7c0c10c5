"""How a job moves on by itself: wall-clock expiry, its tasks' exit actions, completion when all its tasks are
complete, and the end of the transitions a request started (terminating, deleting, disabling, enabling).

Requests only start a transition (:mod:`shoal.domain.batch.jobs`); the scheduler ends it once the job's running
attempts are over (and its release tasks have run), through :func:`settle`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from shoal.core import timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import exits, job_manager, jobtasks, tasks
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import nodes as node_rules
from shoal.store import models

MOVING = ("terminating", "deleting", "disabling", "enabling")
_MOVING_JOBS = select(models.Job.key).where(models.Job.state.in_(MOVING))  # built once: asked at every pass


def moving(s: Session) -> list[str]:
    """The keys of the jobs in a transition the scheduler drives to its end."""
    return list(s.scalars(_MOVING_JOBS))


def wall_clock_expired(spec: dict[str, Any], created_at: datetime, now: datetime) -> bool:
    """Whether a job ran longer than its constraints.maxWallClockTime (measured from creation)."""
    text = (spec.get("constraints") or {}).get("maxWallClockTime")
    if not text:
        return False
    try:
        return bool(created_at + timefmt.parse_duration(str(text)) <= now)
    except OverflowError:  # "unlimited" (the wire's maximum duration)
        return False


_EXPIRABLE = ("active", "disabled")


def expired(s: Session, now: datetime) -> list[str]:
    """Keys of the active and disabled jobs past their maxWallClockTime (reads three columns, no job rows)."""
    return [key for key, spec, created in s.execute(select(models.Job.key, models.Job.spec, models.Job.created_at)
                                                    .where(models.Job.state.in_(_EXPIRABLE))).all()
            if wall_clock_expired(spec or {}, created, now)]


def expire(s: Session, clock: Clock, keys: list[str]) -> None:
    """Terminate these jobs, if they are still active or disabled and past their maxWallClockTime."""
    now = clock.now()
    for key in keys:
        job = s.get(models.Job, key)
        if job is not None and job.state in _EXPIRABLE and wall_clock_expired(job.spec, job.created_at, now):
            job_rules.terminate(job, clock, "MaxWallClockTimeExpiry")


def apply_exit_action(job: models.Job | None, task: models.Task, clock: Clock) -> None:
    """What the completed task's exit options ask of its job (only jobs that perform exit-option actions)."""
    if job is None or job.state != "active":
        return
    action = exits.job_action(task.spec, job.spec, task.execution_info)
    if action == "terminate":
        job_rules.terminate(job, clock, "TaskFailed")
    elif action == "disable":
        job_rules.disable(job, clock, "requeue")
        job_rules.touch(job, clock)


def end_job_manager(job: models.Job | None, task: models.Task, clock: Clock) -> None:
    """``killJobOnCompletion``: a Job Manager task that completes, whatever its result, terminates its job."""
    if job is not None and job.state in ("active", "disabling", "disabled", "enabling") and \
            job_manager.kills_job(task):
        job_rules.terminate(job, clock, "JMComplete")


def completes_with_its_tasks(job: models.Job | None) -> bool:
    return job is not None and job.state == "active" and job.spec.get("onAllTasksComplete") == "terminatejob"


def complete_if_done(s: Session, job: models.Job | None, clock: Clock) -> None:
    """``onAllTasksComplete: terminatejob``: the job terminates once none of its tasks is open (the session's
    changes are flushed first, so the tasks just completed count)."""
    if job is None or not completes_with_its_tasks(job):
        return
    s.flush()
    if s.scalar(select(exists().where(models.Task.job_key == job.key, models.Task.state != "completed"))):
        return
    job.execution_info = {**job.execution_info, "terminateReason": "AllTasksComplete"}
    job_rules.set_state(job, clock, "terminating")
    if jobtasks.release(job.spec) is None:  # else the job completes once its release tasks have run
        job_rules.set_state(job, clock, "completed")
    job_rules.touch(job, clock)


def settle(s: Session, job: models.Job, clock: Clock) -> list[tuple[str, str]]:
    """End the job's transition once nothing of it runs any more: a deleting job goes (with its tasks and its
    preparation/release rows), a terminating one completes (its open tasks with it), disabling becomes
    disabled and enabling active. Returns the (machine, path) of job directories to remove from its nodes."""
    leftovers: list[tuple[str, str]] = []
    if job.state == "deleting":
        node_keys: set[str | None] = set(s.scalars(select(models.Task.node_key).where(
            models.Task.job_key == job.key).distinct()))
        node_keys.update(s.scalars(select(models.JobNodeTask.node_key).where(models.JobNodeTask.job_key == job.key)))
        s.execute(delete(models.Task).where(models.Task.job_key == job.key))
        s.execute(delete(models.JobNodeTask).where(models.JobNodeTask.job_key == job.key))
        # A deleted job's directories go from every node it ran on (as in Azure).
        wanted = sorted(k for k in node_keys if k)
        if wanted:
            for machine in s.scalars(select(models.Node.machine_id).where(models.Node.key.in_(wanted))):
                leftovers.append((machine, f"{node_rules.NODE_ROOT}/workitems/{job.job_id}"))
        s.delete(job)
    elif job.state == "terminating":
        now = clock.now()
        for task in tasks.list_tasks(s, job):
            if task.state != "completed":
                tasks.set_state(task, clock, "completed")
                task.execution_info = {**task.execution_info, "endTime": timefmt.format_timestamp(now)}
        job_rules.set_state(job, clock, "completed")
        job_rules.touch(job, clock)
    elif job.state == "disabling":
        job_rules.set_state(job, clock, "disabled")
    elif job.state == "enabling":
        job_rules.set_state(job, clock, "active")
    return leftovers


def attempts_of(s: Session, job_key: str) -> list[tuple[str, str | None]]:
    """(task key, node key) of the job's tasks that have an attempt (running or about to)."""
    return [(k, n) for k, n in s.execute(select(models.Task.key, models.Task.node_key).where(
        models.Task.job_key == job_key, models.Task.attempt.is_not(None))).all()]

