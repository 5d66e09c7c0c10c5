"""Nodes leaving the pool, and nodes restarting (reboot, reimage).

Leaving nodes' running tasks are released per their deallocation option (``domain.batch.deallocation``); they
are remembered as retired first, so their logs stay readable once they are gone (``domain.batch.retired``),
then the host agent retires their machines (keeping the logs aside) and their disks are deleted, and last
their records. A few transactions for all the nodes leaving in a pass, whatever their number.
A restarting node's machine is halted (a reimage also drops its disks) and booted again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shoal.core.hosterrors import MountFailed
from shoal.domain.batch import (
    deallocation,
    eviction,
    images,
    jobtasks,
    mounts,
    node_users,
    pool_nodes,
    retired,
    usage_metrics,
)
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch.pool_nodes import NodeRecord
from shoal.reconcilers.allocation.boot import NodeBooter, Sources
from shoal.reconcilers.allocation.context import Context
from shoal.store import models


class NodeRemoval:
    def __init__(self, ctx: Context, booter: NodeBooter) -> None:
        self.ctx = ctx
        self.booter = booter

    def remove(self, rows: list[NodeRecord], pool: models.Pool) -> None:
        if not rows:
            return
        by_option: dict[str, list[str]] = {}
        for n in rows:
            by_option.setdefault(n.pending_option or pool.deallocation_option, []).append(n.key)
        with self.ctx.write() as s:  # running tasks are released (or, taskcompletion, waited for)
            free = {key for option, keys in by_option.items()
                    for key in deallocation.release_tasks(s, self.ctx.clock, keys, option)}
        rows = [n for n in rows if n.key in free]
        if not rows:
            return
        agent = self.ctx.agent
        # Remembered first: the node's logs stay readable once it is gone (a crash in between leaves a record
        # whose logs are still on the node's drive, which the file API reads all the same).
        with self.ctx.write() as s:
            replaced = retired.remember_all(s, self.ctx.clock, rows)
            usage_metrics.record_leaving(s, pool, rows, self.ctx.clock.now())
        for machine_id in replaced:
            agent.forget_logs(machine_id)
        for n in rows:
            agent.retire(n.machine_id)
            for upper in node_rules.disk_uppers(pool, n):
                agent.delete_disk(upper)
        with self.ctx.write() as s:
            pool_nodes.delete_nodes(s, [n.key for n in rows])

    def preempt(self, rows: list[NodeRecord], pool: models.Pool, delay: timedelta) -> set[str]:
        """Evicted (preempted) nodes: stop the machines of those just evicted (their tasks' processes die; the
        tasks were already requeued), and start again those whose capacity has returned. Returns the keys of the
        nodes now ``starting``."""
        fresh = [n for n in rows if n.pending == eviction.EVICT]
        for n in fresh:
            self.ctx.agent.halt(n.machine_id, keep_temp=True)
        if fresh:
            with self.ctx.write() as s:
                eviction.stopped(s, [n.key for n in fresh])
        with self.ctx.db.read() as s:
            due = set(eviction.recovered(s, [n.key for n in rows], self.ctx.clock.now(), delay))
        return {n.key for n in rows if n.key in due and self.restart(n, pool, reimage=False)}

    def deallocate(self, n: NodeRecord, pool: models.Pool) -> bool:
        """Deallocate a node: its tasks handled as asked, its machine stopped (its disks and temporary drive
        kept), the node ``deallocated``. False while it waits for its tasks (``taskcompletion``)."""
        with self.ctx.write() as s:
            if not deallocation.release_tasks(s, self.ctx.clock, [n.key], n.pending_option or "requeue"):
                return False
        self.ctx.agent.halt(n.machine_id, keep_temp=True)
        with self.ctx.write() as s:
            node = s.get(models.Node, n.key)
            if node is None or node.state != "deallocating":
                return False
            node.pending, node.pending_option = "", ""
            node_rules.set_state(node, self.ctx.clock, "deallocated")
        return True

    def restart(self, n: NodeRecord, pool: models.Pool, *, reimage: bool, sources: Sources | None = None) -> bool:
        """Reboot or reimage a node; True when it is ``starting`` again (False: it waits for its tasks, with
        ``taskcompletion``, or it is unusable)."""
        with self.ctx.write() as s:
            if not deallocation.release_tasks(s, self.ctx.clock, [n.key], n.pending_option or "requeue"):
                return False  # taskcompletion: restart once its tasks have finished
            jobtasks.forget_preparations(s, n.key, reimage=reimage)
        agent = self.ctx.agent
        agent.halt(n.machine_id, keep_temp=not reimage)
        if reimage:
            for upper in node_rules.disk_uppers(pool, n):
                agent.delete_disk(upper)
            with self.ctx.write() as s:  # the users the node had went with its disk
                node_users.forget_node(s, n.key)
        errs: list[dict[str, Any]] = []
        with self.ctx.db.read() as s:
            problem = images.problem(s, pool) if reimage else None
        if problem is not None:
            reason = problem["values"][0]["value"]
            errs = [{"code": "ImageNotFound", "message": f"The node could not be reimaged: {reason}",
                     "errorDetails": []}]
        else:
            try:
                agent.boot(self.booter.machine(pool, n, (sources or {}).get(n.machine_id)))
                self.booter.prepare_dirs(n)
            except MountFailed as exc:
                errs = [mounts.node_error(exc.path, exc.reason)]
            except Exception as exc:
                errs = [{"code": "NodeProvisioningFailed", "message": f"The node could not be restarted: {exc}",
                         "errorDetails": []}]
        with self.ctx.write() as s:
            node = s.get(models.Node, n.key)
            if node is None:
                return False
            node.pending, node.pending_option = "", ""
            node.errors = errs
            node.last_boot_time = self.ctx.clock.now()
            node.start_task_info = None
            node_rules.set_state(node, self.ctx.clock, "unusable" if errs else "starting")
        return not errs
