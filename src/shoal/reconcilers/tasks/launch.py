"""The launch stage: start the attempts the assign stage made, through the host agent, outside any transaction.

The assign stage marked the tasks running; plain attempts are spawned right here, in one batch, a waiter
thread waits for each, and their pids are recorded in one statement. Attempts with files to move or a job
preparation to wait for run whole on a waiter thread (download, run, wait, upload), so they never hold up the
loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shoal.core.clock import Clock
from shoal.core.hosterrors import HostUnavailable, TransferError
from shoal.domain.batch import applications, outcomes
from shoal.domain.batch.assignment import Launch, task_user
from shoal.domain.batch.outcomes import Finished
from shoal.domain.host import HostAgent
from shoal.reconcilers import app_packages
from shoal.reconcilers.tasks import node_ops
from shoal.reconcilers.tasks.attempts import Attempts
from shoal.reconcilers.tasks.multi import MultiRunner
from shoal.store.db import Database

log = logging.getLogger(__name__)


class Launcher:
    def __init__(self, db: Database, clock: Clock, agent: HostAgent, attempts: Attempts,
                 prepared: Callable[[Launch], bool]) -> None:
        self.db, self.clock, self.agent, self.attempts = db, clock, agent, attempts
        self._prepared = prepared  # runs the job's preparation task first (see JobTaskRuns.prepared)
        self.multi = MultiRunner(agent, attempts, prepared)

    def run(self, launches: list[Launch]) -> None:
        slow = [launch for launch in launches if launch.slow]
        fast = [launch for launch in launches if not launch.slow]
        pids = node_ops.spawn_many(self.agent, [_command(launch) for launch in fast])
        started = [(launch, pid) for launch, found in zip(fast, pids, strict=True)
                   if (pid := self._started(launch, found)) is not None]
        for launch, pid in started:
            self.attempts.submit(self.attempts.wait, launch.key, launch.attempt, pid)
        for launch in slow:
            self.attempts.submit(self.multi.run if launch.multi is not None else self._run_with_files, launch)
        if started:
            with self.db.write() as s:  # one statement for the whole batch
                outcomes.record_pids(s, [(launch.key, launch.attempt, pid) for launch, pid in started])

    def _started(self, launch: Launch, found: int | Exception) -> int | None:
        """The attempt's pid, or its end when it could not be started."""
        if isinstance(found, HostUnavailable):  # the node's host is lost or not answering: lost, requeued
            self.attempts.done.put(Finished(launch.key, launch.attempt, None, lost=True))
            return None
        if isinstance(found, Exception):
            self.attempts.done.put(Finished(launch.key, launch.attempt, None, error=str(found)))
            return None
        self.attempts.started(launch.key, launch.attempt, found)
        return found

    def _run_with_files(self, launch: Launch) -> None:
        """One attempt of a task with resource or output files: download, run, wait, upload, report."""
        key, attempt = launch.key, launch.attempt
        try:
            if launch.prepare is not None and not self._prepared(launch):
                # The node may not run this job's tasks (its preparation failed): back to the queue.
                self.attempts.finish(Finished(key, attempt, None, lost=True))
                return
            node_ops.prepare_dir(self.agent, launch.machine, launch.task_dir, launch.admin)
            if launch.bad_packages:
                self.attempts.finish(Finished(key, attempt, None,
                                              failure=applications.task_failure(launch.bad_packages)))
                return
            try:
                app_packages.install(self.agent, launch.machine, launch.packages)
                for resource in launch.resources:
                    self.agent.download_resource(launch.machine, resource, f"{launch.task_dir}/wd",
                                                 task_user(launch.admin))
            except TransferError as exc:
                self.attempts.finish(Finished(key, attempt, None, failure=exc.failure_info()))
                return
            pid = self._started(launch, node_ops.spawn_many(self.agent, [_command(launch)])[0])
            if pid is None:
                return  # _started reported the failure
            item = self.attempts.await_end(key, attempt, pid)
            self.attempts.finish(node_ops.upload_outputs(self.agent, item, launch.machine, launch.task_dir,
                                                         launch.outputs, launch.env, launch.admin))
        except HostUnavailable:
            self.attempts.finish(Finished(key, attempt, None, lost=True))
        except Exception as exc:
            log.exception("task %s failed to run", key)
            self.attempts.finish(Finished(key, attempt, None, error=str(exc)))


def _command(launch: Launch) -> node_ops.Command:
    return launch.machine, launch.task_dir, launch.command, launch.env, launch.admin, launch.timeout
