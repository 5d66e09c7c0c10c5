"""The pool allocation reconciler: drives each pool's nodes toward its targets, and each node through its
lifecycle (creating -> starting -> [waitingforstarttask] -> idle, reboot, reimage, removal).

One pass per pool: claim the pool with a lock token, decide (pure, ``domain.batch.allocation``), write the
intent (new node rows, removals), act on the host outside any transaction, write the results back. A crash
at any point leaves rows that the next pass (after a restart) continues from: nodes still ``creating`` are
booted (booting is idempotent), nodes marked for removal are removed, start tasks are run again.

Nodes of a pool from a gallery version are provisioned from the version's replicas in the pool's region,
spread round robin across them; a replica is a ready-to-mount, flattened copy of the image's disks with a
resident provisioner of its own (``runtime/replicas.py``), so each replica is a provisioning stream and the
streams run side by side. A managed (or marketplace) image is a single source: its nodes boot in a few
streams side by side (one per core, at most 4). Booted nodes are written in batches as they come up
(``idle`` at once without a start task), and the pass that boots a resize's last nodes also ends the
resize. With fewer than one replica per ``SHOAL_NODES_PER_REPLICA`` (300) target nodes the resize still
reaches its target but reports an ``InsufficientReplicas`` warning among its resize errors.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import or_, select

from shoal.core import ids
from shoal.core.clock import Clock
from shoal.core.timefmt import format_timestamp
from shoal.domain import network, resources
from shoal.domain.batch import allocation, natpools, pools, retired, vmsizes
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import tasks as tasks_rules
from shoal.domain.compute import galleries, usage
from shoal.domain.host import HostAgent
from shoal.reconcilers.base import release_claims
from shoal.reconcilers.faults import Faults, FaultSource
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)
LOCK_TTL = timedelta(seconds=120)
PROVISIONING_WORKERS = 8
# Nodes of one managed (or marketplace) image boot this many at a time: most of a hardened boot is kernel work
# outside the interpreter lock (namespaces, a veth pair, mounts), which a second core overlaps.
BOOT_STREAMS = max(1, min(4, os.cpu_count() or 1))
BOOT_FLUSH_INTERVAL = 0.1  # seconds: booted nodes are written (and usable) in batches at least this often


@dataclass(frozen=True)
class Booted:
    """A node's boot: its errors ([] when it is up) and when it ended."""

    errors: list[dict[str, Any]]
    at: datetime


class PoolAllocator:
    name = "pools"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, base_url: str, *, workers: int = 4,
                 faults: FaultSource | None = None, core_quota: int = usage.DEFAULT_CORE_QUOTA,
                 address_space: str = network.DEFAULT_SPACE) -> None:
        self.db, self.clock, self.agent, self.base_url = db, clock, agent, base_url
        self.address_space = address_space  # where pools get their subnets and nodes their addresses
        self.node_base_url = base_url  # Shoal's origin as nodes reach it (their gateway, with networks of their own)
        self.faults = faults
        self.core_quota = core_quota  # the subscriptions' regional vCPU quota (UserSubscription pools)
        self.nodes_per_replica = nodes_per_replica()
        self._start_tasks = ThreadPoolExecutor(workers, thread_name_prefix="starttask")
        # Provisioning streams of one pass (one per image source); more sources than workers take turns.
        self._streams = ThreadPoolExecutor(PROVISIONING_WORKERS, thread_name_prefix="provision")
        self._in_flight: set[str] = set()  # node keys whose start task runs in this process
        self._endpoints_unpublished = True  # the host's forwarding table starts empty
        self._lock = threading.Lock()
        self.nudge: Any = None  # set by the runner owner: wakes this loop when a start task ends
        self.nudge_tasks: Any = None  # set by the runner owner: wakes the scheduler

    # --- the pass ----------------------------------------------------------------------------------------------
    def release_claims(self) -> None:
        release_claims(self.db, models.Pool)

    def run_once(self) -> bool:
        if self._endpoints_unpublished:  # after a start: the host's forwarding table is empty
            self._publish_endpoints()
        with self.db.read() as s:
            keys = set(s.scalars(select(models.Pool.key).where(or_(
                models.Pool.state == "deleting", models.Pool.allocation_state != pools.STEADY))))
            keys |= set(s.scalars(select(models.Node.pool_key).where(or_(
                models.Node.pending != "", models.Node.state.in_(node_rules.TRANSITIONAL))).distinct()))
        more = False
        for key in sorted(keys):
            try:
                more = self.reconcile(key) or more
            except Exception:
                log.exception("pool %s: reconcile pass failed", key)
        return more

    def _claim(self, key: str) -> str | None:
        token = str(uuid.uuid4())
        now = self.clock.now()
        with self.db.write() as s:
            pool = s.get(models.Pool, key)
            if pool is None or (pool.lock_token and pool.lock_expires_at and pool.lock_expires_at > now):
                return None
            pool.lock_token, pool.lock_expires_at = token, now + LOCK_TTL
        return token

    def _release(self, key: str, token: str) -> None:
        with self.db.write() as s:
            pool = s.get(models.Pool, key)
            if pool is not None and pool.lock_token == token:
                pool.lock_token, pool.lock_expires_at = None, None

    def reconcile(self, key: str) -> bool:
        """One pass over a pool; True when it changed something (so another pass should follow at once)."""
        token = self._claim(key)
        if token is None:
            return False
        try:
            return self._reconcile(key, token)
        finally:
            self._release(key, token)

    def _reconcile(self, key: str, token: str) -> bool:
        # 1. load and decide
        with self.db.read() as s:
            pool = s.get(models.Pool, key)
            if pool is None:
                return False
            node_rows = node_rules.list_nodes(s, key)
            blocked = self._image_problem(s, pool)
            account = self._account(s, pool)
            capacity = self._capacity(s, pool)
            replicas = self._replicas(s, pool)
        view = allocation.PoolView(pool.state, pool.allocation_state, pool.target_dedicated, pool.target_low_priority,
                                   pool.resize_started_at, timedelta(seconds=pool.resize_timeout_s))
        decision = allocation.decide(view, [allocation.NodeView(n.key, n.is_dedicated, n.state, n.pending,
                                                                n.running_tasks) for n in node_rows],
                                     self.clock.now(), blocked=blocked, capacity=capacity,
                                     quota_scope="subscription" if self._user_subscription(s, pool) else "account",
                                     max_batch=1 if self._slow() else 1000, replicas=replicas,
                                     nodes_per_replica=self.nodes_per_replica)
        # 2. record intent: new node rows, nodes leaving
        changed = bool(decision.create_dedicated or decision.create_low_priority or decision.remove)
        if changed:
            pool.subnet = self._record(pool, decision)  # (this copy is detached: nothing is written through it)
        # 3. act: boot new nodes, remove leaving ones, reboot/reimage, start tasks
        with self.db.read() as s:
            node_rows = node_rules.list_nodes(s, key)
        self._remove([n for n in node_rows if n.pending == "remove"], pool)
        sources = self._sources(node_rows, replicas)
        self._boot([n for n in node_rows if n.state == "creating"], pool, sources)
        for n in node_rows:
            if n.pending in ("reboot", "reimage"):
                self._restart(n, pool, reimage=n.pending == "reimage", sources=sources)
        with self.db.read() as s:
            starting = [n for n in node_rules.list_nodes(s, key) if n.state in ("starting", "waitingforstarttask")]
        if starting and not pool.spec.get("startTask"):
            self._ready([n.key for n in starting])
            if callable(self.nudge):
                self.nudge()
        else:
            for n in starting:
                self._start_task(n, pool, account)
        if changed or self._endpoints_unpublished:
            self._publish_endpoints()
        # 4. settle
        with self.db.write() as s:
            fresh = s.get(models.Pool, key)
            if fresh is None or fresh.lock_token != token:
                return changed
            if fresh.state == "deleting" and not node_rules.list_nodes(s, key):
                s.delete(fresh)
                return changed
            # A resize is over when its last nodes have booted (in this pass), unless it changed meanwhile.
            unchanged = (fresh.allocation_state, fresh.target_dedicated, fresh.target_low_priority) == (
                pool.allocation_state, pool.target_dedicated, pool.target_low_priority)
            if decision.complete and unchanged and fresh.allocation_state != pools.STEADY and not any(
                    n.pending == "remove" for n in node_rules.list_nodes(s, key)):
                fresh.resize_errors = decision.errors
                pools.set_allocation(fresh, self.clock, pools.STEADY)
                pools.touch(fresh, self.clock)
        with self.db.read() as s:
            pending = any(n.state == "creating" or n.pending == "remove" for n in node_rules.list_nodes(s, key))
        return changed or pending

    # --- intent ------------------------------------------------------------------------------------------------
    def _record(self, pool: models.Pool, decision: allocation.Decision) -> str | None:
        """New node rows and nodes leaving; returns the pool's subnet."""
        now = self.clock.now()
        address = self._public_address  # resolved once, outside the transaction
        with self.db.write() as s:
            existing = {n.key: n for n in node_rules.list_nodes(s, pool.key)}
            for key in decision.remove:
                node = existing.get(key)
                if node is not None and node.pending != "remove":
                    node.pending, node.pending_option = "remove", pool.deallocation_option
            # Each node keeps the NAT port index it is given here for life; a removed node's index is free again.
            used = {i for i in (natpools.node_index(n.endpoints or []) for n in existing.values()) if i is not None}
            creating = decision.create_dedicated + decision.create_low_priority
            addresses = self._addresses(s, pool.key, [n.ip_address for n in existing.values()], creating)
            row = s.get(models.Pool, pool.key)
            subnet = row.subnet if row is not None else None
            if self.agent.gateway is not None and subnet:
                # Machines with networks of their own: the pool's endpoints listen on an address of its own.
                address = (network.public_address(self.address_space, subnet), address[1])
            for i in range(creating):
                node_id = pools.new_node_id(self.clock)
                s.add(models.Node(
                    key=f"{pool.key}/{node_id}", pool_key=pool.key, node_id=node_id,
                    machine_id=f"node-{uuid.uuid4().hex[:16]}", is_dedicated=i < decision.create_dedicated,
                    state="creating", scheduling_state="enabled", state_transition_time=now, allocation_time=now,
                    ip_address=addresses[i], pending="", pending_option="",
                    errors=[], endpoints=natpools.assign(pool.spec, used, *address),
                    total_tasks_run=0, total_tasks_succeeded=0, running_tasks=0,
                    running_slots=0))
            return subnet

    def _addresses(self, s: Any, pool_key: str, used: list[str], count: int) -> list[str]:
        """``count`` free addresses on the pool's subnet (which the pool gets with its first nodes)."""
        if not count:
            return []
        row = s.get(models.Pool, pool_key)
        if row.subnet is None:
            row.subnet = network.allocate_subnet(self.address_space, s.scalars(select(models.Pool.subnet)))
        return network.allocate_addresses(row.subnet, used, count)

    def _publish_endpoints(self) -> None:
        """Forward every node's inbound NAT endpoints to it (the whole table: nodes that left are withdrawn)."""
        with self.db.read() as s:
            rows = s.execute(select(models.Node.ip_address, models.Node.endpoints).where(
                models.Node.endpoints.is_not(None))).all()
        wanted = [{"publicIPAddress": e["publicIPAddress"], "frontendPort": e["frontendPort"], "address": ip,
                   "backendPort": e["backendPort"]}
                  for ip, endpoints in rows for e in endpoints or []
                  if e.get("protocol", "tcp") == "tcp" and e.get("backendPort") is not None]
        try:
            self.agent.publish_endpoints(wanted)
            self._endpoints_unpublished = False
        except Exception:
            log.exception("inbound NAT endpoints could not be published (retried next pass)")

    # --- acting on the host --------------------------------------------------------------------------------------
    def _boot(self, rows: list[models.Node], pool: models.Pool,
              sources: dict[str, dict[str, str]] | None = None) -> None:
        """Boot new nodes: one provisioning stream per image source, the streams side by side.

        A managed image (or a marketplace image) is one source; a gallery version has one per ready replica in
        the pool's region, each an independent ready-to-mount copy (as Azure spreads a pool's deployments over
        a version's replicas); a replica's nodes boot one after another. A single source's nodes boot in
        ``BOOT_STREAMS`` streams."""
        if not rows:
            return
        sources = sources or {}
        faults = self.faults.current(fresh=True) if self.faults is not None else Faults()
        streams: dict[str, list[models.Node]] = {}
        for i, n in enumerate(rows):
            replica = (sources.get(n.machine_id) or {}).get("id")
            # A replica's nodes are built by its one resident provisioner; other nodes boot in side streams.
            streams.setdefault(replica or f"local-{i % BOOT_STREAMS}", []).append(n)
        ready = not pool.spec.get("startTask")
        results: dict[str, Booted] = {}  # booted, not yet written
        lock = threading.Lock()
        flushed = time.monotonic()

        def flush(batch: dict[str, Booted]) -> None:
            self._booted(batch, ready=ready)
            if batch and ready and callable(self.nudge_tasks):
                self.nudge_tasks()  # new idle nodes: the scheduler may use them now

        def provision(stream: list[models.Node]) -> None:
            nonlocal flushed
            for n in stream:
                errs = self._boot_node(pool, n, sources.get(n.machine_id), faults)
                with lock:
                    results[n.key] = Booted(errs, self.clock.now())
                    if time.monotonic() - flushed < BOOT_FLUSH_INTERVAL:
                        continue
                    batch = dict(results)
                    results.clear()
                    flushed = time.monotonic()
                flush(batch)  # nodes come up as they boot, not when the whole pass ends

        if len(streams) == 1:
            provision(rows)
        else:
            for done in [self._streams.submit(provision, stream) for stream in streams.values()]:
                done.result()
        flush(results)

    def _booted(self, results: dict[str, Booted], *, ready: bool) -> None:
        """Record booted nodes: ``starting``, or ``unusable`` with the errors; with ``ready`` (the pool has no
        start task) a node that booted is ``idle`` at once. State times are when each node booted."""
        if not results:
            return
        with self.db.write() as s:
            for node in s.scalars(select(models.Node).where(models.Node.key.in_(list(results)))):
                if node.state != "creating":
                    continue
                booted = results[node.key]
                node.errors = booted.errors
                node.last_boot_time = booted.at
                node_rules.set_state(node, self.clock, "unusable" if booted.errors else "starting", booted.at)
                if ready and not booted.errors:
                    node_rules.set_state(node, self.clock, "idle", booted.at)

    def _boot_node(self, pool: models.Pool, n: models.Node, replica: dict[str, str] | None,
                   faults: Faults) -> list[dict[str, Any]]:
        """Boot one node's machine: its errors ([] when it is up)."""
        try:
            if faults.node_provision_delay:
                time.sleep(faults.node_provision_delay)
            if faults.node_provision_failure:
                raise RuntimeError("provisioning failed (operator fault injection)")
            self._boot_once_more_on_failure(pool, n, replica)
            self._prepare_dirs(n)
            return []
        except Exception as exc:  # a node that cannot boot is unusable, with the reason
            log.warning("node %s could not be provisioned: %s", n.node_id, exc)
            return [{"code": "NodeProvisioningFailed", "message": f"The node could not be started: {exc}",
                     "errorDetails": []}]

    def _boot_once_more_on_failure(self, pool: models.Pool, node: models.Node,
                                   replica: dict[str, str] | None = None) -> None:
        """Boot a node's machine; if that fails (say, a half-made machine left by a crash), tear down what is
        there and try once more before calling the node unusable."""
        try:
            self.agent.boot(self._machine(pool, node, replica))
        except Exception:
            log.info("node %s: boot failed, retrying after a clean-up", node.node_id, exc_info=True)
            self.agent.halt(node.machine_id)
            self.agent.boot(self._machine(pool, node, replica))

    def _machine(self, pool: models.Pool, node: models.Node, replica: dict[str, str] | None) -> dict[str, Any]:
        """What the host agent boots for a node, with the gallery replica it is provisioned from (if any)."""
        machine = node_rules.machine_spec(pool, node, self.address_space)
        if replica is not None:
            machine["replica"] = replica
        return machine

    def _prepare_dirs(self, node: models.Node) -> None:
        root = node_rules.NODE_ROOT
        self.agent.make_dirs(node.machine_id, [f"{root}/{sub}" for sub in ("startup", "workitems", "applications",
                                                                            "fsmounts")])
        self.agent.make_dirs(node.machine_id, [f"{root}/shared"], mode=0o1777)

    def _release_tasks(self, node_keys: list[str], option: str) -> list[str]:
        """Take running tasks off nodes that are leaving or restarting, per the deallocation option.

        ``requeue``/``retaineddata`` put them back in the queue, ``terminate`` ends them as failed, and
        ``taskcompletion`` leaves them running (the node waits). Clearing the attempt makes the scheduler ignore
        the killed process's exit. Returns the nodes that may go now.
        """
        ready = []
        now = self.clock.now()
        with self.db.write() as s:
            for key in node_keys:
                running = list(s.scalars(select(models.Task).where(models.Task.node_key == key,
                                                                   models.Task.attempt.is_not(None))))
                if running and option == "taskcompletion":
                    continue
                for task in running:
                    info = dict(task.execution_info)
                    task.attempt, task.pid = None, None
                    if option == "terminate":
                        info.update({"result": "failure", "endTime": format_timestamp(now), "failureInfo": {
                            "category": "usererror", "code": "TaskEnded",
                            "message": "The task was terminated because its node left the pool or restarted."}})
                        task.execution_info = info
                        tasks_rules.set_state(task, self.clock, "completed")
                    else:
                        tasks_rules.requeue(task, self.clock)
                node = s.get(models.Node, key)
                if node is not None:
                    node.running_tasks = node.running_slots = 0
                ready.append(key)
        return ready

    def _remove(self, rows: list[models.Node], pool: models.Pool) -> None:
        rows = [n for n in rows if self._release_tasks([n.key], n.pending_option or pool.deallocation_option)]
        if not rows:
            return
        # Remembered first: the node's logs stay readable once it is gone (a crash in between leaves a record
        # whose logs are still on the node's drive, which the file API reads all the same).
        with self.db.write() as s:
            replaced = [m for n in rows if (m := retired.remember(s, self.clock, n))]
        for machine_id in replaced:
            self.agent.forget_logs(machine_id)
        for n in rows:
            self.agent.retire(n.machine_id)
            for upper in node_rules.disk_uppers(pool, n):
                self.agent.delete_disk(upper)
        with self.db.write() as s:
            for n in rows:
                node = s.get(models.Node, n.key)
                if node is not None:
                    s.delete(node)

    def _restart(self, n: models.Node, pool: models.Pool, *, reimage: bool,
                 sources: dict[str, dict[str, str]] | None = None) -> None:
        if not self._release_tasks([n.key], n.pending_option or "requeue"):
            return  # taskcompletion: restart once its tasks have finished
        self.agent.halt(n.machine_id, keep_temp=not reimage)
        if reimage:
            for upper in node_rules.disk_uppers(pool, n):
                self.agent.delete_disk(upper)
        errs: list[dict[str, Any]] = []
        problem = None
        with self.db.read() as s:
            problem = self._image_problem(s, pool) if reimage else None
        if problem is not None:
            reason = problem["values"][0]["value"]
            errs = [{"code": "ImageNotFound", "message": f"The node could not be reimaged: {reason}",
                     "errorDetails": []}]
        else:
            try:
                self.agent.boot(self._machine(pool, n, (sources or {}).get(n.machine_id)))
                self._prepare_dirs(n)
            except Exception as exc:
                errs = [{"code": "NodeProvisioningFailed", "message": f"The node could not be restarted: {exc}",
                         "errorDetails": []}]
        with self.db.write() as s:
            node = s.get(models.Node, n.key)
            if node is None:
                return
            node.pending, node.pending_option = "", ""
            node.errors = errs
            node.last_boot_time = self.clock.now()
            node.start_task_info = None
            node_rules.set_state(node, self.clock, "unusable" if errs else "starting")

    def _ready(self, keys: list[str]) -> None:
        """Nodes without a start task are idle as soon as they have booted (one transaction for all)."""
        with self.db.write() as s:
            for node in s.scalars(select(models.Node).where(models.Node.key.in_(keys))):
                if node.state == "starting":
                    node_rules.set_state(node, self.clock, "idle")

    def _start_task(self, n: models.Node, pool: models.Pool, account: tuple[str, str]) -> None:
        start = pool.spec.get("startTask")
        if not start:
            self._ready([n.key])
            return
        with self._lock:
            if n.key in self._in_flight:
                return
            self._in_flight.add(n.key)
        wait = start.get("waitForSuccess", True) is not False
        with self.db.write() as s:
            node = s.get(models.Node, n.key)
            if node is None:
                return
            node.start_task_info = {"state": "running", "startTime": format_timestamp(self.clock.now()),
                                    "retryCount": 0}
            node_rules.set_state(node, self.clock, "waitingforstarttask" if wait else "idle")
        self._start_tasks.submit(self._run_start_task, n.key, n.machine_id, n.node_id, n.is_dedicated, pool, account,
                                 start, wait)

    def _run_start_task(self, key: str, machine_id: str, node_id: str, dedicated: bool, pool: models.Pool,
                        account: tuple[str, str], start: dict[str, Any], wait: bool) -> None:
        try:
            self._start_task_body(key, machine_id, node_id, dedicated, pool, account, start, wait)
        except Exception:
            log.exception("start task on %s failed", node_id)
        finally:
            with self._lock:
                self._in_flight.discard(key)
            if callable(self.nudge):
                self.nudge()

    def _start_task_body(self, key: str, machine_id: str, node_id: str, dedicated: bool, pool: models.Pool,
                         account: tuple[str, str], start: dict[str, Any], wait: bool) -> None:
        root = f"{node_rules.NODE_ROOT}/startup"
        self.agent.make_dirs(machine_id, [root])
        node_stub = models.Node(node_id=node_id, is_dedicated=dedicated)
        env = node_rules.base_environment(account[0], account[1], pool, node_stub)
        env.update({"AZ_BATCH_TASK_DIR": f"{node_rules.NODE_ROOT}/startup",
                    "AZ_BATCH_TASK_WORKING_DIR": f"{node_rules.NODE_ROOT}/startup/wd",
                    "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin"})
        for item in start.get("environmentSettings") or []:
            env[str(item.get("name"))] = str(item.get("value", ""))
        auto = ((start.get("userIdentity") or {}).get("autoUser") or {})
        admin = str(auto.get("elevationLevel", "nonadmin")).lower() == "admin"
        env["AZ_BATCH_TASK_USER_IDENTITY"] = "PoolAdmin" if admin else "PoolNonAdmin"
        user = None if admin else str(node_rules.NOBODY)
        self.agent.make_dirs(machine_id, [root, f"{root}/wd"], inside_uid=0 if admin else node_rules.NOBODY)
        retries = int(start.get("maxTaskRetryCount", 0) or 0)
        attempt = 0
        result: dict[str, Any] = {}
        failure: dict[str, Any] | None = None
        started = format_timestamp(self.clock.now())
        while True:
            try:
                argv = node_rules.command_argv(str(start["commandLine"]))
                result = self.agent.run(machine_id, argv, env=env, cwd=f"{node_rules.NODE_ROOT}/startup/wd",
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
        info = {"state": "completed", "startTime": started, "endTime": format_timestamp(self.clock.now()),
                "exitCode": int(result.get("exitCode", -1)), "retryCount": attempt,
                "result": "success" if failure is None else "failure"}
        if failure:
            info["failureInfo"] = failure
        with self.db.write() as s:
            node = s.get(models.Node, key)
            if node is None or node.state not in ("waitingforstarttask", "idle", "running", "offline"):
                return
            node.start_task_info = info
            if node.state == "waitingforstarttask":
                node_rules.set_state(node, self.clock, "idle" if failure is None else "starttaskfailed")
                if failure is None:
                    node.errors = []

    # --- lookups -------------------------------------------------------------------------------------------------
    def _account(self, s: Any, pool: models.Pool) -> tuple[str, str]:
        row = s.get(models.Resource, pool.account_key)
        name = row.name if row is not None else pool.account_key.rsplit("/", 1)[-1]
        return name, f"{self.node_base_url}/batch/{name}"  # (for the start task's environment)

    @cached_property
    def _public_address(self) -> tuple[str, str]:
        """(IP address, name) nodes' inbound endpoints report: the host clients reach Shoal at."""
        host = urlsplit(self.base_url).hostname or "127.0.0.1"
        try:
            return str(ipaddress.ip_address(host)), host
        except ValueError:
            pass
        try:
            return socket.gethostbyname(host), host
        except OSError:
            return "127.0.0.1", host

    def _replicas(self, s: Any, pool: models.Pool) -> allocation.ReplicaView | None:
        """The ready replicas, in the pool's region, of the gallery version the pool's nodes come from (None
        for a pool from a managed image or a marketplace image)."""
        resolved = pool.content.get("resolvedId")
        if not resolved or pool.content.get("replicas") is None:
            return None
        version = resources.find(s, ids.parse(resolved))
        account = s.get(models.Resource, pool.account_key)
        if version is None or account is None:
            return None
        region = galleries.region_key(account.location or "")
        return allocation.ReplicaView(region, tuple(galleries.ready_replicas(version.internal, region)))

    @staticmethod
    def _sources(rows: list[models.Node], replicas: allocation.ReplicaView | None) -> dict[str, dict[str, str]]:
        """machine id -> the replica ({"region","id"}) each node is provisioned from, spread over the pool's nodes
        oldest first (so new nodes continue the round robin)."""
        if replicas is None or not replicas.ids:
            return {}
        ordered = sorted(rows, key=lambda n: (n.allocation_time, n.key))
        spread = allocation.spread([n.machine_id for n in ordered], replicas.ids)
        return {machine_id: {"region": replicas.region, "id": rid} for machine_id, rid in spread.items()}

    def _slow(self) -> bool:
        """Injected slow provisioning: allocate one node per pass, so stop-resize and timeouts can cut in."""
        return self.faults is not None and self.faults.current(fresh=True).node_provision_delay > 0

    def _capacity(self, s: Any, pool: models.Pool) -> tuple[int, int] | None:
        """More nodes the core quotas allow for this pool (None: no quota): the account's dedicated and
        low-priority quotas, or, for UserSubscription accounts, the subscription's regional vCPU quota, which
        VMs and the nodes of other UserSubscription pools share."""
        account = s.get(models.Resource, pool.account_key)
        if account is not None and account.properties.get("poolAllocationMode") == "UserSubscription":
            cores = vmsizes.lookup(pool.spec.get("vmSize")).cores
            used = usage.regional(s, account.subscription_id, account.location or "", exclude_pool=pool.key).cores
            have_d, have_l = pools.node_counts(s, [pool.key])[pool.key]
            room = max(0, (self.core_quota - used - (have_d + have_l) * cores) // cores)
            for_dedicated = min(room, max(0, pool.target_dedicated - have_d))  # one quota for both kinds
            return for_dedicated, room - for_dedicated

        if account is None or account.properties.get("dedicatedCoreQuota") is None:
            return None
        cores = vmsizes.lookup(pool.spec.get("vmSize")).cores
        used_d = used_l = 0
        for other in pools.list_pools(s, pool.account_key):
            per_node = vmsizes.SIZES.get(str(other.spec.get("vmSize", "")).lower())
            d, low = pools.node_counts(s, [other.key])[other.key]
            used_d += d * (per_node.cores if per_node else 0)
            used_l += low * (per_node.cores if per_node else 0)
        quota_d = int(account.properties["dedicatedCoreQuota"])
        quota_l = int(account.properties.get("lowPriorityCoreQuota") or 0)
        return max(0, (quota_d - used_d) // cores), max(0, (quota_l - used_l) // cores)

    @staticmethod
    def _user_subscription(s: Any, pool: models.Pool) -> bool:
        account = s.get(models.Resource, pool.account_key)
        return account is not None and account.properties.get("poolAllocationMode") == "UserSubscription"

    def _image_problem(self, s: Any, pool: models.Pool) -> dict[str, Any] | None:
        """The image a pool grows from must still exist (and the sources it names)."""
        for rid in pool.content.get("requires") or []:
            if resources.find(s, ids.parse(rid)) is None:
                return allocation.allocation_failed(f"The image resource '{rid}' used by the pool no longer exists.")
        return None


def nodes_per_replica() -> int:
    """Target nodes one gallery replica should serve before a resize warns: ``SHOAL_NODES_PER_REPLICA`` (a small
    value lets tests see the warning without hundreds of nodes), by default Azure's 300."""
    try:
        return max(1, int(os.environ.get("SHOAL_NODES_PER_REPLICA") or allocation.NODES_PER_REPLICA))
    except ValueError:
        log.warning("SHOAL_NODES_PER_REPLICA=%r is not a number: using %d", os.environ["SHOAL_NODES_PER_REPLICA"],
                    allocation.NODES_PER_REPLICA)
        return allocation.NODES_PER_REPLICA
