"""Running a multi-instance task (see :mod:`shoal.domain.batch.multi_instance` for the rules), on a waiter
thread, through the host agent:

0. an earlier attempt of the task that still runs in this process (taken off when one of its nodes was lost)
   is killed and waited for, and what any earlier attempt left running on the new nodes is killed: the
   attempts share the task directory, by which step 4 finds the processes to kill;
1. every instance's node gets the task directory (``AZ_BATCH_TASK_SHARED_DIR``) and the common resource files;
2. the coordination command starts on every node at once; all must return 0 (the first failure fails the
   attempt with its exit code, retried as any task);
3. the primary downloads the task's resource files and runs the application command (the task's command line);
   its end is the attempt's end (output files uploaded as usual);
4. whatever the coordination commands left running in the background is killed on every node: the processes
   inside the node whose environment names this task's shared directory.

Coordination output: ``stdout.txt``/``stderr.txt`` of each subtask's directory; on the primary's node, where the
application command writes those, ``coordination-stdout.txt``/``coordination-stderr.txt``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shoal.core.hosterrors import HostUnavailable, TransferError
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch.assignment import Launch, MultiLaunch, task_user
from shoal.domain.batch.outcomes import Finished
from shoal.domain.host import HostAgent
from shoal.reconcilers.tasks import node_ops
from shoal.reconcilers.tasks.attempts import Attempts

log = logging.getLogger(__name__)

PREVIOUS_GRACE = 120.0  # seconds a new attempt waits for its task's previous attempt (taken off) to end

# Kills the processes of a node whose environment holds AZ_BATCH_TASK_SHARED_DIR=$1 (run as the node's root).
_CLEAN = ('for p in /proc/[0-9]*; do '
          'if tr "\\000" "\\n" < "$p/environ" 2>/dev/null | grep -qxF "AZ_BATCH_TASK_SHARED_DIR=$1"; '
          'then kill -9 "${p#/proc/}" 2>/dev/null; fi; done; exit 0')


def coordination_key(task_dir: str) -> str:
    """Where the agent keeps a coordination command's final status (the application's is ``task_dir``)."""
    return f"{task_dir}#coordination"


def clean(agent: HostAgent, machines: list[str], task_dir: str) -> None:
    """Kill what the task's commands left running on these nodes."""
    for machine in machines:
        try:
            agent.run(machine, ["/bin/sh", "-c", _CLEAN, "sh", task_dir],
                      env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=60)
        except Exception:
            log.warning("could not end the background processes of %s on %s", task_dir, machine, exc_info=True)


class MultiRunner:
    def __init__(self, agent: HostAgent, attempts: Attempts, prepared: Callable[[Launch], bool]) -> None:
        self.agent, self.attempts, self._prepared = agent, attempts, prepared

    def run(self, launch: Launch) -> None:
        """One attempt of a multi-instance task, start to end (a waiter thread's job)."""
        ended, previous, previous_ended = self.attempts.begin_run(launch.key, launch.attempt)
        try:
            if previous is not None and previous_ended is not None:
                self._end_previous(launch.key, previous, previous_ended)
            self._attempt(launch)
        finally:
            self.attempts.end_run(launch.key, launch.attempt, ended)

    def _end_previous(self, key: str, previous: str, ended: threading.Event) -> None:
        """An earlier attempt of this task was taken off (its task requeued when one of its nodes was lost) and
        still runs here: it ends first. Its processes share this attempt's task directory, and its last step
        (``clean``) would kill this attempt's."""
        deadline = time.monotonic() + PREVIOUS_GRACE
        self.attempts.doom(key, previous)  # what it starts from now on dies too
        while not ended.wait(1.0):
            if time.monotonic() > deadline:
                log.warning("task %s: its previous attempt has not ended; the new one starts anyway", key)
                return

    def _attempt(self, launch: Launch) -> None:
        multi = launch.multi
        assert multi is not None
        results: dict[int, dict[str, object]] = {}
        try:
            if launch.prepare is not None and not self._prepared(launch):
                item = Finished(launch.key, launch.attempt, None, lost=True)
            else:
                item = self._run(launch, multi, results)
        except HostUnavailable:
            item = Finished(launch.key, launch.attempt, None, lost=True)
        except Exception as exc:
            log.exception("multi-instance task %s failed to run", launch.key)
            item = Finished(launch.key, launch.attempt, None, error=str(exc))
        finally:
            self.attempts.ended_extra(launch.key)
        clean(self.agent, [i.machine for i in multi.instances], launch.task_dir)
        item.subtasks = {k: dict(v) for k, v in results.items() if k > 0}
        self.attempts.finish(item)

    def _run(self, launch: Launch, multi: MultiLaunch, results: dict[int, dict[str, object]]) -> Finished:
        key, attempt, task_dir, admin = launch.key, launch.attempt, launch.task_dir, launch.admin
        user = task_user(admin)
        deadline = time.monotonic() + launch.timeout if launch.timeout else None

        def remaining() -> float | None:
            return None if deadline is None else max(0.1, deadline - time.monotonic())

        # What an earlier attempt of this task left on these nodes (before a restart of the server, say) goes.
        clean(self.agent, [inst.machine for inst in multi.instances], task_dir)
        for inst in multi.instances:
            node_ops.prepare_dir(self.agent, inst.machine, task_dir, admin)
            self.agent.clear_exit(inst.machine, coordination_key(task_dir))
        try:
            for inst in multi.instances:
                for resource in multi.common_resources:
                    self.agent.download_resource(inst.machine, resource, task_dir, user)
        except TransferError as exc:
            return Finished(key, attempt, None, failure=exc.failure_info())
        pids: list[tuple[int, int]] = []
        for inst in multi.instances:
            prefix = "coordination-" if inst.id == 0 else ""
            pid = self.agent.spawn(inst.machine, node_rules.command_argv(multi.coordination), env=inst.env,
                                   cwd=f"{task_dir}/wd", user=user, stdout=f"{task_dir}/{prefix}stdout.txt",
                                   stderr=f"{task_dir}/{prefix}stderr.txt", timeout=remaining(),
                                   exit_key=coordination_key(task_dir))
            self.attempts.started_extra(key, attempt, pid)
            pids.append((inst.id, pid))
        failed: Finished | None = None
        for instance_id, pid in pids:
            result = self.agent.wait(pid) or {}
            if result.get("lost"):
                failed = failed or Finished(key, attempt, None, lost=True)
                continue
            code = result.get("exitCode")
            results[instance_id] = {"exitCode": code}
            if code != 0 or result.get("timedOut") or result.get("error"):
                failed = failed or Finished(key, attempt, code, bool(result.get("timedOut")), result.get("error"))
        self.attempts.ended_extra(key)
        if failed is not None:
            return failed
        primary = multi.instances[0]
        try:
            for resource in launch.resources:
                self.agent.download_resource(primary.machine, resource, f"{task_dir}/wd", user)
        except TransferError as exc:
            return Finished(key, attempt, None, failure=exc.failure_info())
        pid = node_ops.spawn(self.agent, primary.machine, task_dir, launch.command, primary.env, admin, remaining())
        self.attempts.started(key, attempt, pid)
        item = self.attempts.await_end(key, attempt, pid)
        return node_ops.upload_outputs(self.agent, item, primary.machine, task_dir, launch.outputs, primary.env,
                                       admin)
