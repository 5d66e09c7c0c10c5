"""Job rules: creation, updates, state changes (disable/enable/terminate/delete) and completion."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, etags, timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import job_manager, jobtasks
from shoal.domain.batch.pools import bad_value, missing
from shoal.store import models

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SPEC_FIELDS = ("displayName", "poolInfo", "priority", "constraints", "onAllTasksComplete", "onTaskFailure",
               "usesTaskDependencies", "commonEnvironmentSettings", "metadata", "jobPreparationTask",
               "jobReleaseTask", "jobManagerTask", "maxParallelTasks", "allowTaskPreemption", "networkConfiguration")
_TRANSITIONS = {
    "active": {"disabling", "terminating", "deleting", "completed"},
    "disabling": {"disabled", "deleting", "terminating"},
    "disabled": {"enabling", "terminating", "deleting"},
    "enabling": {"active", "deleting", "terminating"},
    "terminating": {"completed", "deleting"},
    "completed": {"deleting"},
    "deleting": set(),
}


def job_key(account_key: str, job_id: str) -> str:
    return f"{account_key}/{job_id.lower()}"


def set_state(job: models.Job, clock: Clock, state: str) -> None:
    """The one place a job's state changes."""
    if state == job.state:
        return
    if state not in _TRANSITIONS[job.state]:
        refused = errors.JobStateConflict if job.state != "completed" else errors.JobCompleted
        raise refused(f"The job is {job.state}; it cannot become {state}.")
    now = clock.now()
    job.previous_state, job.previous_state_transition_time = job.state, job.state_transition_time
    job.state, job.state_transition_time = state, now
    if state == "completed":
        job.execution_info = {**job.execution_info, "endTime": timefmt.format_timestamp(now)}


def touch(job: models.Job, clock: Clock) -> None:
    job.etag = etags.new_etag()
    job.last_modified = clock.now()


def validate(spec: dict[str, Any]) -> None:
    pool_info = spec.get("poolInfo")
    if not isinstance(pool_info, dict) or not (pool_info.get("poolId") or pool_info.get("autoPoolSpecification")):
        raise missing("poolInfo")
    if not pool_info.get("poolId"):
        raise bad_value("poolInfo.autoPoolSpecification", "autoPool", "auto pools are not supported by Shoal; "
                        "create a pool and name it in poolInfo.poolId")
    if spec.get("networkConfiguration"):
        # Refused rather than stored and ignored: the job's tasks would not run on the subnet it names.
        raise bad_value("networkConfiguration", "networkConfiguration", "a job's own subnet (dynamic virtual network "
                        "assignment) is not supported by Shoal; put the pool in the subnet with its "
                        "networkConfiguration.subnetId")
    parallel = spec.get("maxParallelTasks", -1)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or not (parallel == -1 or parallel > 0):
        raise bad_value("maxParallelTasks", parallel, "-1 (no limit) or a positive integer")
    priority = spec.get("priority", 0)
    if not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise bad_value("priority", priority, "an integer between -1000 and 1000")
    for key, allowed in (("onAllTasksComplete", ("noaction", "terminatejob")),
                         ("onTaskFailure", ("noaction", "performexitoptionsjobaction"))):
        if key in spec and str(spec[key]).lower() not in allowed:
            raise bad_value(key, spec[key], " or ".join(allowed))
    constraints = spec.get("constraints") or {}
    if "maxWallClockTime" in constraints:
        try:
            timefmt.parse_duration(str(constraints["maxWallClockTime"]))
        except timefmt.TimeFormatError as exc:
            raise bad_value("constraints.maxWallClockTime", constraints["maxWallClockTime"], str(exc)) from exc
    jobtasks.validate(spec)


def create(s: Session, clock: Clock, account_key: str, body: dict[str, Any]) -> models.Job:
    job_id = str(body.get("id") or "")
    if not job_id:
        raise missing("id")
    if not _ID.match(job_id):
        raise bad_value("id", job_id, "1-64 letters, digits, hyphens and underscores")
    return make(s, clock, account_key, job_id, checked_spec(body))


def checked_spec(body: dict[str, Any]) -> dict[str, Any]:
    """The job's specification from a request body (a job's, or a job schedule's ``jobSpecification``)."""
    spec = {k: body[k] for k in SPEC_FIELDS if k in body}
    for key in ("onAllTasksComplete", "onTaskFailure"):
        if key in spec:
            spec[key] = str(spec[key]).lower()
    validate(spec)
    job_manager.validate(spec)
    return spec


def make(s: Session, clock: Clock, account_key: str, job_id: str, spec: dict[str, Any]) -> models.Job:
    """A new active job of a checked specification (a user's job, or one a job schedule makes)."""
    key = job_key(account_key, job_id)
    if s.get(models.Job, key) is not None:
        raise errors.JobExists("The specified job already exists.")
    now = clock.now()
    job = models.Job(key=key, account_key=account_key, job_id=job_id, pool_id=str(spec["poolInfo"]["poolId"]).lower(),
                     priority=int(spec.get("priority", 0)), spec=spec, state="active", state_transition_time=now,
                     execution_info={"startTime": timefmt.format_timestamp(now),
                                     "poolId": spec["poolInfo"]["poolId"]},
                     etag=etags.new_etag(), created_at=now, last_modified=now)
    s.add(job)
    job_manager.add_task(s, clock, job)  # with the job, so that it is the job's first task
    return job


def get(s: Session, account_key: str, job_id: str) -> models.Job:
    job = s.get(models.Job, job_key(account_key, job_id))
    if job is None:
        raise errors.JobNotFound("The specified job does not exist.")
    return job


def list_jobs(s: Session, account_key: str) -> list[models.Job]:
    return list(s.scalars(select(models.Job).where(models.Job.account_key == account_key).order_by(models.Job.key)))


def update(job: models.Job, clock: Clock, body: dict[str, Any], *, replace: bool) -> None:
    """PATCH changes given fields; PUT (replace) resets priority, constraints and metadata when absent."""
    if job.state in ("completed", "deleting", "terminating"):
        refused = errors.JobCompleted if job.state == "completed" else errors.JobBeingDeleted
        raise refused(f"The job is {job.state} and cannot be changed.")
    spec = dict(job.spec)
    fields = ("priority", "constraints", "poolInfo", "metadata", "onAllTasksComplete", "maxParallelTasks",
              "allowTaskPreemption")
    if replace:
        if "poolInfo" not in body:
            raise missing("poolInfo")
        for key in ("priority", "constraints", "metadata", "onAllTasksComplete"):
            spec.pop(key, None)
    for key in fields:
        if key in body:
            spec[key] = str(body[key]).lower() if key == "onAllTasksComplete" else body[key]
    validate(spec)
    job.spec = spec
    job.priority = int(spec.get("priority", 0))
    job.pool_id = str(spec["poolInfo"]["poolId"]).lower()
    touch(job, clock)


def terminate(job: models.Job, clock: Clock, reason: str | None) -> None:
    if job.state == "completed":
        raise errors.JobCompleted("The specified job is already in a completed state.")
    set_state(job, clock, "terminating")
    job.execution_info = {**job.execution_info, "terminateReason": reason or "UserTerminate"}
    touch(job, clock)


def disable(job: models.Job, clock: Clock, option: str) -> None:
    """``disable`` with ``disableTasks`` requeue (running tasks go back to the queue), terminate or wait."""
    if option not in ("requeue", "terminate", "wait"):
        raise errors.InvalidPropertyValue("disableTasks must be requeue, terminate or wait.",
                                          values={"PropertyName": "disableTasks"})
    set_state(job, clock, "disabling")
    job.execution_info = {**job.execution_info, "disableTasks": option}


def render(job: models.Job, url: str) -> dict[str, Any]:
    fmt = timefmt.format_timestamp

    def ts(value: datetime | None) -> str | None:
        return fmt(value) if value else None

    body: dict[str, Any] = {
        "id": job.job_id, "url": url, "eTag": job.etag, "lastModified": fmt(job.last_modified),
        "creationTime": fmt(job.created_at), "state": job.state,
        "stateTransitionTime": fmt(job.state_transition_time),
        "priority": job.priority, "usesTaskDependencies": bool(job.spec.get("usesTaskDependencies", False)),
        "onAllTasksComplete": job.spec.get("onAllTasksComplete", "noaction"),
        "onTaskFailure": job.spec.get("onTaskFailure", "noaction"),
        "constraints": job.spec.get("constraints") or {"maxWallClockTime": timefmt.INFINITE_DURATION_TEXT,
                                                       "maxTaskRetryCount": 0},
        "executionInfo": job.execution_info,
        **{k: v for k, v in job.spec.items() if k not in ("onAllTasksComplete", "onTaskFailure", "constraints",
                                                           "priority", "usesTaskDependencies")},
    }
    if job.previous_state:
        body["previousState"] = job.previous_state
        body["previousStateTransitionTime"] = ts(job.previous_state_transition_time)
    return body
