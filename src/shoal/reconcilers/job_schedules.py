"""The job schedule loop: makes each schedule's jobs when they are due by the service clock, and ends terminating
and deleting schedules with their jobs (the rules: ``domain/batch/job_schedules.py`` and ``schedule_rules.py``).

It runs on one replica at a time (``LoopClaim`` "jobschedules"), and every write of its pass goes through the
claim, so two API replicas sharing one database never make the same job twice (the job's id, ``<schedule>:
job-<n>``, is its key besides). Each schedule is advanced in its own short transaction. The jobs it makes,
terminates or deletes are the task scheduler's from then on: it is nudged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shoal.core import errors
from shoal.core.clock import Clock
from shoal.domain.batch import job_schedules
from shoal.domain.batch.assignment import BAD_RECORD
from shoal.reconcilers.base import LeasedDatabase, LeaseLost, LoopClaim
from shoal.store.db import Database

log = logging.getLogger(__name__)


class JobScheduleLoop:
    name = "jobschedules"

    def __init__(self, db: Database, clock: Clock, *, claim: LoopClaim | None = None) -> None:
        """``claim``: the loop's claim (None: this process is the only one on the database, e.g. tests)."""
        self.claim = claim
        self.db = LeasedDatabase(db, claim) if claim is not None else db
        self.clock = clock
        self.nudge_tasks: Callable[[], Any] | None = None

    def release_claims(self) -> None:
        if self.claim is not None:
            self.claim.release_claims()

    def run_once(self) -> bool:
        if self.claim is not None and not self.claim.hold():
            return False
        try:
            changed = self._pass()
        except LeaseLost:
            log.warning("jobschedules: the loop's claim was taken over by another server; this pass stops")
            if self.claim is not None:
                self.claim.lost()
            return False
        if changed and self.nudge_tasks is not None:
            self.nudge_tasks()
        return False

    def _pass(self) -> bool:
        with self.db.read() as s:
            keys = job_schedules.due(s, self.clock.now())
        changed = False
        for key in keys:
            try:
                with self.db.write() as s:
                    changed = job_schedules.advance(s, self.clock, key) or changed
            except (*BAD_RECORD, errors.AzureError):  # one schedule's record must not stop the others
                log.exception("job schedule %s: its step failed (retried next pass)", key)
        return changed
