"""The job state stage: finish the job transitions requests started, and terminate jobs past their wall-clock
limit.

A disabling job's running attempts are taken off (requeued or terminated, unless it waits for them); a
terminating or deleting job's attempts are killed, and its release tasks run on its nodes; once nothing of the
job runs any more, :func:`shoal.domain.batch.job_lifecycle.settle` ends the transition and the job's
directories go from its nodes if it was deleted.
"""

from __future__ import annotations

import contextlib
import logging

from shoal.core.clock import Clock
from shoal.domain.batch import job_lifecycle, multi_instance, outcomes
from shoal.domain.batch.assignment import BAD_RECORD
from shoal.domain.host import HostAgent
from shoal.reconcilers.tasks.attempts import Attempts
from shoal.reconcilers.tasks.job_tasks import JobTaskRuns
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)


class JobStates:
    def __init__(self, db: Database, clock: Clock, agent: HostAgent, attempts: Attempts,
                 job_tasks: JobTaskRuns) -> None:
        self.db, self.clock, self.agent, self.attempts, self.job_tasks = db, clock, agent, attempts, job_tasks

    def run(self, moving: list[str]) -> None:
        """``moving``: the jobs in a transition (``job_lifecycle.moving``, asked in the pass's first read)."""
        for job_key in moving:
            try:
                self._drive(job_key)
            except BAD_RECORD:  # one job's record must not stop the others
                log.exception("job %s: its state change failed (retried next pass)", job_key)

    def expire(self) -> None:
        """Terminate jobs that ran longer than their constraints.maxWallClockTime (measured from creation)."""
        with self.db.read() as s:
            keys = job_lifecycle.expired(s, self.clock.now())
        if keys:
            with self.db.write() as s:
                job_lifecycle.expire(s, self.clock, keys)

    def _drive(self, job_key: str) -> None:
        with self.db.read() as s:
            job = s.get(models.Job, job_key)
            if job is None:
                return
            running = [key for key, _ in job_lifecycle.attempts_of(s, job_key)]
        option = str(job.execution_info.get("disableTasks", "requeue"))
        if job.state == "disabling" and option != "wait" and running:
            self._take_off(running, option)
            running = []
        if job.state in ("terminating", "deleting"):
            for key in running:
                self.attempts.kill(key)
        if running and job.state in ("terminating", "deleting", "disabling"):
            return  # wait for the attempts to end (their results arrive through the queue)
        if job.state in ("terminating", "deleting") and self.job_tasks.releases_pending(job):
            return  # the job's release tasks run on its nodes first
        with self.db.write() as s:
            job = s.get(models.Job, job_key)
            if job is None:
                return
            leftovers = job_lifecycle.settle(s, job, self.clock)
        for machine, path in leftovers:
            with contextlib.suppress(OSError):
                self.agent.remove_path(machine, path)

    def _take_off(self, task_keys: list[str], option: str) -> None:
        """End running attempts of a job being disabled (the attempt is cleared first, so the killed process's
        exit is ignored when it arrives)."""
        with self.db.write() as s:
            for key in task_keys:
                task = s.get(models.Task, key)
                if task is None or task.attempt is None:
                    continue
                node = s.get(models.Node, task.node_key) if task.node_key else None
                outcomes.take_off(task, node, option, self.clock)
                multi_instance.end_subtasks(s, task, None, self.clock)
        for key in task_keys:
            self.attempts.kill(key)
