"""The task scheduler: one loop that runs the stages of a task's life in order.

  recovery   (first pass of a holder) attempts a previous holder left behind       recovery.py
  finish     record the attempts that ended: completions, retries, requeues        finish.py
  job state  finish job transitions (disable, terminate, delete), release tasks    job_state.py
  assign     active tasks to free slots, one transaction                           assign.py
  launch     start the new attempts through the host agent                         launch.py
  sweep      (every few seconds) task directories past retention, job time limits  retention.py, job_state.py

The rules each stage applies live in ``domain/batch`` (assignment, outcomes, job_lifecycle); the stages load,
ask the rules, act on the host outside any transaction and write back in batches, so throughput is bounded by
process creation rather than by the database. What the stages share in this process is :class:`Attempts`.

The scheduler runs on one replica at a time (``reconcilers/base.py`` LoopClaim "tasks"): every write of its
stages goes through the loop's claim, and a replica that takes the loop over (its holder died, and the claim
lapsed) starts with the recovery stage, which watches the attempts the dead holder left running again. A task
terminated or deleted through another replica is killed here: each sweep kills the attempts of this process
whose task no longer runs them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from shoal.core.clock import Clock
from shoal.domain.batch import assignment, job_lifecycle
from shoal.domain.host import HostAgent
from shoal.reconcilers.base import LeasedDatabase, LeaseLost, LoopClaim
from shoal.reconcilers.tasks.assign import Assigner
from shoal.reconcilers.tasks.attempts import Attempts
from shoal.reconcilers.tasks.finish import Finisher
from shoal.reconcilers.tasks.job_state import JobStates
from shoal.reconcilers.tasks.job_tasks import JobTaskRuns
from shoal.reconcilers.tasks.launch import Launcher
from shoal.reconcilers.tasks.recovery import Recovery
from shoal.reconcilers.tasks.retention import RetentionSweep
from shoal.reconcilers.tasks.urls import Urls
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 2.0  # seconds between looks for task directories past their retention time


class TaskScheduler:
    name = "tasks"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, base_url: str, *, workers: int = 256,
                 claim: LoopClaim | None = None) -> None:
        """``claim``: the loop's claim (None: this process is the only scheduler of the database, e.g. tests)."""
        self.claim = claim
        db = LeasedDatabase(db, claim) if claim is not None else db
        self.db, self.clock, self.agent = db, clock, agent
        self.urls = Urls(base_url)
        self.attempts = Attempts(agent, workers)
        self.job_tasks = JobTaskRuns(db, clock, agent, self.attempts, self.urls)
        self.recovery = Recovery(db, agent, self.attempts, self.job_tasks)
        self.finisher = Finisher(db, clock, self.attempts)
        self.job_states = JobStates(db, clock, agent, self.attempts, self.job_tasks)
        self.assigner = Assigner(db, clock, self.urls)
        self.launcher = Launcher(db, clock, agent, self.attempts, self.job_tasks.prepared)
        self.retention = RetentionSweep(db, clock, agent)
        self._recovered = False
        self._next_sweep = 0.0

    @property
    def node_base_url(self) -> str:
        """Shoal's origin as nodes reach it (their gateway, with networks of their own)."""
        return self.urls.node_base_url

    @node_base_url.setter
    def node_base_url(self, value: str) -> None:
        self.urls.node_base_url = value

    @property
    def nudge(self) -> Callable[[], Any] | None:
        """Wakes this loop (set by the owner of the runner): an attempt ended, a release task ran."""
        return self.attempts.nudge

    @nudge.setter
    def nudge(self, value: Callable[[], Any] | None) -> None:
        self.attempts.nudge = value

    def release_claims(self) -> None:
        """At start-up: free this server's claim on the loop from before it restarted (its attempts are then
        recovered at the first pass)."""
        if self.claim is not None:
            self.claim.release_claims()

    def kill(self, task_key: str) -> None:
        """Kill a running attempt of the task (terminate/delete); its end arrives through the finish stage."""
        self.attempts.kill(task_key)

    def run_once(self) -> bool:
        if self.claim is not None and not self.claim.hold():
            self._recovered = False  # when this server takes the loop (over), it recovers first
            return False
        try:
            return self._pass()
        except LeaseLost:
            log.warning("tasks: the loop's claim was taken over by another server; this pass stops")
            if self.claim is not None:
                self.claim.lost()
            self._recovered = False
            return False

    def _pass(self) -> bool:
        if not self._recovered:
            self.recovery.run()
            self._recovered = True
        finished = self.finisher.run()
        # One read asks both stages whether they have work: most passes have none (each task submission nudges
        # one), and a read transaction costs more than its two small queries.
        with self.db.read() as s:
            moving = job_lifecycle.moving(s)
            assignable: bool | None = assignment.can_assign(s)
        if moving:
            self.job_states.run(moving)
            assignable = None  # a job's transition may change what can be assigned: the assigner asks again
        launches = self.assigner.run(assignable=assignable)
        self.launcher.run(launches)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            self.retention.run()
            self.job_states.expire()
            self._kill_orphans()
        return bool(finished or launches)

    def _kill_orphans(self) -> None:
        """Kill the attempts running in this process whose task no longer runs them (terminated or deleted
        through another replica, or taken over by another scheduler)."""
        running = self.attempts.running()
        if not running:
            return
        with self.db.read() as s:
            current = dict(s.execute(select(models.Task.key, models.Task.attempt).where(
                models.Task.key.in_(list(running)))).all())
        for key, attempt in running.items():
            if current.get(key) != attempt:
                log.info("task %s: killing attempt %s, which its task no longer runs", key, attempt)
                self.attempts.doom(key, attempt)  # that attempt only: a new one of the task may start meanwhile
