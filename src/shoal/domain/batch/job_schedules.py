"""Job schedules: add, update, state changes (disable/enable/terminate/delete), and the jobs they make.

Requests only record intent (a state, a new schedule); the job schedule loop (``reconcilers/job_schedules.py``)
calls :func:`advance`, which makes a schedule's next job when it is due by the service clock
(``schedule_rules.step`` decides), terminates the open job of a terminating schedule and completes it, and
deletes the jobs of a deleting schedule before the schedule itself goes.

A schedule's jobs are ``<schedule id>:job-<n>``, as Azure names them (a ``:`` no user's job id may contain), so
they are found by the prefix of their key. ``lastModified`` and the ETag follow the schedule's own data and state,
not the jobs it makes (as Azure documents).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, etags, timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import schedule_rules
from shoal.domain.batch.pools import bad_value, missing
from shoal.store import models

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FIELDS = ("id", "displayName", "schedule", "jobSpecification", "metadata")
_TRANSITIONS = {
    "active": {"disabled", "terminating", "deleting", "completed"},
    "disabled": {"active", "terminating", "deleting"},
    "terminating": {"completed", "deleting"},
    "completed": {"deleting"},
    "deleting": set(),
}
# The states the loop works on: an active schedule makes jobs; the others end with their jobs.
MOVING = ("active", "terminating", "deleting")
_OPEN_JOB_STATES = ("active", "disabling", "disabled", "enabling", "terminating")


def schedule_key(account_key: str, schedule_id: str) -> str:
    return f"{account_key}/{schedule_id.lower()}"


def _refused(js: models.JobSchedule) -> errors.AzureError:
    if js.state == "completed":
        return errors.JobScheduleCompleted("The specified job schedule is already in a completed state.")
    if js.state == "deleting":
        return errors.JobScheduleBeingDeleted("The specified job schedule has been marked for deletion and is "
                                              "being reclaimed.")
    if js.state == "terminating":
        return errors.JobScheduleBeingTerminated("The specified job schedule is being terminated.")
    return errors.JobScheduleDisabled("The specified job schedule is disabled.")


def set_state(js: models.JobSchedule, clock: Clock, state: str) -> None:
    """The one place a job schedule's state changes."""
    if state == js.state:
        return
    if state not in _TRANSITIONS[js.state]:
        raise _refused(js)
    now = clock.now()
    js.previous_state, js.previous_state_transition_time = js.state, js.state_transition_time
    js.state, js.state_transition_time = state, now
    if state == "completed":
        js.end_time, js.next_run_at = now, None
    touch(js, clock)


def touch(js: models.JobSchedule, clock: Clock) -> None:
    js.etag = etags.new_etag()
    js.last_modified = clock.now()


def _job_specification(body: Any) -> dict[str, Any]:
    """The checked job specification (the rules of a job's own body; errors name ``jobSpecification.<p>``)."""
    if not isinstance(body, dict):
        raise missing("jobSpecification")
    for key in body:
        if key not in job_rules.SPEC_FIELDS:
            raise bad_value(f"jobSpecification.{key}", body[key], "not a property of a job specification")
    try:
        return job_rules.checked_spec(body)
    except errors.AzureError as exc:
        name = exc.values.get("PropertyName")
        if name and not name.startswith("jobSpecification."):
            exc.values["PropertyName"] = f"jobSpecification.{name}"
            exc.message = exc.message.replace(f": {name}", f": jobSpecification.{name}")
            exc.args = (exc.message,)
        raise


def _checked(body: dict[str, Any]) -> tuple[schedule_rules.Schedule, dict[str, Any]]:
    for key in body:
        if key not in FIELDS:
            raise bad_value(key, body[key], "not a property of a job schedule")
    if "schedule" not in body:
        raise missing("schedule")
    if "jobSpecification" not in body:
        raise missing("jobSpecification")
    schedule = schedule_rules.parse(body["schedule"])
    spec: dict[str, Any] = {"schedule": schedule_rules.render(schedule),
                            "jobSpecification": _job_specification(body["jobSpecification"])}
    for key in ("displayName", "metadata"):
        if body.get(key) is not None:
            spec[key] = body[key]
    return schedule, spec


def _first_due(schedule: schedule_rules.Schedule, now: datetime) -> datetime | None:
    first = schedule_rules.first_run(schedule, now)
    last = schedule.do_not_run_after
    return None if last is not None and first > last else first


def create(s: Session, clock: Clock, account_key: str, body: dict[str, Any]) -> models.JobSchedule:
    schedule_id = str(body.get("id") or "")
    if not schedule_id:
        raise missing("id")
    if not _ID.match(schedule_id):
        raise bad_value("id", schedule_id, "1-64 letters, digits, hyphens and underscores")
    schedule, spec = _checked(body)
    key = schedule_key(account_key, schedule_id)
    if s.get(models.JobSchedule, key) is not None:
        raise errors.JobScheduleExists("The specified job schedule already exists.")
    now = clock.now()
    js = models.JobSchedule(key=key, account_key=account_key, schedule_id=schedule_id, spec=spec, state="active",
                            state_transition_time=now, next_run_at=_first_due(schedule, now), jobs_made=0,
                            etag=etags.new_etag(), created_at=now, last_modified=now)
    s.add(js)
    return js


def find(s: Session, account_key: str, schedule_id: str) -> models.JobSchedule | None:
    return s.get(models.JobSchedule, schedule_key(account_key, schedule_id))


def get(s: Session, account_key: str, schedule_id: str) -> models.JobSchedule:
    js = find(s, account_key, schedule_id)
    if js is None:
        raise errors.JobScheduleNotFound("The specified job schedule does not exist.")
    return js


def list_schedules(s: Session, account_key: str) -> list[models.JobSchedule]:
    return list(s.scalars(select(models.JobSchedule).where(models.JobSchedule.account_key == account_key)
                          .order_by(models.JobSchedule.key)))


def jobs_of(s: Session, js: models.JobSchedule) -> list[models.Job]:
    """The schedule's jobs that still exist, oldest first."""
    rows = s.scalars(select(models.Job).where(models.Job.account_key == js.account_key,
                                              models.Job.key.startswith(f"{js.key}:job-", autoescape=True)))
    return sorted(rows, key=lambda j: (j.created_at, j.key))


UPDATE_FIELDS = ("schedule", "jobSpecification", "metadata")


def update(js: models.JobSchedule, clock: Clock, body: dict[str, Any], *, replace: bool) -> None:
    """PATCH replaces the elements it names; PUT (replace) replaces all three (its metadata left out is cleared).

    A new schedule applies from now: before the first job its first run is worked out again; after it, a
    recurring schedule's next run is at ``doNotRunUntil`` if that is still ahead, else one interval from now, and
    a schedule without recurrence has no run left. A job already made keeps the specification it was made with.
    """
    if js.state in ("completed", "deleting", "terminating"):
        raise _refused(js)
    for key in body:
        if key not in UPDATE_FIELDS:
            raise bad_value(key, body[key], "an update changes only schedule, jobSpecification and metadata")
    if replace:
        for key in ("schedule", "jobSpecification"):
            if body.get(key) is None:
                raise missing(key)
    spec = dict(js.spec)
    if replace:
        spec.pop("metadata", None)
    schedule = None
    if body.get("schedule") is not None:
        schedule = schedule_rules.parse(body["schedule"])
        spec["schedule"] = schedule_rules.render(schedule)
    if body.get("jobSpecification") is not None:
        spec["jobSpecification"] = _job_specification(body["jobSpecification"])
    if body.get("metadata") is not None:
        spec["metadata"] = body["metadata"]
    js.spec = spec
    if schedule is not None:
        js.next_run_at = _next_after_change(schedule, js.jobs_made, clock.now())
    touch(js, clock)


def _next_after_change(schedule: schedule_rules.Schedule, jobs_made: int, now: datetime) -> datetime | None:
    if jobs_made == 0:
        return _first_due(schedule, now)
    if schedule.recurrence is None:
        return None
    start = schedule.do_not_run_until
    following = start if start is not None and start > now else now + schedule.recurrence
    last = schedule.do_not_run_after
    return None if last is not None and following > last else following


def disable(js: models.JobSchedule, clock: Clock) -> None:
    set_state(js, clock, "disabled")


def enable(js: models.JobSchedule, clock: Clock) -> None:
    set_state(js, clock, "active")


def terminate(js: models.JobSchedule, clock: Clock) -> None:
    if js.state in ("completed", "deleting"):
        raise _refused(js)
    set_state(js, clock, "terminating")


def delete(js: models.JobSchedule, clock: Clock) -> None:
    set_state(js, clock, "deleting")


# --- the loop's work ---------------------------------------------------------------------------------------------
def due(s: Session, now: datetime) -> list[str]:
    """Keys of the schedules the loop has work on: terminating and deleting ones, and active ones whose next run
    is due or that have no run left (they complete once their job is done)."""
    table = models.JobSchedule
    return list(s.scalars(select(table.key).where(
        table.state.in_(MOVING),
        (table.state != "active") | table.next_run_at.is_(None) | (table.next_run_at <= now))))


def advance(s: Session, clock: Clock, key: str) -> bool:
    """One step of one schedule (in the loop's write transaction). True when it made, ended or deleted jobs."""
    js = s.get(models.JobSchedule, key)
    if js is None or js.state not in MOVING:
        return False
    jobs = jobs_of(s, js)
    open_jobs = [j for j in jobs if j.state in _OPEN_JOB_STATES]
    if js.state == "deleting":
        for job in jobs:
            if job.state != "deleting":
                job_rules.set_state(job, clock, "deleting")
                job_rules.touch(job, clock)
        if not jobs:
            s.delete(js)
        return True
    if js.state == "terminating":
        for job in open_jobs:
            if job.state != "terminating":
                job_rules.terminate(job, clock, "UserTerminate")
        if not open_jobs:
            set_state(js, clock, "completed")
        return True
    now = clock.now()
    schedule = schedule_rules.parse(js.spec.get("schedule"))
    decision = schedule_rules.step(schedule, js.next_run_at, bool(open_jobs), now)
    made = False
    if decision.create_job:
        number = js.jobs_made + 1
        job = job_rules.make(s, clock, js.account_key, schedule_rules.job_id(js.schedule_id, number),
                             dict(js.spec["jobSpecification"]))
        js.jobs_made, js.recent_job_id, made = number, job.job_id, True
    if decision.due != js.next_run_at:
        js.next_run_at = decision.due
    if decision.complete:
        set_state(js, clock, "completed")
    return made or decision.complete


def render(js: models.JobSchedule, url: str, job_url: Any) -> dict[str, Any]:
    """The schedule on the wire; ``job_url(job_id)`` is the URL of one of its jobs."""
    fmt = timefmt.format_timestamp
    info: dict[str, Any] = {}
    if js.state == "active" and js.next_run_at is not None:
        info["nextRunTime"] = fmt(js.next_run_at)
    if js.recent_job_id:
        info["recentJob"] = {"id": js.recent_job_id, "url": job_url(js.recent_job_id)}
    if js.state == "completed" and js.end_time is not None:
        info["endTime"] = fmt(js.end_time)
    body: dict[str, Any] = {
        "id": js.schedule_id, "url": url, "eTag": js.etag, "lastModified": fmt(js.last_modified),
        "creationTime": fmt(js.created_at), "state": js.state, "stateTransitionTime": fmt(js.state_transition_time),
        "schedule": js.spec.get("schedule", {}), "jobSpecification": _render_spec(js.spec["jobSpecification"]),
        "executionInfo": info,
    }
    if js.previous_state:
        body["previousState"] = js.previous_state
        body["previousStateTransitionTime"] = fmt(js.previous_state_transition_time or js.state_transition_time)
    for key in ("displayName", "metadata"):
        if key in js.spec:
            body[key] = js.spec[key]
    return body


def _render_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The job specification with the defaults Azure fills in."""
    return {"priority": 0, "usesTaskDependencies": False, "onAllTasksComplete": "noaction",
            "onTaskFailure": "noaction", **spec}
