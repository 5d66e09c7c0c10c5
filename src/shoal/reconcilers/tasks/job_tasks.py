"""Job preparation and release tasks: run on a node once per job (preparation, before the job's first task
there) and when the job ends (release, on every node that ran the preparation). Their runs are recorded in
``job_node_tasks`` as they go."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import select

from shoal.core import timefmt
from shoal.core.clock import Clock
from shoal.core.hosterrors import TransferError
from shoal.domain.batch import jobtasks, outcomes, tasks
from shoal.domain.batch.assignment import Launch, SpecialLaunch, is_admin, special_launch, task_user
from shoal.domain.host import HostAgent
from shoal.reconcilers.tasks import node_ops
from shoal.reconcilers.tasks.attempts import Attempts
from shoal.reconcilers.tasks.urls import Urls
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)


class JobTaskRuns:
    def __init__(self, db: Database, clock: Clock, agent: HostAgent, attempts: Attempts, urls: Urls) -> None:
        self.db, self.clock, self.agent, self.attempts, self.urls = db, clock, agent, attempts, urls
        self._prep_locks: dict[str, threading.Lock] = {}
        self._releasing: set[str] = set()

    def reset_interrupted(self) -> None:
        """Preparation and release runs cut short by a restart run again."""
        with self.db.write() as s:
            for row in s.scalars(select(models.JobNodeTask)):
                if (row.preparation or {}).get("state") == "running":
                    row.preparation = None
                if (row.release or {}).get("state") == "running":
                    row.release = None

    # --- preparation -----------------------------------------------------------------------------------------
    def prepared(self, launch: Launch) -> bool:
        """Run the job's preparation task on the launch's node unless it ran already (once per job and node,
        whatever the number of tasks waiting for it); then mark the task running. Whether the node may run it."""
        prep = launch.prepare
        assert prep is not None
        lock_key = prep.row_key
        with self.attempts.lock:
            lock = self._prep_locks.setdefault(lock_key, threading.Lock())
        with lock:
            with self.db.read() as s:
                row = s.get(models.JobNodeTask, lock_key)
                info = row.preparation if row is not None else None
                job = s.get(models.Job, prep.job_key)
                job_spec = job.spec if job is not None else {}
            if jobtasks.usable(job_spec, info) is None:
                info = self._run(lock_key, prep, "preparation")
        ok = jobtasks.usable(job_spec, info) is True
        if ok:
            now = timefmt.format_timestamp(self.clock.now())
            with self.db.write() as s:
                task = s.get(models.Task, launch.key)
                if task is None or task.attempt != launch.attempt:
                    return False
                outcomes.started(task, self.clock, task.pid, now)
        return ok

    # --- release ---------------------------------------------------------------------------------------------
    def releases_pending(self, job: models.Job) -> bool:
        """Start the job's release task on every node that ran its preparation; True while any still runs."""
        rel = jobtasks.release(job.spec)
        if rel is None:
            return False
        launches: list[SpecialLaunch] = []
        with self.db.read() as s:
            for row in s.scalars(select(models.JobNodeTask).where(models.JobNodeTask.job_key == job.key)):
                if not row.preparation or (row.release or {}).get("state") == "completed":
                    continue
                node = s.get(models.Node, row.node_key)
                pool = s.get(models.Pool, node.pool_key) if node is not None else None
                if node is None or pool is None or self.agent.status(node.machine_id) != "running":
                    continue  # the node is gone: nothing to release there
                account_url = self.urls.account(job.account_key)
                launches.append(special_launch(job, rel, jobtasks.RELEASE_ID, pool, node, account_url,
                                               self.urls.for_nodes(account_url)))
        for launch in launches:
            with self.attempts.lock:
                if launch.row_key in self._releasing:
                    continue
                self._releasing.add(launch.row_key)
            self.attempts.submit(self._release, launch)
        return bool(launches)

    def _release(self, launch: SpecialLaunch) -> None:
        # The key stays in ``_releasing`` once the run is recorded: a pass that read the rows before it ended
        # must not start it again.
        try:
            self._run(launch.row_key, launch, "release")
        except Exception:
            log.exception("the job release task %s failed to run", launch.row_key)
            with self.attempts.lock:
                self._releasing.discard(launch.row_key)
        if callable(self.attempts.nudge):
            self.attempts.nudge()

    # --- running either --------------------------------------------------------------------------------------
    def _run(self, row_key: str, launch: SpecialLaunch, kind: str) -> dict[str, Any]:
        """Run a preparation or release task to its end, recording its execution info as it goes."""
        spec = launch.spec
        started = timefmt.format_timestamp(self.clock.now())
        base: dict[str, Any] = {"startTime": started, "state": "running", "taskRootDirectory": launch.root,
                                "taskRootDirectoryUrl": launch.root_url}
        if kind == "preparation":
            base["retryCount"] = 0
        self._save(row_key, launch, kind, base)
        retries = int((spec.get("constraints") or {}).get("maxTaskRetryCount", 0) or 0) if kind == "preparation" else 0
        attempt = 0
        while True:
            info = dict(base)
            result = self._run_once(launch, kind)
            info.update(result)
            info["state"] = "completed"
            info["endTime"] = timefmt.format_timestamp(self.clock.now())
            failed = info.get("result") != "success"
            if failed and "failureInfo" not in result and (retries == -1 or attempt < retries):
                attempt += 1
                base = {**base, "retryCount": attempt, "lastRetryTime": info["endTime"]}
                continue
            self._save(row_key, launch, kind, info)
            return info

    def _run_once(self, launch: SpecialLaunch, kind: str) -> dict[str, Any]:
        spec, machine, task_dir = launch.spec, launch.machine, launch.task_dir
        admin = is_admin(spec)
        try:
            node_ops.prepare_dir(self.agent, machine, task_dir, admin)
            if self.agent.transfers_enabled:
                for resource in spec.get("resourceFiles") or []:
                    self.agent.download_resource(machine, resource, f"{task_dir}/wd", task_user(admin))
            pid = node_ops.spawn(self.agent, machine, task_dir, str(spec.get("commandLine", "")), launch.env, admin,
                                 jobtasks.timeout(spec, is_release=kind == "release"))
            result = self.agent.wait(pid) or {}
        except TransferError as exc:
            return {"result": "failure", "failureInfo": exc.failure_info()}
        except Exception as exc:
            return {"result": "failure", "failureInfo": {"category": "servererror", "code": "TaskEnded",
                                                         "message": str(exc), "details": []}}
        failure = tasks.run_failure(result.get("exitCode"), bool(result.get("timedOut")), result.get("error"))
        out: dict[str, Any] = {"result": "success" if failure is None else "failure"}
        if result.get("exitCode") is not None:
            out["exitCode"] = result["exitCode"]
        if failure is not None:
            out["failureInfo"] = failure
        return out

    def _save(self, row_key: str, launch: SpecialLaunch, kind: str, info: dict[str, Any]) -> None:
        with self.db.write() as s:
            row = s.get(models.JobNodeTask, row_key)
            if row is None:
                row = models.JobNodeTask(key=row_key, job_key=launch.job_key, node_key=launch.node_key,
                                         pool_id=launch.pool_id, node_id=launch.node_id, node_url=launch.node_url)
                s.add(row)
            setattr(row, kind, info)
