"""The claim every loop takes on its rows (``reconcilers/base.py`` Lease), on SQLite and PostgreSQL: one holder
at a time, every write back checked against the token and renewing it, a lapsed claim taken over and the old
holder's writes refused; the same for the claim of a loop that runs on one server at a time (``LoopClaim``)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from harness import scratch_database
from shoal.core.clock import Clock
from shoal.reconcilers.base import Lease, LeasedDatabase, LeaseLost, LoopClaim
from shoal.store import models
from shoal.store.db import Database


class ManualClock(Clock):
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def db(database_url: str | None) -> Iterator[Database]:
    with scratch_database(database_url) as database:
        yield database


def pool(db: Database, clock: Clock) -> str:
    now = clock.now()
    with db.write() as s:
        s.add(models.Pool(key="acct/p1", account_key="acct", pool_id="p1", spec={}, content={}, state="active",
                          state_transition_time=now, allocation_state="steady", allocation_state_transition_time=now,
                          resize_errors=[], autoscale={}, etag="e", created_at=now, last_modified=now))
    return "acct/p1"


def test_one_holder_writes_renew_and_a_lapsed_claim_is_taken_over(db: Database) -> None:
    clock = ManualClock()
    key = pool(db, clock)
    lease = Lease(db, clock, models.Pool, timedelta(seconds=10))
    first = lease.take(key)
    assert first is not None and lease.take(key) is None  # held: a second pass gets nothing

    clock.at += timedelta(seconds=8)
    with lease.write(key, first) as s:  # a write of the pass renews the claim
        s.get(models.Pool, key).target_dedicated = 1
    clock.at += timedelta(seconds=8)  # 16 s after the take, 8 after the renewal: still held
    assert lease.take(key) is None

    clock.at += timedelta(seconds=11)  # lapsed (the pass hung): another pass takes it over
    second = lease.take(key)
    assert second is not None and second != first
    with pytest.raises(LeaseLost), lease.write(key, first) as s:  # the old holder's write is refused
        s.get(models.Pool, key).target_dedicated = 99
    with db.read() as s:
        assert s.get(models.Pool, key).target_dedicated == 1

    lease.release(key, first)  # releasing with a lost token changes nothing
    assert lease.take(key) is None
    lease.release(key, second)
    assert lease.take(key) is not None


def test_release_all_frees_every_claim_at_start_up(db: Database) -> None:
    clock = ManualClock()
    key = pool(db, clock)
    lease = Lease(db, clock, models.Pool)
    assert lease.take(key) is not None
    lease.release_all()
    assert lease.take(key) is not None


def test_a_server_frees_only_its_own_claims_at_start_up(db: Database) -> None:
    """Servers sharing one database: at start-up a server frees the claims it held before it restarted, and
    leaves another's to expire (that one may be alive)."""
    clock = ManualClock()
    key = pool(db, clock)
    mine, theirs = Lease(db, clock, models.Pool, owner="aaaaaaaa"), Lease(db, clock, models.Pool, owner="bbbbbbbb")
    token = theirs.take(key)
    assert token is not None and token.startswith("bbbbbbbb-") and len(token) == 36
    mine.release_all()
    assert mine.take(key) is None  # the other server's claim stands
    theirs.release_all()  # that server restarted: its own claim is freed
    token = mine.take(key)
    assert token is not None and token.startswith("aaaaaaaa-")


def test_a_loop_runs_on_one_server_and_a_lapsed_claim_is_taken_over(db: Database) -> None:
    """The loops that act on every row of their kind (the task scheduler, autoscale, the machines loop) run on one
    replica at a time: the other's passes do nothing while the holder renews its claim; when the holder stops
    renewing (kill -9) another takes the loop over after the lease time, and the old holder's writes through the
    loop's claim are refused from then on."""
    clock = ManualClock()
    key = pool(db, clock)
    a = LoopClaim(db, clock, "tasks", timedelta(seconds=10), owner="aaaaaaaa")
    b = LoopClaim(db, clock, "tasks", timedelta(seconds=10), owner="bbbbbbbb")
    a_db, b_db = LeasedDatabase(db, a), LeasedDatabase(db, b)
    assert a.hold() and not b.hold()  # the first to come makes the loop's row and holds it
    for _ in range(4):  # the holder's passes renew the claim: the other never gets it
        clock.at += timedelta(seconds=6)
        assert a.hold() and not b.hold()
    with a_db.write() as s:  # a write of the holder's pass goes ahead (and renews the claim)
        s.get(models.Pool, key).target_dedicated = 1
    with pytest.raises(LeaseLost), b_db.write() as s:
        s.get(models.Pool, key).target_dedicated = 7

    clock.at += timedelta(seconds=11)  # the holder stopped renewing (killed): the claim lapses
    assert b.hold()
    assert b.token is not None and b.token.startswith("bbbbbbbb-")
    with pytest.raises(LeaseLost), a_db.write() as s:  # the late writer is refused...
        s.get(models.Pool, key).target_dedicated = 99
    assert a.token is None and not a.hold()  # ...and knows it lost the loop
    with b_db.write() as s:
        s.get(models.Pool, key).target_dedicated = 2
    with db.read() as s:
        assert s.get(models.Pool, key).target_dedicated == 2

    b.release()  # a clean stop hands the loop over at once
    assert a.hold()


def test_a_restarted_server_frees_its_own_loop_claims_only(db: Database) -> None:
    clock = ManualClock()
    a = LoopClaim(db, clock, "autoscale", owner="aaaaaaaa")
    b = LoopClaim(db, clock, "autoscale", owner="bbbbbbbb")
    assert a.hold()
    b.release_claims()  # b restarted: a's claim stands
    assert not b.hold()
    LoopClaim(db, clock, "autoscale", owner="aaaaaaaa").release_claims()  # a restarted (a new process)
    assert b.hold()


def test_two_servers_making_the_loop_row_at_once_do_not_fail(db: Database) -> None:
    clock = ManualClock()
    claims = [LoopClaim(db, clock, "machines", owner=f"{i:08x}") for i in range(8)]
    with ThreadPoolExecutor(8) as workers:
        held = list(workers.map(lambda c: c.hold(), claims))
    assert held.count(True) == 1
