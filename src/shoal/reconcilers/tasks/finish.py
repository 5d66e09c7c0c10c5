"""The finish stage: record the attempts that ended since the last pass, in one transaction.

Each end gives its node its slots back and moves its task on (completed, retried or requeued, see
:mod:`shoal.domain.batch.outcomes`); a completed task may then act on its job (exit options), and a job that
completes with its tasks is looked at once per batch. Output files were uploaded by the waiter before the end
was queued."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from shoal.core.clock import Clock
from shoal.domain.batch import job_lifecycle, multi_instance, outcomes
from shoal.domain.batch.assignment import BAD_RECORD
from shoal.domain.batch.outcomes import Finished
from shoal.reconcilers.tasks.attempts import Attempts
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)


class Finisher:
    def __init__(self, db: Database, clock: Clock, attempts: Attempts) -> None:
        self.db, self.clock, self.attempts = db, clock, attempts

    def run(self) -> int:
        batch = self.attempts.drain()
        if not batch:
            return 0
        try:
            self._record(batch)
        except BaseException:
            # The transaction failed (a row changed under it, say another loop marked a node unusable): the ends
            # go back on the queue and the next pass records them from fresh rows. Nothing is lost.
            for item in batch:
                self.attempts.done.put(item)
            raise
        return len(batch)

    def _record(self, batch: list[Finished]) -> None:
        now = self.clock.now()
        with self.db.write() as s, s.no_autoflush:
            held = _preload(s, [item.task_key for item in batch])  # noqa: F841 - keeps the rows in the identity map
            jobs_to_check: dict[str, None] = {}
            for item in batch:
                task = s.get(models.Task, item.task_key)
                if task is None or task.attempt != item.attempt:
                    continue
                node = s.get(models.Node, task.node_key) if task.node_key else None
                if node is not None:
                    outcomes.count_on_node(node, task, item, self.clock)
                multi_instance.end_subtasks(s, task, item.subtasks, self.clock)  # their nodes are free again
                job = s.get(models.Job, task.job_key)
                try:
                    if outcomes.end_attempt(task, job, item, now, self.clock):
                        job_lifecycle.apply_exit_action(job, task, self.clock)
                        job_lifecycle.end_job_manager(job, task, self.clock)
                        if job_lifecycle.completes_with_its_tasks(job):
                            jobs_to_check[task.job_key] = None
                except BAD_RECORD as exc:  # its exit options, say
                    log.warning("task %s cannot be run, its record is invalid: %r", task.key, exc)
                    outcomes.reject(task, exc, self.clock)
            for job_key in jobs_to_check:
                job_lifecycle.complete_if_done(s, s.get(models.Job, job_key), self.clock)


def _preload(s: Any, task_keys: list[str]) -> list[Any]:
    """Load these tasks, their nodes and jobs in three queries: ``s.get`` then finds them without a query each.
    The caller keeps the returned rows referenced (the session's identity map holds them only weakly)."""
    tasks_ = list(s.scalars(select(models.Task).where(models.Task.key.in_(task_keys))))
    node_keys = {t.node_key for t in tasks_ if t.node_key}
    nodes = list(s.scalars(select(models.Node).where(models.Node.key.in_(node_keys)))) if node_keys else []
    jobs = list(s.scalars(select(models.Job).where(models.Job.key.in_({t.job_key for t in tasks_}))))
    return [*tasks_, *nodes, *jobs]
