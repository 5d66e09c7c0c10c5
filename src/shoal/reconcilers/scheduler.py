"""The task scheduler: assigns active tasks to free slots on the nodes of their job's pool, runs them inside
the nodes' machines, records results, retries, requeues, and drives job state changes.

Work is batched: one transaction assigns many tasks, one transaction records many completions, so throughput
is bounded by process creation rather than by the database. Each attempt has an id; a task is assigned only
while it has no attempt, so it never runs twice at once. The machine helper that runs a task also writes its
final status next to its output: after a crash of the server, a finished attempt is recognised from that file,
a live one is watched again, and a vanished one is requeued.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from shoal.core import etags, timefmt
from shoal.core.clock import Clock
from shoal.core.hosterrors import TransferError
from shoal.domain.batch import exits, jobtasks, pools, retired, taskfiles, tasks
from shoal.domain.batch import jobs as job_rules
from shoal.domain.batch import nodes as node_rules
from shoal.domain.host import HostAgent
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)
SCHEDULABLE_NODE_STATES = ("idle", "running")
NOBODY = node_rules.NOBODY
SWEEP_INTERVAL = 2.0  # seconds between looks for task directories past their retention time


@dataclass
class Finished:
    task_key: str
    attempt: str
    exit_code: int | None
    timed_out: bool = False
    error: str | None = None
    lost: bool = False  # the attempt vanished (machine gone): requeue
    # A resource file that could not be downloaded (the command never ran) or an output file that could not be
    # uploaded: the task's failureInfo. Neither is retried (as in Azure).
    failure: dict[str, Any] | None = None


class TaskScheduler:
    name = "tasks"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, base_url: str, *, workers: int = 256) -> None:
        self.db, self.clock, self.agent, self.base_url = db, clock, agent, base_url
        self.node_base_url = base_url  # Shoal's origin as nodes reach it (their gateway, with networks of their own)
        self._waiters = ThreadPoolExecutor(workers, thread_name_prefix="task-wait")
        self._done: queue.Queue[Finished] = queue.Queue()
        self._running: dict[str, tuple[str, int]] = {}  # task key -> (attempt, pid)
        self._lock = threading.Lock()
        self._recovered = False
        self._next_sweep = 0.0
        self._prep_locks: dict[str, threading.Lock] = {}
        self._releasing: set[str] = set()
        self.nudge: Any = None

    def release_claims(self) -> None:
        """Nothing is claimed by row locks here: attempts are recovered on the first pass instead."""

    # --- the pass ----------------------------------------------------------------------------------------------
    def run_once(self) -> bool:
        if not self._recovered:
            self._recover()
            self._recovered = True
        finished = self._record_finished()
        self._job_transitions()
        started = self._schedule()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            self._sweep_task_dirs()
            self._expire_jobs()
        return bool(finished or started)

    def _expire_jobs(self) -> None:
        """Terminate jobs that ran longer than their constraints.maxWallClockTime (measured from creation)."""
        now = self.clock.now()
        with self.db.write() as s:
            for job in s.scalars(select(models.Job).where(models.Job.state.in_(("active", "disabled")))):
                text = (job.spec.get("constraints") or {}).get("maxWallClockTime")
                if not text:
                    continue
                try:
                    expired = job.created_at + timefmt.parse_duration(str(text)) <= now
                except OverflowError:  # "unlimited" (the wire's maximum duration)
                    expired = False
                if expired:
                    job_rules.terminate(job, self.clock, "MaxWallClockTimeExpiry")

    # --- task directories past their retention time ------------------------------------------------------------
    def _sweep_task_dirs(self, limit: int = 500) -> None:
        """Delete the node directories of completed tasks whose retentionTime has passed. The task keeps its
        nodeInfo; its files answer ``TaskFilesCleanedup`` from then on."""
        with self.db.read() as s:
            expired = [(t.key, t.node_key, (t.node_info or {}).get("taskRootDirectory")) for t in s.scalars(
                select(models.Task).where(models.Task.files_expire_at <= self.clock.now())
                .order_by(models.Task.files_expire_at).limit(limit))]
            keys = {k for _, k, _ in expired if k}
            machines = {n.key: n.machine_id for n in s.scalars(select(models.Node).where(
                models.Node.key.in_(keys)))} if expired else {}
            # Tasks of nodes that are gone: their logs were kept aside, and go now.
            machines.update({k: m for k in keys - machines.keys() if (m := retired.machine_of_key(s, k))})
            gone = retired.expired(s, self.clock.now())
        for _node_key, retired_machine in gone:
            with contextlib.suppress(OSError):
                self.agent.forget_logs(retired_machine)
        if gone:
            with self.db.write() as s:
                retired.forget(s, [k for k, _ in gone])
        for _key, node_key, root in expired:
            machine = machines.get(node_key or "")
            if machine and root:
                with contextlib.suppress(OSError):
                    self.agent.remove_path(machine, f"{node_rules.NODE_ROOT}/{root}")
        if expired:
            with self.db.write() as s:
                for key, _node, _root in expired:
                    task = s.get(models.Task, key)
                    if task is not None and task.state == "completed":
                        task.files_expire_at = None
                        task.node_key = None

    # --- assignment ----------------------------------------------------------------------------------------------
    def _schedule(self, limit: int = 2000) -> int:
        launches: list[dict[str, Any]] = []
        with self.db.write() as s:
            active_pools = {p.key: p for p in s.scalars(select(models.Pool).where(models.Pool.state == "active"))}
            if not active_pools:
                return 0
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
                return 0
            # Load only about as many tasks as there are free slots (more when dependencies may hold some back).
            free_slots = sum(max(0, int(active_pools[k].spec.get("taskSlotsPerNode", 1)) - n.running_slots)
                             for k, nodes in nodes_by_pool.items() if k in active_pools for n in nodes)
            if free_slots <= 0:
                return 0
            candidates = []
            for job in sorted(jobs.values(), key=lambda j: -j.priority):
                window = limit if job.spec.get("usesTaskDependencies") else min(limit, 2 * free_slots)
                candidates += list(s.scalars(select(models.Task).where(
                    models.Task.job_key == job.key, models.Task.state == "active", models.Task.attempt.is_(None)
                ).order_by(models.Task.seq).limit(window)))
            if not candidates:
                return 0
            candidates.sort(key=lambda t: (-jobs[t.job_key].priority, t.seq))
            done_ok = self._dependency_index(s, candidates)
            prepared = self._preparation_index(s, [j for j in jobs.values() if jobtasks.preparation(j.spec)])
            for task in candidates:
                job = jobs[task.job_key]
                pool = active_pools.get(pools.pool_key(job.account_key, job.pool_id))
                # A record that cannot be read (stored by an older version, or written by hand) fails alone:
                # everything that reads the task's and job's specs happens before anything changes.
                try:
                    if pool is None or not self._dependencies_met(task, done_ok):
                        continue
                    per_node = int(pool.spec.get("taskSlotsPerNode", 1))
                    free = [n for n in nodes_by_pool.get(pool.key, []) if n.running_slots + task.slots <= per_node
                            and jobtasks.usable(job.spec, prepared.get((job.key, n.key))) is not False]
                    if not free:
                        continue
                    pack = str((pool.spec.get("taskSchedulingPolicy") or {}).get("nodeFillType", "spread")) == "pack"
                    node = (max if pack else min)(free, key=lambda n: (n.running_slots, n.key))
                    # affinityInfo is a hint: the named node when it has room, any other node otherwise.
                    affinity = str((task.spec.get("affinityInfo") or {}).get("affinityId") or "")
                    node = next((n for n in free if f"TVM:{n.node_id}".lower() == affinity.lower()), node)
                    plan = _plan(task, job)
                except BAD_RECORD as exc:
                    self._reject(task, exc)
                    continue
                attempt = str(uuid.uuid4())
                task.attempt, task.node_key = attempt, node.key
                tasks.set_state(task, self.clock, "preparing")
                node.running_slots += task.slots
                node.running_tasks += 1
                if node.state == "idle":
                    node_rules.set_state(node, self.clock, "running")
                task_dir = f"{node_rules.NODE_ROOT}/workitems/{job.job_id}/job-1/{task.task_id}"
                account_name = job.account_key.rsplit("/", 1)[-1]
                account_url = f"{self.base_url}/batch/{account_name}"
                task.node_info = {"affinityId": f"TVM:{node.node_id}", "poolId": pool.pool_id, "nodeId": node.node_id,
                                  "nodeUrl": f"{account_url}/pools/{pool.pool_id}/nodes/{node.node_id}",
                                  "taskRootDirectory": f"workitems/{job.job_id}/job-1/{task.task_id}",
                                  "taskRootDirectoryUrl": f"{account_url}/pools/{pool.pool_id}/nodes/{node.node_id}/"
                                                          f"files/workitems/{job.job_id}/job-1/{task.task_id}"}
                env = node_rules.base_environment(account_name, self._for_nodes(account_url), pool, node)
                env.update({"AZ_BATCH_JOB_ID": job.job_id, "AZ_BATCH_TASK_ID": task.task_id,
                            "AZ_BATCH_TASK_DIR": task_dir, "AZ_BATCH_TASK_WORKING_DIR": f"{task_dir}/wd",
                            "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin"})
                prep = jobtasks.preparation(job.spec)
                if prep is not None:
                    prep_dir = f"{node_rules.NODE_ROOT}/workitems/{job.job_id}/job-1/" \
                               f"{jobtasks.task_id(prep, jobtasks.PREPARATION_ID)}"
                    env.update({"AZ_BATCH_JOB_PREP_DIR": prep_dir, "AZ_BATCH_JOB_PREP_WORKING_DIR": f"{prep_dir}/wd"})
                env.update(plan["env"])
                admin = plan["admin"]
                if admin:
                    env["AZ_BATCH_TASK_USER_IDENTITY"] = "PoolAdmin"
                launches.append({"key": task.key, "attempt": attempt, "machine": node.machine_id,
                                 "task_dir": task_dir, "env": env, "admin": admin, "timeout": plan["timeout"],
                                 "command": plan["command"], "resources": plan["resources"],
                                 "outputs": plan["outputs"],
                                 # The job's preparation task must run on the node first: the task stays
                                 # preparing until it has.
                                 "prepare": _special_launch(job, prep, jobtasks.PREPARATION_ID, pool, node, account_url,
                                                            self._for_nodes(account_url))
                                 if prep is not None and jobtasks.usable(job.spec, prepared.get((job.key, node.key)))
                                 is None else None})
        # Tasks with files to move or a preparation to wait for run their whole attempt on a waiter thread (it
        # must not hold up the loop); the others are spawned right here, in one batch.
        slow = [launch for launch in launches if launch["resources"] or launch["outputs"] or launch["prepare"]]
        started = [(launch, pid) for launch in launches
                   if launch not in slow and (pid := self._launch(launch)) is not None]
        if started or slow:
            now = timefmt.format_timestamp(self.clock.now())
            with self.db.write() as s:  # one transaction for the whole batch
                held = s.scalars(select(models.Task).where(  # noqa: F841 - keeps them in the identity map
                    models.Task.key.in_([launch["key"] for launch in launches]))).all()
                for launch, pid in [*started, *[(launch, None) for launch in slow if not launch["prepare"]]]:
                    row = s.get(models.Task, launch["key"])
                    if row is not None and row.attempt == launch["attempt"] and row.state == "preparing":
                        row.pid = pid
                        # Running includes downloading resource files (startTime is when that began).
                        tasks.set_state(row, self.clock, "running")
                        row.execution_info = {**row.execution_info, "startTime": now}
            for launch, pid in started:
                self._waiters.submit(self._wait, launch["key"], launch["attempt"], pid)
            for launch in slow:
                self._waiters.submit(self._run_with_files, launch)
        return len(launches)

    @staticmethod
    def _preparation_index(s: Any, prep_jobs: list[models.Job]) -> dict[tuple[str, str], dict[str, Any] | None]:
        """Preparation task runs of these jobs, by (job, node); absent: not run on that node yet."""
        if not prep_jobs:
            return {}
        rows = s.scalars(select(models.JobNodeTask).where(
            models.JobNodeTask.job_key.in_([j.key for j in prep_jobs])))
        return {(r.job_key, r.node_key): r.preparation for r in rows}

    def _dependency_index(self, s: Any, candidates: list[models.Task]) -> dict[str, set[str]]:
        """For jobs with dependent tasks: ids of completed tasks whose exit options satisfy dependents, per job."""
        wanted = {t.job_key for t in candidates if t.spec.get("dependsOn")}
        out: dict[str, set[str]] = {}
        for job_key in wanted:
            rows = s.execute(select(models.Task.task_id, models.Task.spec, models.Task.execution_info).where(
                models.Task.job_key == job_key, models.Task.state == "completed")).all()
            out[job_key] = {tid.lower() for tid, spec, info in rows if exits.satisfies_dependents(spec, info or {})}
        return out

    @staticmethod
    def _dependencies_met(task: models.Task, done_ok: dict[str, set[str]]) -> bool:
        ids, ranges = tasks.dependency_ids(task.spec)
        if not ids and not ranges:
            return True
        done = done_ok.get(task.job_key, set())
        if any(i.lower() not in done for i in ids):
            return False
        return all(str(n) in done for start, end in ranges for n in range(start, end + 1))

    def _for_nodes(self, url: str) -> str:
        """A URL of this Shoal as the nodes reach it."""
        return self.node_base_url + url[len(self.base_url):] if url.startswith(self.base_url) else url

    # --- running -------------------------------------------------------------------------------------------------
    def _prepare_dir(self, machine: str, task_dir: str, admin: bool) -> None:
        """The task directory in the node, with its working directory, ready for a new attempt (owned by the
        task's user; the parents by the node's root)."""
        self.agent.make_dirs(machine, [str(Path(task_dir).parent)])
        self.agent.make_dirs(machine, [task_dir, f"{task_dir}/wd"], inside_uid=0 if admin else NOBODY)
        self.agent.clear_exit(machine, task_dir)

    def _spawn(self, machine: str, task_dir: str, command: str, env: dict[str, str], admin: bool,
               timeout: float | None) -> int:
        """Start a command in a node's machine: cwd the task's wd, output in its directory, the final status
        where the agent keeps it."""
        self._prepare_dir(machine, task_dir, admin)
        return self.agent.spawn(
            machine, node_rules.command_argv(command), env=env, cwd=f"{task_dir}/wd",
            user=_task_user(admin), stdout=f"{task_dir}/stdout.txt", stderr=f"{task_dir}/stderr.txt",
            timeout=timeout, exit_key=task_dir)

    def _launch(self, launch: dict[str, Any]) -> int | None:
        try:
            pid = self._spawn(launch["machine"], launch["task_dir"], launch["command"], launch["env"],
                              launch["admin"], launch["timeout"])
        except Exception as exc:
            self._done.put(Finished(launch["key"], launch["attempt"], None, error=str(exc)))
            return None
        with self._lock:
            self._running[launch["key"]] = (launch["attempt"], pid)
        return pid

    def _run_with_files(self, launch: dict[str, Any]) -> None:
        """One attempt of a task with resource or output files: download, run, wait, upload, report."""
        key, attempt = launch["key"], launch["attempt"]
        try:
            if launch["prepare"] is not None and not self._prepared(launch):
                # The node may not run this job's tasks (its preparation failed): back to the queue.
                self._finish(Finished(key, attempt, None, lost=True))
                return
            self._prepare_dir(launch["machine"], launch["task_dir"], launch["admin"])
            try:
                for resource in launch["resources"]:
                    self.agent.download_resource(launch["machine"], resource, f"{launch['task_dir']}/wd",
                                            _task_user(launch["admin"]))
            except TransferError as exc:
                self._finish(Finished(key, attempt, None, failure=exc.failure_info()))
                return
            pid = self._launch(launch)
            if pid is None:
                return  # _launch reported the failure
            item = self._await(key, attempt, pid)
            self._finish(self._upload_outputs(item, launch["machine"], launch["task_dir"], launch["outputs"],
                                              launch["env"], launch["admin"]))
        except Exception as exc:
            log.exception("task %s failed to run", key)
            self._finish(Finished(key, attempt, None, error=str(exc)))

    # --- job preparation and release tasks ---------------------------------------------------------------------
    def _prepared(self, launch: dict[str, Any]) -> bool:
        """Run the job's preparation task on the launch's node unless it ran already (once per job and node,
        whatever the number of tasks waiting for it); then mark the task running. Whether the node may run it."""
        prep = launch["prepare"]
        lock_key = f"{prep['job_key']}|{prep['node_key']}"
        with self._lock:
            lock = self._prep_locks.setdefault(lock_key, threading.Lock())
        with lock:
            with self.db.read() as s:
                row = s.get(models.JobNodeTask, lock_key)
                info = row.preparation if row is not None else None
                job = s.get(models.Job, prep["job_key"])
                job_spec = job.spec if job is not None else {}
            if jobtasks.usable(job_spec, info) is None:
                info = self._run_job_task(lock_key, prep, "preparation")
        ok = jobtasks.usable(job_spec, info) is True
        if ok:
            now = timefmt.format_timestamp(self.clock.now())
            with self.db.write() as s:
                task = s.get(models.Task, launch["key"])
                if task is None or task.attempt != launch["attempt"]:
                    return False
                tasks.set_state(task, self.clock, "running")
                task.execution_info = {**task.execution_info, "startTime": now}
        return ok

    def _run_job_task(self, row_key: str, launch: dict[str, Any], kind: str) -> dict[str, Any]:
        """Run a preparation or release task to its end, recording its execution info as it goes."""
        spec = launch["spec"]
        started = timefmt.format_timestamp(self.clock.now())
        base = {"startTime": started, "state": "running", "taskRootDirectory": launch["root"],
                "taskRootDirectoryUrl": launch["root_url"]}
        if kind == "preparation":
            base["retryCount"] = 0
        self._save_job_task(row_key, launch, kind, base)
        retries = int((spec.get("constraints") or {}).get("maxTaskRetryCount", 0) or 0) if kind == "preparation" else 0
        attempt = 0
        while True:
            info = dict(base)
            result = self._run_special(launch, kind)
            info.update(result)
            info["state"] = "completed"
            info["endTime"] = timefmt.format_timestamp(self.clock.now())
            failed = info.get("result") != "success"
            if failed and "failureInfo" not in result and (retries == -1 or attempt < retries):
                attempt += 1
                base = {**base, "retryCount": attempt, "lastRetryTime": info["endTime"]}
                continue
            self._save_job_task(row_key, launch, kind, info)
            return info

    def _run_special(self, launch: dict[str, Any], kind: str) -> dict[str, Any]:
        spec, machine, task_dir = launch["spec"], launch["machine"], launch["task_dir"]
        admin = _is_admin(spec)
        try:
            self._prepare_dir(machine, task_dir, admin)
            if self.agent.transfers_enabled:
                for resource in spec.get("resourceFiles") or []:
                    self.agent.download_resource(machine, resource, f"{task_dir}/wd", _task_user(admin))
            pid = self._spawn(machine, task_dir, str(spec.get("commandLine", "")), launch["env"], admin,
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

    def _save_job_task(self, row_key: str, launch: dict[str, Any], kind: str, info: dict[str, Any]) -> None:
        with self.db.write() as s:
            row = s.get(models.JobNodeTask, row_key)
            if row is None:
                row = models.JobNodeTask(key=row_key, job_key=launch["job_key"], node_key=launch["node_key"],
                                         pool_id=launch["pool_id"], node_id=launch["node_id"],
                                         node_url=launch["node_url"])
                s.add(row)
            setattr(row, kind, info)

    def _releases_pending(self, job: models.Job) -> bool:
        """Start the job's release task on every node that ran its preparation; True while any still runs."""
        rel = jobtasks.release(job.spec)
        if rel is None:
            return False
        launches: list[tuple[str, dict[str, Any]]] = []
        with self.db.read() as s:
            for row in s.scalars(select(models.JobNodeTask).where(models.JobNodeTask.job_key == job.key)):
                if not row.preparation or (row.release or {}).get("state") == "completed":
                    continue
                node = s.get(models.Node, row.node_key)
                pool = s.get(models.Pool, node.pool_key) if node is not None else None
                if node is None or pool is None or self.agent.status(node.machine_id) != "running":
                    continue  # the node is gone: nothing to release there
                account_url = f"{self.base_url}/batch/{job.account_key.rsplit('/', 1)[-1]}"
                launches.append((row.key, _special_launch(job, rel, jobtasks.RELEASE_ID, pool, node, account_url,
                                                          self._for_nodes(account_url))))
        for row_key, launch in launches:
            with self._lock:
                if row_key in self._releasing:
                    continue
                self._releasing.add(row_key)
            self._waiters.submit(self._release, row_key, launch)
        return bool(launches)

    def _release(self, row_key: str, launch: dict[str, Any]) -> None:
        # The key stays in ``_releasing`` once the run is recorded: a pass that read the rows before it ended
        # must not start it again.
        try:
            self._run_job_task(row_key, launch, "release")
        except Exception:
            log.exception("the job release task %s failed to run", row_key)
            with self._lock:
                self._releasing.discard(row_key)
        if callable(self.nudge):
            self.nudge()

    def _upload_outputs(self, item: Finished, machine: str, task_dir: str, outputs: list[dict[str, Any]],
                        env: dict[str, str], admin: bool) -> Finished:
        """Upload the output files the attempt's outcome asks for; a failed upload fails the task."""
        if not outputs or not self.agent.transfers_enabled:
            return item
        failed = item.exit_code != 0 or item.timed_out or item.error is not None
        lines: list[str] = []
        failure = None
        for output in outputs:
            if not taskfiles.wants_upload(output, item.exit_code, failed):
                continue
            try:
                lines += self.agent.upload_output(machine, output, env, _task_user(admin))["log"]
            except TransferError as exc:
                lines.append(f"ERROR {exc.code}: {exc.message}")
                failure = failure or exc.failure_info()
        try:
            self.agent.write_file(machine, f"{task_dir}/fileuploadout.txt", "".join(
                f"{line}\n" for line in lines if not line.startswith("ERROR")).encode())
            self.agent.write_file(machine, f"{task_dir}/fileuploaderr.txt", "".join(
                f"{line}\n" for line in lines if line.startswith("ERROR")).encode())
        except OSError:
            log.warning("could not write the upload log of %s", item.task_key)
        if failure is not None:
            item.failure = failure
        return item

    def _finish(self, item: Finished) -> None:
        self._done.put(item)
        if callable(self.nudge):
            self.nudge()

    def _await(self, key: str, attempt: str, pid: int) -> Finished:
        """Wait for an attempt's process to end; it is no longer killable then."""
        try:
            result = self.agent.wait(pid) or {}
            item = Finished(key, attempt, result.get("exitCode"), bool(result.get("timedOut")), result.get("error"))
        except Exception as exc:
            item = Finished(key, attempt, None, error=str(exc))
        with self._lock:
            if self._running.get(key, (None, 0))[0] == attempt:
                self._running.pop(key, None)
        return item

    def _wait(self, key: str, attempt: str, pid: int) -> None:
        self._finish(self._await(key, attempt, pid))

    # --- results -------------------------------------------------------------------------------------------------
    def _record_finished(self) -> int:
        batch: list[Finished] = []
        while True:
            try:
                batch.append(self._done.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return 0
        now = self.clock.now()
        with self.db.write() as s, s.no_autoflush:
            held = _preload(s, [item.task_key for item in batch])  # noqa: F841 - keeps the rows in the identity map
            for item in batch:
                task = s.get(models.Task, item.task_key)
                if task is None or task.attempt != item.attempt:
                    continue
                node = s.get(models.Node, task.node_key) if task.node_key else None
                if node is not None:
                    tasks.free_slot(node, task, self.clock)
                    node.total_tasks_run += 1
                    if item.exit_code == 0 and not item.timed_out:
                        node.total_tasks_succeeded += 1
                try:
                    self._complete(s, task, item, now)
                except BAD_RECORD as exc:  # its exit options, say
                    self._reject(task, exc)
        return len(batch)

    def _complete(self, s: Any, task: models.Task, item: Finished, now: Any) -> None:
        if item.lost:
            tasks.requeue(task, self.clock)
            return
        info = dict(task.execution_info)
        task.attempt, task.pid = None, None
        info["endTime"] = timefmt.format_timestamp(now)
        # A file transfer that failed is not retried; otherwise the process's end decides.
        failure = item.failure or tasks.run_failure(item.exit_code, item.timed_out, item.error)
        if item.exit_code is not None:
            info["exitCode"] = item.exit_code
        else:
            info.pop("exitCode", None)
        retries = self._max_retries(s, task)
        if failure is not None and not item.timed_out and item.failure is None and \
                (retries == -1 or int(info.get("retryCount", 0)) < retries):
            info["retryCount"] = int(info.get("retryCount", 0)) + 1
            info["lastRetryTime"] = timefmt.format_timestamp(now)
            info["failureInfo"] = failure
            info["result"] = "failure"
            task.execution_info = info
            task.node_key = None
            tasks.set_state(task, self.clock, "active")
            return
        info["result"] = "success" if failure is None else "failure"
        if failure is None:
            info.pop("failureInfo", None)
        else:
            info["failureInfo"] = failure
        task.execution_info = info
        tasks.set_state(task, self.clock, "completed")
        task.etag = etags.new_etag()
        task.last_modified = now
        if task.node_key is not None:
            task.files_expire_at = now + tasks.retention(task.spec)
        self._job_action(s, task)
        self._maybe_complete_job(s, task.job_key)

    @staticmethod
    def _max_retries(s: Any, task: models.Task) -> int:
        """The task's own ``maxTaskRetryCount``, else its job's (-1: retry without limit). A value that is not
        an integer (a record written by hand) counts as no retries: the task must end."""
        own = _constraints(task.spec).get("maxTaskRetryCount")
        if own is None:
            job = s.get(models.Job, task.job_key)
            own = _constraints(job.spec if job is not None else {}).get("maxTaskRetryCount")
        return own if isinstance(own, int) and not isinstance(own, bool) and own >= -1 else 0

    def _reject(self, task: models.Task, exc: Exception) -> None:
        """Complete a task whose stored record cannot be run (in the scheduling transaction)."""
        log.warning("task %s cannot be run, its record is invalid: %r", task.key, exc)
        info = dict(task.execution_info or {})
        now = timefmt.format_timestamp(self.clock.now())
        info.update({"startTime": info.get("startTime") or now, "endTime": now, "result": "failure",
                     "failureInfo": {"category": "servererror", "code": "TaskRecordInvalid",
                                     "message": f"The task's stored definition cannot be run: {exc}. Delete the "
                                                "task and add it again.", "details": []}})
        task.execution_info = info
        task.attempt, task.pid = None, None
        tasks.set_state(task, self.clock, "completed")
        task.etag = etags.new_etag()
        task.last_modified = self.clock.now()

    def _job_action(self, s: Any, task: models.Task) -> None:
        """What the completed task's exit options ask of its job (only jobs that perform exit-option actions)."""
        job = s.get(models.Job, task.job_key)
        if job is None or job.state != "active":
            return
        action = exits.job_action(task.spec, job.spec, task.execution_info)
        if action == "terminate":
            job_rules.terminate(job, self.clock, "TaskFailed")
        elif action == "disable":
            job_rules.disable(job, self.clock, "requeue")
            job_rules.touch(job, self.clock)

    def _maybe_complete_job(self, s: Any, job_key: str) -> None:
        job = s.get(models.Job, job_key)
        if job is None or job.state != "active" or job.spec.get("onAllTasksComplete") != "terminatejob":
            return
        s.flush()
        open_tasks = s.scalar(select(models.Task.key).where(models.Task.job_key == job_key,
                                                            models.Task.state != "completed").limit(1))
        if open_tasks is None:
            job.execution_info = {**job.execution_info, "terminateReason": "AllTasksComplete"}
            job_rules.set_state(job, self.clock, "terminating")
            if jobtasks.release(job.spec) is None:  # else the job completes once its release tasks have run
                job_rules.set_state(job, self.clock, "completed")
            job_rules.touch(job, self.clock)

    # --- job state changes ---------------------------------------------------------------------------------------
    def _job_transitions(self) -> None:
        with self.db.read() as s:
            moving = list(s.scalars(select(models.Job).where(models.Job.state.in_(
                ("terminating", "deleting", "disabling", "enabling")))))
        for job in moving:
            try:
                self._drive_job(job.key)
            except BAD_RECORD:  # one job's record must not stop the others
                log.exception("job %s: its state change failed (retried next pass)", job.key)

    def _drive_job(self, job_key: str) -> None:
        with self.db.read() as s:
            job = s.get(models.Job, job_key)
            if job is None:
                return
            running = list(s.scalars(select(models.Task).where(models.Task.job_key == job_key,
                                                               models.Task.attempt.is_not(None))))
        option = str(job.execution_info.get("disableTasks", "requeue"))
        if job.state == "disabling" and option != "wait" and running:
            self._take_off([t.key for t in running], option)
            running = []
        if job.state in ("terminating", "deleting"):
            for task in running:
                self.kill(task.key)
        if running and job.state in ("terminating", "deleting", "disabling"):
            return  # wait for the attempts to end (their results arrive through the queue)
        if job.state in ("terminating", "deleting") and self._releases_pending(job):
            return  # the job's release tasks run on its nodes first
        leftovers: list[tuple[str, str]] = []
        with self.db.write() as s:
            job = s.get(models.Job, job_key)
            if job is None:
                return
            if job.state == "deleting":
                node_keys = set()
                for task in tasks.list_tasks(s, job):
                    node_keys.add(task.node_key)
                    s.delete(task)
                for row in s.scalars(select(models.JobNodeTask).where(models.JobNodeTask.job_key == job.key)):
                    node_keys.add(row.node_key)
                    s.delete(row)
                # A deleted job's directories go from every node it ran on (as in Azure).
                for key in node_keys - {None}:
                    node = s.get(models.Node, key)
                    if node is not None:
                        leftovers.append((node.machine_id, f"{node_rules.NODE_ROOT}/workitems/{job.job_id}"))
                s.delete(job)
            elif job.state == "terminating":
                now = self.clock.now()
                for task in tasks.list_tasks(s, job):
                    if task.state != "completed":
                        tasks.set_state(task, self.clock, "completed")
                        task.execution_info = {**task.execution_info, "endTime": timefmt.format_timestamp(now)}
                job_rules.set_state(job, self.clock, "completed")
                job_rules.touch(job, self.clock)
            elif job.state == "disabling":
                job_rules.set_state(job, self.clock, "disabled")
            elif job.state == "enabling":
                job_rules.set_state(job, self.clock, "active")
        for machine, path in leftovers:
            with contextlib.suppress(OSError):
                self.agent.remove_path(machine, path)

    def _take_off(self, task_keys: list[str], option: str) -> None:
        """End running attempts of a job being disabled: ``requeue`` puts the tasks back in the queue,
        ``terminate`` completes them as failed. The attempt is cleared first, so the killed process's exit is
        ignored when it arrives."""
        now = self.clock.now()
        with self.db.write() as s:
            for key in task_keys:
                task = s.get(models.Task, key)
                if task is None or task.attempt is None:
                    continue
                node = s.get(models.Node, task.node_key) if task.node_key else None
                if node is not None:
                    tasks.free_slot(node, task, self.clock)
                if option != "terminate":
                    tasks.requeue(task, self.clock)
                    continue
                task.attempt, task.pid = None, None
                task.execution_info = {**task.execution_info, "result": "failure",
                                       "endTime": timefmt.format_timestamp(now), "failureInfo": {
                                           "category": "usererror", "code": "TaskEnded",
                                           "message": "The task was terminated because its job was disabled.",
                                           "details": []}}
                tasks.set_state(task, self.clock, "completed")
        for key in task_keys:
            self.kill(key)

    def kill(self, task_key: str) -> None:
        with self._lock:
            entry = self._running.get(task_key)
        if entry is not None:
            try:
                self.agent.kill(entry[1])
            except Exception:
                log.exception("could not kill task %s", task_key)

    # --- recovery after a restart --------------------------------------------------------------------------------
    def _recover(self) -> None:
        with self.db.write() as s:
            # Preparation and release runs cut short by the restart run again.
            for row in s.scalars(select(models.JobNodeTask)):
                if (row.preparation or {}).get("state") == "running":
                    row.preparation = None
                if (row.release or {}).get("state") == "running":
                    row.release = None
        with self.db.read() as s:
            stuck = [(t.key, t.attempt, t.pid, t.node_key, t.node_info, t.spec.get("outputFiles") or [],
                      _recovered_env(s, t), _is_admin(t.spec)) for t in s.scalars(
                select(models.Task).where(models.Task.attempt.is_not(None)))]
            machines = {n.key: n.machine_id for n in s.scalars(select(models.Node))}
        for key, attempt, pid, node_key, node_info, outputs, env, admin in stuck:
            assert attempt is not None
            machine = machines.get(node_key or "")
            exit_key = f"{node_rules.NODE_ROOT}/{node_info['taskRootDirectory']}" if machine and node_info else None
            status = self.agent.read_exit(machine, exit_key) if machine and exit_key else None
            # The pid may not have been recorded yet when the server died: find the helper by its exit file.
            live = self.agent.find_spawned(machine, exit_key, pid) if machine and exit_key and status is None \
                else None
            # Output files of an attempt that ended while the server was down are uploaded now.
            after = (machine, f"{node_rules.NODE_ROOT}/{node_info['taskRootDirectory']}", outputs, env, admin) \
                if machine and node_info and outputs else None
            if status is not None:
                item = Finished(key, attempt, status["exitCode"], bool(status["timedOut"]))
                if after is None:
                    self._done.put(item)
                else:
                    self._waiters.submit(self._upload_and_finish, item, after)
            elif live is not None and machine and self.agent.status(machine) == "running":
                self._waiters.submit(self._poll_exit, key, attempt, live, machine, exit_key, after)
            else:
                self._done.put(Finished(key, attempt, None, lost=True))

    def _upload_and_finish(self, item: Finished, after: _After) -> None:
        self._finish(self._upload_outputs(item, *after))

    def _poll_exit(self, key: str, attempt: str, pid: int, machine: str, exit_key: str | None,
                   after: _After | None) -> None:
        while self.agent.alive(pid):
            time.sleep(0.2)
        status = self.agent.read_exit(machine, exit_key) if exit_key is not None else None
        if status is None:
            self._finish(Finished(key, attempt, None, lost=True))
            return
        item = Finished(key, attempt, status["exitCode"], bool(status["timedOut"]))
        self._finish(self._upload_outputs(item, *after) if after is not None else item)


def _preload(s: Any, task_keys: list[str]) -> list[Any]:
    """Load these tasks, their nodes and jobs in three queries: ``s.get`` then finds them without a query each.
    The caller keeps the returned rows referenced (the session's identity map holds them only weakly)."""
    tasks_ = list(s.scalars(select(models.Task).where(models.Task.key.in_(task_keys))))
    node_keys = {t.node_key for t in tasks_ if t.node_key}
    nodes = list(s.scalars(select(models.Node).where(models.Node.key.in_(node_keys)))) if node_keys else []
    jobs = list(s.scalars(select(models.Job).where(models.Job.key.in_({t.job_key for t in tasks_}))))
    return [*tasks_, *nodes, *jobs]


def _special_launch(job: models.Job, spec: dict[str, Any], default_id: str, pool: models.Pool, node: models.Node,
                    account_url: str, node_account_url: str) -> dict[str, Any]:
    """How to run a job preparation or release task on a node (plain data, usable outside the session)."""
    tid = jobtasks.task_id(spec, default_id)
    root = f"workitems/{job.job_id}/job-1/{tid}"
    task_dir = f"{node_rules.NODE_ROOT}/{root}"
    node_url = f"{account_url}/pools/{pool.pool_id}/nodes/{node.node_id}"
    env = node_rules.base_environment(account_url.rsplit("/", 1)[-1], node_account_url, pool, node)
    env.update({"AZ_BATCH_JOB_ID": job.job_id, "AZ_BATCH_TASK_ID": tid, "AZ_BATCH_TASK_DIR": task_dir,
                "AZ_BATCH_TASK_WORKING_DIR": f"{task_dir}/wd", "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin"})
    if default_id == jobtasks.RELEASE_ID and (prep := jobtasks.preparation(job.spec)) is not None:
        prep_dir = f"{node_rules.NODE_ROOT}/workitems/{job.job_id}/job-1/" \
                   f"{jobtasks.task_id(prep, jobtasks.PREPARATION_ID)}"
        env.update({"AZ_BATCH_JOB_PREP_DIR": prep_dir, "AZ_BATCH_JOB_PREP_WORKING_DIR": f"{prep_dir}/wd"})
    for item in [*(job.spec.get("commonEnvironmentSettings") or []), *(spec.get("environmentSettings") or [])]:
        env[str(item.get("name"))] = str(item.get("value", ""))
    return {"spec": spec, "job_key": job.key, "node_key": node.key, "pool_id": pool.pool_id, "node_id": node.node_id,
            "node_url": node_url, "machine": node.machine_id, "task_dir": task_dir, "root": root,
            "root_url": f"{node_url}/files/{root}", "env": env}


def _recovered_env(s: Any, task: models.Task) -> dict[str, str]:
    """Enough of an attempt's environment to expand its output file patterns after a restart."""
    if not task.spec.get("outputFiles") or not task.node_info:
        return {}
    task_dir = f"{node_rules.NODE_ROOT}/{task.node_info['taskRootDirectory']}"
    job = s.get(models.Job, task.job_key)
    env = {"AZ_BATCH_TASK_DIR": task_dir, "AZ_BATCH_TASK_WORKING_DIR": f"{task_dir}/wd",
           "AZ_BATCH_TASK_ID": task.task_id, "AZ_BATCH_JOB_ID": job.job_id if job is not None else ""}
    for item in [*((job.spec.get("commonEnvironmentSettings") or []) if job is not None else []),
                 *(task.spec.get("environmentSettings") or [])]:
        env[str(item.get("name"))] = str(item.get("value", ""))
    return env


# What uploading an attempt's output files needs after a restart: machine, task dir, outputs, env, admin.
_After = tuple[str, str, list[dict[str, Any]], dict[str, str], bool]


def _is_admin(spec: dict[str, Any]) -> bool:
    return str(((spec.get("userIdentity") or {}).get("autoUser") or {}).get("elevationLevel", "")).lower() == "admin"


def _task_user(admin: bool) -> str | None:
    """Who a task's processes (and its file transfers) run as in the node: its root, or the unprivileged user."""
    return None if admin else str(NOBODY)


# What reading a malformed stored record raises (a spec written by hand, or by an older version).
BAD_RECORD = (TypeError, ValueError, AttributeError, KeyError, OverflowError)


def _constraints(spec: dict[str, Any]) -> dict[str, Any]:
    found = spec.get("constraints")
    return found if isinstance(found, dict) else {}


def _settings(items: Any, where: str) -> dict[str, str]:
    """``environmentSettings``-like lists of {"name", "value"} (a ValueError names what is wrong)."""
    if items is None:
        return {}
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str)
                                              for i in items):
        raise ValueError(f"{where} must be a list of {{name, value}} objects")
    return {i["name"]: str(i.get("value", "")) for i in items}


def _plan(task: models.Task, job: models.Job) -> dict[str, Any]:
    """What running the task needs from its and its job's specs, read (and checked) before anything changes."""
    env = _settings(job.spec.get("commonEnvironmentSettings"), "the job's commonEnvironmentSettings")
    env.update(_settings(task.spec.get("environmentSettings"), "environmentSettings"))
    identity = task.spec.get("userIdentity") or {}
    if not isinstance(identity, dict) or not isinstance(identity.get("autoUser") or {}, dict):
        raise ValueError("userIdentity must be an object")
    admin = _is_admin(task.spec)
    constraints = task.spec.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise ValueError("constraints must be an object")
    limit_text = constraints.get("maxWallClockTime")
    timeout = timefmt.parse_duration(str(limit_text)).total_seconds() if limit_text else None
    resources, outputs = task.spec.get("resourceFiles") or [], task.spec.get("outputFiles") or []
    if not isinstance(resources, list) or not isinstance(outputs, list):
        raise ValueError("resourceFiles and outputFiles must be lists")
    return {"env": env, "admin": admin, "timeout": timeout, "command": str(task.spec.get("commandLine", "")),
            "resources": resources, "outputs": outputs}
