"""The assign stage: active tasks to free slots on the schedulable nodes of their job's pool, in one
transaction. Each assignment gets a new attempt id, marks its task running (unless the job's preparation
task must run on the node first) and becomes a :class:`Launch` for the launch stage.

A pass first asks, in a read, whether anything can be placed at all (a waiting task in an active job whose
pool has a node with room): an idle loop, or one whose pools are full, opens no write transaction and loads
no rows. Otherwise it loads only the pools with room, their nodes with room, the jobs with waiting tasks and
about as many of those tasks as there are free slots.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from shoal.core import timefmt
from shoal.core.clock import Clock
from shoal.domain import containers
from shoal.domain.batch import applications, assignment, jobtasks, multi_instance, outcomes, pools
from shoal.domain.batch.assignment import BAD_RECORD, Launch
from shoal.reconcilers.tasks.urls import Urls
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)


class Assigner:
    def __init__(self, db: Database, clock: Clock, urls: Urls) -> None:
        self.db, self.clock, self.urls = db, clock, urls

    def run(self, limit: int = 2000, *, assignable: bool | None = None) -> list[Launch]:
        """``assignable``: the answer of :func:`assignment.can_assign` in a read of this pass (None: ask now)."""
        if assignable is None:
            with self.db.read() as s:
                assignable = assignment.can_assign(s)
        if not assignable:
            return []
        launches: list[Launch] = []
        now = timefmt.format_timestamp(self.clock.now())
        with self.db.write() as s:
            open_pools = assignment.pools_with_room(s)
            jobs = assignment.waiting_jobs(s, open_pools)
            used = {pools.pool_key(j.account_key, j.pool_id) for j in jobs.values()}
            free_slots = assignment.free_slots(s, {k: p for k, p in open_pools.items() if k in used})
            if not jobs or free_slots <= 0:
                return []
            oldest_first = [key for key, job in jobs.items()
                            if assignment.by_creation(open_pools[pools.pool_key(job.account_key, job.pool_id)])]
            candidates = assignment.candidates(s, jobs, free_slots, limit, oldest_first)
            # Only about as many nodes as the candidates could take are loaded (the rest when a choice needs them).
            wanted = assignment.nodes_wanted(candidates, jobs)
            free = assignment.free_nodes(s, {k: open_pools[k] for k in wanted}, wanted)
            done_ok = assignment.dependency_index(s, candidates)
            prepared = assignment.preparation_index(s, [j for j in jobs.values() if jobtasks.preparation(j.spec)])
            room = assignment.parallel_room(s, jobs)
            for task in candidates:
                job = jobs[task.job_key]
                if room.get(task.job_key, 1) <= 0:
                    continue  # the job runs maxParallelTasks tasks already
                pool = open_pools[pools.pool_key(job.account_key, job.pool_id)]
                nodes = free[pool.key]
                # A record that cannot be read (stored by an older version, or written by hand) fails alone:
                # everything that reads the task's and job's specs happens before anything changes.
                group: list[models.Node] = []
                try:
                    if not assignment.dependencies_met(task, done_ok):
                        continue
                    if multi_instance.is_multi(task):
                        # Whole nodes of a pool with inter-node communication, all at once (else it waits).
                        if not multi_instance.pool_runs_it(pool):
                            continue
                        group = nodes.pick_many(job, task, prepared, multi_instance.instances(task.spec)) or []
                        chosen = group[0] if group else None
                        multi_instance.common_resources(task.spec)  # readable, before anything changes
                    else:
                        chosen = nodes.pick(job, task, prepared)
                    if chosen is None:
                        continue
                    plan = assignment.plan(task, job)
                except BAD_RECORD as exc:
                    self._reject(task, exc)
                    continue
                attempt, node, used_before = str(uuid.uuid4()), chosen, chosen.running_slots
                if task.job_key in room:
                    room[task.job_key] -= 1
                assignment.assign(task, node, attempt, self.clock)
                nodes.take(node, used_before)
                account_url = self.urls.account(job.account_key)
                task.node_info = assignment.node_info(account_url, pool, node, job, task)
                for other in group[1:]:
                    multi_instance.take_node(other, self.clock)
                    nodes.take(other, 0)
                if group:
                    multi_instance.start_subtasks(task, [(n.key, assignment.node_info(account_url, pool, n, job, task))
                                                         for n in group[1:]], self.clock)
                launch = assignment.launch(task, job, pool, node, attempt, plan, account_url,
                                           self.urls.for_nodes(account_url), prepared)
                self._packages(s, launch, job, pool, task)
                if group:
                    launch.multi = assignment.multi_launch(task, group, launch)
                if launch.prepare is None:
                    # Running from now (which includes downloading resource files); a task that waits for its
                    # job's preparation stays preparing until that has run on the node.
                    outcomes.started(task, self.clock, None, now)
                launches.append(launch)
        return launches

    def _packages(self, s: Session, launch: Launch, job: models.Job, pool: models.Pool, task: models.Task) -> None:
        """The application packages of the pool (installed on the node already: their variables) and of the task
        (installed by the launch stage first, or the attempt fails with the references that cannot be met)."""
        pool_refs = pool.spec.get("applicationPackageReferences")
        task_refs = task.spec.get("applicationPackageReferences")
        if not pool_refs and not task_refs:
            return
        account = s.get(models.Resource, job.account_key)
        if account is None:
            return
        key = containers.signing_key(s)
        installed, _ = applications.resolve(s, account, pool_refs, self.urls.base_url, key)
        wanted, bad = applications.resolve(s, account, task_refs, self.urls.base_url, key)
        launch.env.update(applications.environment(installed + wanted))
        launch.packages, launch.bad_packages = list(wanted), bad

    def _reject(self, task: models.Task, exc: Exception) -> None:
        log.warning("task %s cannot be run, its record is invalid: %r", task.key, exc)
        outcomes.reject(task, exc, self.clock)
