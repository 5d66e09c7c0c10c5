"""When a job schedule makes its jobs: pure rules on its ``schedule`` and the service clock (no database).

Azure's semantics, as the Batch reference states them:

- the first run is due at ``doNotRunUntil`` (or at once, when it is absent); a recurring schedule's runs are
  ``recurrenceInterval`` apart, counted from the times they were due (not from when their jobs were made);
- a schedule has at most one active job: a run that falls due while the previous job is still open waits for it,
  within the run's ``startWindow``; a run whose window passes without a job is lost, and the next run is the
  next recurrence. A window longer than the interval is the same as an infinite one: a run is never carried into
  the next interval, so the window is at most the interval;
- no job is made after ``doNotRunAfter``; the schedule completes as soon as no run is left and none of its jobs
  is open (a schedule without recurrence completes once its one job is done).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shoal.core import errors, timefmt

MINIMUM = timedelta(minutes=1)  # startWindow and recurrenceInterval: Azure refuses anything shorter
FIELDS = ("doNotRunUntil", "doNotRunAfter", "startWindow", "recurrenceInterval")


@dataclass(frozen=True)
class Schedule:
    do_not_run_until: datetime | None = None
    do_not_run_after: datetime | None = None
    start_window: timedelta | None = None
    recurrence: timedelta | None = None

    @property
    def window(self) -> timedelta | None:
        """How long after a run falls due its job may still be made (None: no limit)."""
        if self.recurrence is None:
            return self.start_window
        return min(self.start_window, self.recurrence) if self.start_window is not None else self.recurrence


def _bad(prop: str, value: Any, why: str) -> errors.AzureError:
    return errors.InvalidPropertyValue(
        f"The value provided for one of the properties in the request body is invalid: {prop} ({why}).",
        values={"PropertyName": prop, "PropertyValue": str(value)[:200], "Reason": why})


def parse(wire: dict[str, Any] | None, where: str = "schedule") -> Schedule:
    """The schedule of a request body; InvalidPropertyValue naming the property it cannot honour."""
    wire = wire or {}
    for key in wire:
        if key not in FIELDS:
            raise _bad(f"{where}.{key}", wire[key], "not a property of a job schedule's schedule")
    times: dict[str, datetime | None] = {}
    for key in ("doNotRunUntil", "doNotRunAfter"):
        value = wire.get(key)
        try:
            times[key] = timefmt.parse_timestamp(str(value)) if value is not None else None
        except (timefmt.TimeFormatError, ValueError) as exc:
            raise _bad(f"{where}.{key}", value, "an ISO 8601 date and time") from exc
    spans: dict[str, timedelta | None] = {}
    for key in ("startWindow", "recurrenceInterval"):
        value = wire.get(key)
        try:
            span = timefmt.parse_duration(str(value)) if value is not None else None
        except (timefmt.TimeFormatError, ValueError) as exc:
            raise _bad(f"{where}.{key}", value, "an ISO 8601 duration") from exc
        if span is not None and span < MINIMUM:
            raise _bad(f"{where}.{key}", value, "at least 1 minute")
        spans[key] = None if span is not None and span >= timefmt.INFINITE_DURATION else span
    return Schedule(times["doNotRunUntil"], times["doNotRunAfter"], spans["startWindow"], spans["recurrenceInterval"])


def render(schedule: Schedule) -> dict[str, Any]:
    """The schedule as the API shows it (canonical timestamps and durations; absent values left out)."""
    out: dict[str, Any] = {}
    if schedule.do_not_run_until is not None:
        out["doNotRunUntil"] = timefmt.format_timestamp(schedule.do_not_run_until)
    if schedule.do_not_run_after is not None:
        out["doNotRunAfter"] = timefmt.format_timestamp(schedule.do_not_run_after)
    if schedule.start_window is not None:
        out["startWindow"] = timefmt.format_duration(schedule.start_window)
    if schedule.recurrence is not None:
        out["recurrenceInterval"] = timefmt.format_duration(schedule.recurrence)
    return out


def first_run(schedule: Schedule, now: datetime) -> datetime:
    """When the first job of a schedule made (or whose schedule was replaced) at ``now`` is due."""
    return schedule.do_not_run_until if schedule.do_not_run_until is not None else now


@dataclass(frozen=True)
class Step:
    """What an active schedule does now: make its next job or not, the run due next (None: no run is left),
    and whether it completes."""

    due: datetime | None
    create_job: bool = False
    complete: bool = False


def _after_miss(schedule: Schedule, due: datetime, now: datetime) -> datetime | None:
    """The next run whose window is still open after the run due at ``due`` was lost (None: no recurrence)."""
    if schedule.recurrence is None:
        return None
    skipped = (now - due) // schedule.recurrence
    run = due + skipped * schedule.recurrence
    window = schedule.window
    if window is not None and run + window <= now:
        run += schedule.recurrence
    return run


def step(schedule: Schedule, due: datetime | None, open_job: bool, now: datetime) -> Step:
    """The decision for an active schedule whose next run is ``due``, with or without an open job, at ``now``."""
    for _ in range(3):  # a lost run moves ``due`` on once; the loop bound only guards the arithmetic
        last = schedule.do_not_run_after
        if due is None or (last is not None and max(due, now) > last):
            return Step(None, complete=not open_job)
        if now < due:
            return Step(due)
        window = schedule.window
        if window is not None and now >= due + window:  # this run's opportunity is lost
            due = _after_miss(schedule, due, now)
            continue
        if open_job:
            return Step(due)  # the previous job is still open: this run waits for it, within its window
        following = due + schedule.recurrence if schedule.recurrence is not None else None
        if following is not None and last is not None and following > last:
            following = None  # this is the schedule's last job
        return Step(following, create_job=True)
    return Step(due)


def job_id(schedule_id: str, number: int) -> str:
    """The id Azure gives the n-th job of a schedule (the ``:`` keeps it apart from every job id a user may
    choose)."""
    return f"{schedule_id}:job-{number}"
