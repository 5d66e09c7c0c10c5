"""Start tasks: a node that has booted runs its pool's start task (with retries) before it takes tasks, or,
without ``waitForSuccess``, while it already does. Without a start task a booted node is idle at once.

Start tasks run on a small thread pool of their own; each node's runs at most once at a time in this process.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shoal.core.hosterrors import TransferError
from shoal.core.timefmt import format_timestamp
from shoal.domain.batch import applications
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch.pool_nodes import NodeRecord
from shoal.reconcilers import app_packages
from shoal.reconcilers.allocation.context import Context
from shoal.store import models

log = logging.getLogger(__name__)


class StartTasks:
    def __init__(self, ctx: Context, workers: int = 4) -> None:
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="starttask")
        self._in_flight: set[str] = set()  # node keys whose start task runs in this process
        self._lock = threading.Lock()

    def ready(self, keys: list[str]) -> None:
        """Nodes without a start task are idle as soon as they have booted (one transaction for all)."""
        with self.ctx.db.write() as s:
            node_rules.set_states(s, self.ctx.clock, keys, "starting", "idle")

    def start(self, nodes: list[NodeRecord], pool: models.Pool, account: tuple[str, str]) -> None:
        """Run the pool's start task on nodes that are ``starting`` (or were left ``waitingforstarttask`` with no
        start task running here, as after a restart): their states change in one transaction, then the start
        tasks are queued. Without a start task the nodes are idle at once."""
        start = pool.spec.get("startTask")
        if not app_packages.has_start_work(pool):
            self.ready([n.key for n in nodes])
            return
        with self._lock:
            nodes = [n for n in nodes if n.key not in self._in_flight]
            self._in_flight.update(n.key for n in nodes)
        if not nodes:
            return
        if not start:  # application packages only: installed while the node is starting, then it is idle
            for n in nodes:
                self._pool.submit(self._run, n, pool, account, None, True)
            return
        wait = start.get("waitForSuccess", True) is not False
        info = {"state": "running", "startTime": format_timestamp(self.ctx.clock.now()), "retryCount": 0}
        changed: set[str] = set()
        try:
            with self.ctx.db.write() as s:
                for state in ("starting", "waitingforstarttask"):
                    keys = [n.key for n in nodes if n.state == state]
                    if keys:
                        changed.update(node_rules.set_states(s, self.ctx.clock, keys, state,
                                                             "waitingforstarttask" if wait else "idle",
                                                             values={"start_task_info": info}))
        finally:
            with self._lock:
                self._in_flight.difference_update(n.key for n in nodes if n.key not in changed)
        for n in nodes:
            if n.key in changed:
                self._pool.submit(self._run, n, pool, account, start, wait)

    def _run(self, n: NodeRecord, pool: models.Pool, account: tuple[str, str], start: dict[str, Any] | None,
             wait: bool) -> None:
        try:
            self._body(n, pool, account, start, wait)
        except Exception:
            log.exception("start task on %s failed", n.node_id)
        finally:
            with self._lock:
                self._in_flight.discard(n.key)
            self.ctx.wake()

    def _packages(self, n: NodeRecord, pool: models.Pool) -> dict[str, str] | None:
        """Install the pool's application packages on the node; their environment variables, or None when they
        could not be installed (the node is unusable then, with Azure's ``ApplicationPackageError``)."""
        refs = pool.spec.get("applicationPackageReferences")
        if not refs:
            return {}
        installs, bad = app_packages.resolve(self.ctx.db, pool.account_key, refs, self.ctx.base_url)
        if not bad:
            try:
                app_packages.install(self.ctx.agent, n.machine_id, installs)
                return applications.environment(installs)
            except TransferError as exc:
                found = dict(exc.details)
                bad = [(found.get("ApplicationPackageReference", ""), found.get("Message", exc.message))]
        with self.ctx.db.write() as s:
            node = s.get(models.Node, n.key)
            if node is not None and node_rules.can_become(node.state, "unusable"):
                node_rules.set_state(node, self.ctx.clock, "unusable")
                node.errors = [applications.node_error(bad)]
        return None

    def _download(self, machine_id: str, start: dict[str, Any], wd: str, user: str | None) -> dict[str, Any] | None:
        """The start task's ``resourceFiles`` into its working directory, by the node agent as the task's user;
        the failure info (``BlobNotFound`` ...) when one could not be downloaded, as for a task."""
        if not self.ctx.agent.transfers_enabled:
            return None
        try:
            for resource in start.get("resourceFiles") or []:
                self.ctx.agent.download_resource(machine_id, resource, wd, user)
        except TransferError as exc:
            return exc.failure_info()
        return None

    def _body(self, n: NodeRecord, pool: models.Pool, account: tuple[str, str], start: dict[str, Any] | None,
              wait: bool) -> None:
        agent, clock, machine_id = self.ctx.agent, self.ctx.clock, n.machine_id
        package_env = self._packages(n, pool)
        if package_env is None:
            return
        if start is None:
            with self.ctx.db.write() as s:
                node_rules.set_states(s, clock, [n.key], "starting", "idle")
            return
        root = f"{node_rules.NODE_ROOT}/startup"
        agent.make_dirs(machine_id, [root])
        env = node_rules.base_environment(account[0], account[1], pool, n)
        env.update(package_env)
        env.update({"AZ_BATCH_TASK_DIR": f"{node_rules.NODE_ROOT}/startup",
                    "AZ_BATCH_TASK_WORKING_DIR": f"{node_rules.NODE_ROOT}/startup/wd",
                    "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin"})
        for item in start.get("environmentSettings") or []:
            env[str(item.get("name"))] = str(item.get("value", ""))
        auto = ((start.get("userIdentity") or {}).get("autoUser") or {})
        admin = str(auto.get("elevationLevel", "nonadmin")).lower() == "admin"
        env["AZ_BATCH_TASK_USER_IDENTITY"] = "PoolAdmin" if admin else "PoolNonAdmin"
        user = None if admin else str(node_rules.NOBODY)
        agent.make_dirs(machine_id, [root, f"{root}/wd"], inside_uid=0 if admin else node_rules.NOBODY)
        retries = int(start.get("maxTaskRetryCount", 0) or 0)
        attempt = 0
        result: dict[str, Any] = {}
        started = format_timestamp(clock.now())
        failure = self._download(machine_id, start, f"{root}/wd", user)
        downloaded = failure is None
        while downloaded:
            try:
                argv = node_rules.command_argv(str(start["commandLine"]))
                result = agent.run(machine_id, argv, env=env, cwd=f"{node_rules.NODE_ROOT}/startup/wd",
                                   user=user, stdout=f"{root}/stdout.txt", stderr=f"{root}/stderr.txt")
            except Exception as exc:
                result = {"exitCode": -1, "error": str(exc)}
            code = int(result.get("exitCode", -1))
            if code == 0:
                failure = None
                break
            failure = {"category": "usererror", "code": "CommandProgramNotFound" if code == 127 else "FailureExitCode",
                       "message": "The task process exited with an unexpected exit code" if code != 127 else
                       "The specified command program is not found", "details": [
                           {"name": "Message", "value": str(result.get("error") or f"exit code {code}")}]}
            if retries != -1 and attempt >= retries:
                break
            attempt += 1
        info: dict[str, Any] = {"state": "completed", "startTime": started, "endTime": format_timestamp(clock.now()),
                                "retryCount": attempt, "result": "success" if failure is None else "failure"}
        if downloaded:  # (a start task whose resource files could not be downloaded never ran: no exit code)
            info["exitCode"] = int(result.get("exitCode", -1))
        if failure:
            info["failureInfo"] = failure
        with self.ctx.db.write() as s:
            node = s.get(models.Node, n.key)
            if node is None or node.state not in ("waitingforstarttask", "idle", "running", "offline"):
                return
            node.start_task_info = info
            if node.state == "waitingforstarttask":
                node_rules.set_state(node, clock, "idle" if failure is None else "starttaskfailed")
                if failure is None:
                    node.errors = []
