"""The retention sweep: task directories of completed tasks past their ``retentionTime`` go from their nodes
(the task keeps its nodeInfo; its files answer ``TaskFilesCleanedup`` from then on), and the kept logs of
nodes that are gone go once they expire."""

from __future__ import annotations

import contextlib

from sqlalchemy import select

from shoal.core.clock import Clock
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import retired
from shoal.domain.host import HostAgent
from shoal.store import models
from shoal.store.db import Database


class RetentionSweep:
    def __init__(self, db: Database, clock: Clock, agent: HostAgent) -> None:
        self.db, self.clock, self.agent = db, clock, agent

    def run(self, limit: int = 500) -> None:
        with self.db.read() as s:
            expired = [(key, node_key, (info or {}).get("taskRootDirectory")) for key, node_key, info in s.execute(
                select(models.Task.key, models.Task.node_key, models.Task.node_info)
                .where(models.Task.files_expire_at <= self.clock.now())
                .order_by(models.Task.files_expire_at).limit(limit)).all()]
            keys = {k for _, k, _ in expired if k}
            machines: dict[str, str] = dict(s.execute(select(models.Node.key, models.Node.machine_id).where(
                models.Node.key.in_(keys))).all()) if keys else {}
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
                held = list(s.scalars(select(models.Task).where(  # noqa: F841 - keeps them in the identity map
                    models.Task.key.in_([key for key, _, _ in expired]))))
                for key, _node, _root in expired:
                    task = s.get(models.Task, key)
                    if task is not None and task.state == "completed":
                        task.files_expire_at = None
                        task.node_key = None
