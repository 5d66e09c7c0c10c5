"""The assign stage: active tasks to free slots on the schedulable nodes of their job's pool, in one
transaction. Each assignment gets a new attempt id and becomes a :class:`Launch` for the launch stage."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select

from shoal.core.clock import Clock
from shoal.domain.batch import assignment, jobtasks, outcomes, pools
from shoal.domain.batch.assignment import BAD_RECORD, SCHEDULABLE_NODE_STATES, Launch
from shoal.reconcilers.tasks.urls import Urls
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)


class Assigner:
    def __init__(self, db: Database, clock: Clock, urls: Urls) -> None:
        self.db, self.clock, self.urls = db, clock, urls

    def run(self, limit: int = 2000) -> list[Launch]:
        launches: list[Launch] = []
        with self.db.write() as s:
            active_pools = {p.key: p for p in s.scalars(select(models.Pool).where(models.Pool.state == "active"))}
            if not active_pools:
                return []
            nodes_by_pool: dict[str, list[models.Node]] = {}
            for node in s.scalars(select(models.Node).where(
                    models.Node.state.in_(SCHEDULABLE_NODE_STATES), models.Node.scheduling_state == "enabled",
                    models.Node.pending == "")):
                nodes_by_pool.setdefault(node.pool_key, []).append(node)
            # Only jobs whose pool exists and has usable nodes: tasks waiting for a pool that is not there
            # (Azure accepts such jobs) must not crowd out tasks that can run.
            jobs = {j.key: j for j in s.scalars(select(models.Job).where(models.Job.state == "active"))
                    if pools.pool_key(j.account_key, j.pool_id) in nodes_by_pool}
            if not jobs:
                return []
            # Load only about as many tasks as there are free slots (more when dependencies may hold some back).
            free_slots = sum(max(0, assignment.slots_per_node(active_pools[k]) - n.running_slots)
                             for k, nodes in nodes_by_pool.items() if k in active_pools for n in nodes)
            if free_slots <= 0:
                return []
            candidates: list[models.Task] = []
            for job in sorted(jobs.values(), key=lambda j: -j.priority):
                window = limit if job.spec.get("usesTaskDependencies") else min(limit, 2 * free_slots)
                candidates += list(s.scalars(select(models.Task).where(
                    models.Task.job_key == job.key, models.Task.state == "active", models.Task.attempt.is_(None)
                ).order_by(models.Task.seq).limit(window)))
            if not candidates:
                return []
            candidates.sort(key=lambda t: (-jobs[t.job_key].priority, t.seq))
            done_ok = assignment.dependency_index(s, candidates)
            prepared = assignment.preparation_index(s, [j for j in jobs.values() if jobtasks.preparation(j.spec)])
            for task in candidates:
                job = jobs[task.job_key]
                pool = active_pools.get(pools.pool_key(job.account_key, job.pool_id))
                # A record that cannot be read (stored by an older version, or written by hand) fails alone:
                # everything that reads the task's and job's specs happens before anything changes.
                try:
                    if pool is None or not assignment.dependencies_met(task, done_ok):
                        continue
                    chosen = assignment.pick_node(pool, job, task, nodes_by_pool.get(pool.key, []), prepared)
                    if chosen is None:
                        continue
                    plan = assignment.plan(task, job)
                except BAD_RECORD as exc:
                    self._reject(task, exc)
                    continue
                attempt, node = str(uuid.uuid4()), chosen
                assignment.assign(task, node, attempt, self.clock)
                account_url = self.urls.account(job.account_key)
                task.node_info = assignment.node_info(account_url, pool, node, job, task)
                launches.append(assignment.launch(task, job, pool, node, attempt, plan, account_url,
                                                  self.urls.for_nodes(account_url), prepared))
        return launches

    def _reject(self, task: models.Task, exc: Any) -> None:
        log.warning("task %s cannot be run, its record is invalid: %r", task.key, exc)
        outcomes.reject(task, exc, self.clock)
