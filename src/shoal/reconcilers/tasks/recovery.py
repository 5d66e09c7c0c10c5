"""The recovery stage, run once before the first pass: the attempts a previous server process left behind.

The machine helper that runs a task writes its final status next to its output, so after a crash of the server
a finished attempt is recognised from that file (its output files are uploaded now if it has any), a live one
is watched again, and a vanished one is requeued. Preparation and release runs cut short run again.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from shoal.domain.batch import assignment
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch.outcomes import Finished
from shoal.domain.host import HostAgent
from shoal.reconcilers.tasks import multi, node_ops
from shoal.reconcilers.tasks.attempts import Attempts
from shoal.reconcilers.tasks.job_tasks import JobTaskRuns
from shoal.store import models
from shoal.store.db import Database


class Recovery:
    def __init__(self, db: Database, agent: HostAgent, attempts: Attempts, job_tasks: JobTaskRuns) -> None:
        self.db, self.agent, self.attempts, self.job_tasks = db, agent, attempts, job_tasks

    def run(self) -> None:
        self.job_tasks.reset_interrupted()
        with self.db.read() as s:
            stuck = []
            subtask_nodes: dict[str, list[tuple[int, str]]] = {}  # multi-instance tasks: (subtask id, node key)
            for t in s.scalars(select(models.Task).where(models.Task.attempt.is_not(None))):
                job = s.get(models.Job, t.job_key) if t.spec.get("outputFiles") and t.node_info else None
                stuck.append((t.key, t.attempt, t.pid, t.node_key, t.node_info, t.spec.get("outputFiles") or [],
                              assignment.recovered_env(t, job), assignment.is_admin(t.spec)))
                if t.subtasks:
                    subtask_nodes[t.key] = [(int(sub["id"]), str(sub["nodeKey"])) for sub in t.subtasks
                                            if sub.get("state") != "completed" and sub.get("nodeKey")]
            node_keys = sorted({t[3] for t in stuck if t[3]} | {k for subs in subtask_nodes.values() for _, k in subs})
            machines = dict(s.execute(select(models.Node.key, models.Node.machine_id).where(
                models.Node.key.in_(node_keys))).all()) if node_keys else {}
        for key, attempt, pid, node_key, node_info, outputs, env, admin in stuck:
            assert attempt is not None
            machine = machines.get(node_key or "")
            exit_key = f"{node_rules.NODE_ROOT}/{node_info['taskRootDirectory']}" if machine and node_info else None
            status = self.agent.read_exit(machine, exit_key) if machine and exit_key else None
            # The pid may not have been recorded yet when the server died: find the helper by its exit file.
            live = self.agent.find_spawned(machine, exit_key, pid) if machine and exit_key and status is None \
                else None
            # Output files of an attempt that ended while the server was down are uploaded now.
            after: node_ops.After | None = \
                (machine, f"{node_rules.NODE_ROOT}/{node_info['taskRootDirectory']}", outputs, env, admin) \
                if machine and node_info and outputs else None
            if key in subtask_nodes and machine and exit_key:
                # A multi-instance attempt: its end is the primary's, then the whole is cleaned up.
                subs = [(i, machines[k]) for i, k in subtask_nodes[key] if k in machines]
                self.attempts.submit(self._recover_multi, key, attempt, machine, exit_key, status, live, subs, after)
                continue
            if status is not None:
                item = Finished(key, attempt, status["exitCode"], bool(status["timedOut"]))
                if after is None:
                    self.attempts.done.put(item)
                else:
                    self.attempts.submit(self._upload_and_finish, item, after)
            elif live is not None and machine and self.agent.status(machine) == "running":
                self.attempts.submit(self._poll_exit, key, attempt, live, machine, exit_key, after)
            else:
                self.attempts.done.put(Finished(key, attempt, None, lost=True))

    def _recover_multi(self, key: str, attempt: str, machine: str, exit_key: str, status: dict[str, Any] | None,
                       live: int | None, subs: list[tuple[int, str]], after: node_ops.After | None) -> None:
        """A multi-instance attempt left behind: wait for its application command if it still runs; an
        attempt cut short in its coordination phase is lost (requeued). Its processes on every node end."""
        if status is None and live is not None and self.agent.status(machine) == "running":
            while self.agent.alive(live):
                time.sleep(0.2)
            status = self.agent.read_exit(machine, exit_key)
        item = Finished(key, attempt, None, lost=True) if status is None else \
            Finished(key, attempt, status["exitCode"], bool(status["timedOut"]))
        if status is not None and after is not None:
            item = node_ops.upload_outputs(self.agent, item, *after)
        results: dict[int, dict[str, Any]] = {}
        for sub_id, sub_machine in subs:
            sub_status = self.agent.read_exit(sub_machine, multi.coordination_key(exit_key))
            if sub_status is not None:
                results[sub_id] = {"exitCode": sub_status["exitCode"]}
        multi.clean(self.agent, [machine, *(m for _, m in subs)], exit_key)
        item.subtasks = results
        self.attempts.finish(item)

    def _upload_and_finish(self, item: Finished, after: node_ops.After) -> None:
        self.attempts.finish(node_ops.upload_outputs(self.agent, item, *after))

    def _poll_exit(self, key: str, attempt: str, pid: int, machine: str, exit_key: str | None,
                   after: node_ops.After | None) -> None:
        while self.agent.alive(pid):
            time.sleep(0.2)
        status = self.agent.read_exit(machine, exit_key) if exit_key is not None else None
        if status is None:
            self.attempts.finish(Finished(key, attempt, None, lost=True))
            return
        item = Finished(key, attempt, status["exitCode"], bool(status["timedOut"]))
        self.attempts.finish(node_ops.upload_outputs(self.agent, item, *after) if after is not None else item)
