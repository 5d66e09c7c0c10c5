"""The allocation decision of a pass: load the pool, its nodes and what limits it (image, quotas, replicas),
ask the pure ``domain.batch.allocation.decide``, and record the intent (new node rows, nodes leaving)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from shoal.domain.batch import allocation, images, pool_nodes, quotas
from shoal.domain.batch import nodes as node_rules
from shoal.domain.compute import usage
from shoal.reconcilers.allocation.context import Context
from shoal.store import models

log = logging.getLogger(__name__)


def nodes_per_replica() -> int:
    """Target nodes one gallery replica should serve before a resize warns: ``SHOAL_NODES_PER_REPLICA`` (a small
    value lets tests see the warning without hundreds of nodes), by default Azure's 300."""
    try:
        return max(1, int(os.environ.get("SHOAL_NODES_PER_REPLICA") or allocation.NODES_PER_REPLICA))
    except ValueError:
        log.warning("SHOAL_NODES_PER_REPLICA=%r is not a number: using %d", os.environ["SHOAL_NODES_PER_REPLICA"],
                    allocation.NODES_PER_REPLICA)
        return allocation.NODES_PER_REPLICA


@dataclass
class Plan:
    """What one pass works from: the pool as loaded (detached), its nodes, and the decision."""

    pool: models.Pool
    nodes: list[models.Node]
    account: tuple[str, str]  # (name, URL as nodes reach it) for the start task's environment
    replicas: allocation.ReplicaView | None
    decision: allocation.Decision

    @property
    def changes_nodes(self) -> bool:
        d = self.decision
        return bool(d.create_dedicated or d.create_low_priority or d.remove)


class Decider:
    def __init__(self, ctx: Context, core_quota: int = usage.DEFAULT_CORE_QUOTA) -> None:
        self.ctx = ctx
        self.core_quota = core_quota  # the subscriptions' regional vCPU quota (UserSubscription pools)
        self.nodes_per_replica = nodes_per_replica()

    def plan(self, key: str) -> Plan | None:
        """Load the pool and decide (None when the pool is gone)."""
        with self.ctx.db.read() as s:
            pool = s.get(models.Pool, key)
            if pool is None:
                return None
            node_rows = node_rules.list_nodes(s, key)
            blocked = images.problem(s, pool)
            account = self._account(s, pool)
            capacity = quotas.capacity(s, pool, self.core_quota)
            replicas = images.replicas(s, pool)
            scope = quotas.scope(s, pool)
        view = allocation.PoolView(pool.state, pool.allocation_state, pool.target_dedicated, pool.target_low_priority,
                                   pool.resize_started_at, timedelta(seconds=pool.resize_timeout_s))
        decision = allocation.decide(view, [allocation.NodeView(n.key, n.is_dedicated, n.state, n.pending,
                                                                n.running_tasks) for n in node_rows],
                                     self.ctx.clock.now(), blocked=blocked, capacity=capacity, quota_scope=scope,
                                     max_batch=1 if self.ctx.slow() else 1000, replicas=replicas,
                                     nodes_per_replica=self.nodes_per_replica)
        return Plan(pool, node_rows, account, replicas, decision)

    def record(self, plan: Plan, public_address: tuple[str, str]) -> str | None:
        """Write the intent: new node rows and nodes leaving. Returns the pool's subnet."""
        pool, decision = plan.pool, plan.decision
        with self.ctx.db.write() as s:
            existing = {n.key: n for n in node_rules.list_nodes(s, pool.key)}
            pool_nodes.mark_leaving(existing, decision.remove, pool.deallocation_option)
            row = s.get(models.Pool, pool.key)
            if row is None:
                return None
            pool_nodes.add(s, self.ctx.clock, row, decision.create_dedicated, decision.create_low_priority,
                           existing.values(), public_address, self.ctx.address_space,
                           own_network=self.ctx.agent.gateway is not None)
            return row.subnet

    def _account(self, s: Session, pool: models.Pool) -> tuple[str, str]:
        row = s.get(models.Resource, pool.account_key)
        name = row.name if row is not None else pool.account_key.rsplit("/", 1)[-1]
        return name, f"{self.ctx.node_base_url}/batch/{name}"
