"""Nodes leaving the pool, and nodes restarting (reboot, reimage).

A leaving node's running tasks are released per its deallocation option (``domain.batch.deallocation``); it
is remembered as retired first, so its logs stay readable once it is gone (``domain.batch.retired``), then
the host agent retires its machine (keeping the logs aside) and its disks are deleted, and last its record.
A restarting node's machine is halted (a reimage also drops its disks) and booted again.
"""

from __future__ import annotations

from typing import Any

from shoal.domain.batch import deallocation, images, retired
from shoal.domain.batch import nodes as node_rules
from shoal.reconcilers.allocation.boot import NodeBooter, Sources
from shoal.reconcilers.allocation.context import Context
from shoal.store import models


class NodeRemoval:
    def __init__(self, ctx: Context, booter: NodeBooter) -> None:
        self.ctx = ctx
        self.booter = booter

    def release_tasks(self, node_keys: list[str], option: str) -> list[str]:
        """Take running tasks off nodes per the deallocation option; the nodes that may go now."""
        with self.ctx.db.write() as s:
            return deallocation.release_tasks(s, self.ctx.clock, node_keys, option)

    def remove(self, rows: list[models.Node], pool: models.Pool) -> None:
        rows = [n for n in rows if self.release_tasks([n.key], n.pending_option or pool.deallocation_option)]
        if not rows:
            return
        agent = self.ctx.agent
        # Remembered first: the node's logs stay readable once it is gone (a crash in between leaves a record
        # whose logs are still on the node's drive, which the file API reads all the same).
        with self.ctx.db.write() as s:
            replaced = [m for n in rows if (m := retired.remember(s, self.ctx.clock, n))]
        for machine_id in replaced:
            agent.forget_logs(machine_id)
        for n in rows:
            agent.retire(n.machine_id)
            for upper in node_rules.disk_uppers(pool, n):
                agent.delete_disk(upper)
        with self.ctx.db.write() as s:
            for n in rows:
                node = s.get(models.Node, n.key)
                if node is not None:
                    s.delete(node)

    def restart(self, n: models.Node, pool: models.Pool, *, reimage: bool, sources: Sources | None = None) -> None:
        if not self.release_tasks([n.key], n.pending_option or "requeue"):
            return  # taskcompletion: restart once its tasks have finished
        agent = self.ctx.agent
        agent.halt(n.machine_id, keep_temp=not reimage)
        if reimage:
            for upper in node_rules.disk_uppers(pool, n):
                agent.delete_disk(upper)
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
            except Exception as exc:
                errs = [{"code": "NodeProvisioningFailed", "message": f"The node could not be restarted: {exc}",
                         "errorDetails": []}]
        with self.ctx.db.write() as s:
            node = s.get(models.Node, n.key)
            if node is None:
                return
            node.pending, node.pending_option = "", ""
            node.errors = errs
            node.last_boot_time = self.ctx.clock.now()
            node.start_task_info = None
            node_rules.set_state(node, self.ctx.clock, "unusable" if errs else "starting")
