"""Job schedule rules (``domain/batch/schedule_rules.py``: next run, start window, doNotRunAfter) as pure
functions, and the job schedule loop on SQLite and PostgreSQL with a manual clock (jobs made when due, waits for
the open job, terminate and delete with the jobs, two replicas never make one job twice)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness import scratch_database
from shoal.core import errors
from shoal.core.clock import Clock
from shoal.domain.batch import job_schedules
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch.schedule_rules import Schedule, Step, job_id, parse, render, step
from shoal.reconcilers.base import LoopClaim
from shoal.reconcilers.job_schedules import JobScheduleLoop
from shoal.store.db import Database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
EVERY_5 = Schedule(recurrence=5 * MIN)


def test_parse_reads_azure_values_and_renders_them_canonically() -> None:
    schedule = parse({"doNotRunUntil": "2026-03-01T12:00:00.0000000Z", "doNotRunAfter": "2026-03-02T00:00:00Z",
                      "startWindow": "PT02M00S", "recurrenceInterval": "PT1H"})
    assert schedule == Schedule(T0, datetime(2026, 3, 2, tzinfo=UTC), 2 * MIN, timedelta(hours=1))
    assert render(schedule) == {"doNotRunUntil": "2026-03-01T12:00:00.0000000Z", "doNotRunAfter":
                                "2026-03-02T00:00:00.0000000Z", "startWindow": "PT2M", "recurrenceInterval": "PT1H"}
    assert parse({"startWindow": "P10675199DT2H48M5.4775807S"}).start_window is None  # the wire's infinity


@pytest.mark.parametrize(("wire", "name"), [
    ({"recurrenceInterval": "PT30S"}, "schedule.recurrenceInterval"),
    ({"startWindow": "PT59S"}, "schedule.startWindow"),
    ({"doNotRunUntil": "tomorrow"}, "schedule.doNotRunUntil"),
    ({"everyOtherTuesday": True}, "schedule.everyOtherTuesday"),
])
def test_parse_refuses_what_azure_refuses_naming_the_property(wire: dict[str, Any], name: str) -> None:
    with pytest.raises(errors.InvalidPropertyValue) as info:
        parse(wire)
    assert info.value.values["PropertyName"] == name


def test_a_recurring_schedule_runs_at_each_interval_counted_from_when_runs_fall_due() -> None:
    assert step(EVERY_5, T0, False, T0 - MIN) == Step(T0)  # not yet
    assert step(EVERY_5, T0, False, T0 + 3 * MIN) == Step(T0 + 5 * MIN, create_job=True)  # late, next one on time


def test_a_run_waits_for_the_open_job_and_is_lost_when_its_window_passes() -> None:
    windowed = Schedule(start_window=2 * MIN, recurrence=5 * MIN)
    assert step(windowed, T0, True, T0 + MIN) == Step(T0)  # waits for the previous job
    assert step(windowed, T0, True, T0 + 3 * MIN) == Step(T0 + 5 * MIN)  # window gone: the next recurrence
    assert step(windowed, T0, False, T0 + 11 * MIN) == Step(T0 + 15 * MIN, create_job=True)  # T0+10 still open
    assert step(windowed, T0, False, T0 + 13 * MIN) == Step(T0 + 15 * MIN)  # T0+10's window passed too
    # Without a startWindow, a run waits at most its interval (it is never carried into the next one).
    assert step(EVERY_5, T0, True, T0 + 6 * MIN) == Step(T0 + 5 * MIN)
    assert step(EVERY_5, T0 + 5 * MIN, False, T0 + 6 * MIN) == Step(T0 + 10 * MIN, create_job=True)


def test_do_not_run_after_ends_the_schedule_once_its_job_is_done() -> None:
    ends = Schedule(do_not_run_after=T0 + 7 * MIN, recurrence=5 * MIN)
    assert step(ends, T0 + 5 * MIN, False, T0 + 5 * MIN) == Step(None, create_job=True)  # T0+10 is past the end
    assert step(ends, None, True, T0 + 8 * MIN) == Step(None)  # the last job is still open
    assert step(ends, None, False, T0 + 8 * MIN) == Step(None, complete=True)
    assert step(ends, T0 + 5 * MIN, False, T0 + 8 * MIN) == Step(None, complete=True)  # too late for that run


def test_a_schedule_without_recurrence_makes_one_job_within_its_window() -> None:
    once = Schedule(do_not_run_until=T0, start_window=2 * MIN)
    assert step(once, T0, False, T0 + MIN) == Step(None, create_job=True)
    assert step(once, T0, False, T0 + 3 * MIN) == Step(None, complete=True)  # missed: nothing will ever run
    assert step(Schedule(), T0, False, T0 + timedelta(days=30)) == Step(None, create_job=True)  # no window: late


def test_jobs_are_named_as_azure_names_them() -> None:
    assert job_id("nightly", 3) == "nightly:job-3"


# --- the loop, on a database ------------------------------------------------------------------------------------
class ManualClock(Clock):
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def db(database_url: str | None) -> Iterator[Database]:
    with scratch_database(database_url) as database:
        yield database


BODY = {"id": "every5", "schedule": {"recurrenceInterval": "PT5M"},
        "jobSpecification": {"poolInfo": {"poolId": "work"}, "onAllTasksComplete": "terminateJob"}}


def make_schedule(db: Database, clock: Clock, body: dict[str, Any] = BODY) -> None:
    with db.write() as s:
        job_schedules.create(s, clock, "acct", body)


def job_ids(db: Database) -> list[str]:
    with db.read() as s:
        return [j.job_id for j in job_schedules.jobs_of(s, job_schedules.get(s, "acct", "every5"))]


def complete_job(db: Database, clock: Clock, job_id: str) -> None:
    with db.write() as s:
        job = job_rules.get(s, "acct", job_id)
        job_rules.set_state(job, clock, "terminating")
        job_rules.set_state(job, clock, "completed")


def test_the_loop_makes_a_job_at_each_recurrence_once_the_previous_one_completed(db: Database) -> None:
    clock = ManualClock()
    loop = JobScheduleLoop(db, clock)
    make_schedule(db, clock)
    loop.run_once()
    assert job_ids(db) == ["every5:job-1"]
    with db.read() as s:
        job = job_rules.get(s, "acct", "every5:job-1")
        assert job.spec["onAllTasksComplete"] == "terminatejob" and job.pool_id == "work"
        js = job_schedules.get(s, "acct", "every5")
        assert js.next_run_at == T0 + 5 * timedelta(minutes=1) and js.recent_job_id == "every5:job-1"
    clock.at += timedelta(minutes=5, seconds=5)
    loop.run_once()
    assert job_ids(db) == ["every5:job-1"]  # job-1 is still open: the run waits
    complete_job(db, clock, "every5:job-1")
    loop.run_once()
    assert job_ids(db) == ["every5:job-1", "every5:job-2"]
    complete_job(db, clock, "every5:job-2")
    clock.at += timedelta(minutes=5)
    loop.run_once()
    assert job_ids(db) == ["every5:job-1", "every5:job-2", "every5:job-3"]


def test_terminate_ends_the_open_job_and_delete_removes_every_job(db: Database) -> None:
    clock = ManualClock()
    loop = JobScheduleLoop(db, clock)
    make_schedule(db, clock)
    loop.run_once()
    with db.write() as s:
        js = job_schedules.get(s, "acct", "every5")
        job_schedules.terminate(js, clock)
    loop.run_once()
    with db.read() as s:
        assert job_rules.get(s, "acct", "every5:job-1").state == "terminating"
        assert job_schedules.get(s, "acct", "every5").state == "terminating"
    with db.write() as s:  # the task scheduler completes the terminating job
        job_rules.set_state(job_rules.get(s, "acct", "every5:job-1"), clock, "completed")
    loop.run_once()
    with db.write() as s:
        js = job_schedules.get(s, "acct", "every5")
        assert js.state == "completed" and js.end_time == clock.at and js.next_run_at is None
        with pytest.raises(errors.JobScheduleCompleted):
            job_schedules.disable(js, clock)
        job_schedules.delete(js, clock)
    loop.run_once()
    with db.write() as s:
        job = job_rules.get(s, "acct", "every5:job-1")
        assert job.state == "deleting"
        s.delete(job)  # as the task scheduler does once nothing of it runs
    loop.run_once()
    with db.read() as s:
        assert job_schedules.find(s, "acct", "every5") is None


def test_two_replicas_never_make_one_job_twice(db: Database) -> None:
    clock = ManualClock()
    make_schedule(db, clock)
    first = JobScheduleLoop(db, clock, claim=LoopClaim(db, clock, "jobschedules", owner="aaaaaaaa"))
    second = JobScheduleLoop(db, clock, claim=LoopClaim(db, clock, "jobschedules", owner="bbbbbbbb"))
    for _ in range(3):
        first.run_once()
        second.run_once()
    assert job_ids(db) == ["every5:job-1"]
    assert second.claim is not None and second.claim.token is None  # the first holds the loop
    clock.at += timedelta(minutes=10)  # the holder died: its claim lapsed, the other takes the loop over
    complete_job(db, clock, "every5:job-1")
    second.run_once()
    assert job_ids(db) == ["every5:job-1", "every5:job-2"]
