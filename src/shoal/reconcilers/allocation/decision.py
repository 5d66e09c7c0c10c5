"""The allocation decision of a pass: load the pool, its nodes and what limits it (image, quotas, replicas),
ask the pure ``domain.batch.allocation.decide``, and record the intent (new node rows, nodes leaving)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from shoal.domain.batch import allocation, images, pool_nodes, pool_subnets, quotas
from shoal.domain.batch.pool_nodes import NodeRecord
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
    """What one pass works from: the pool as loaded (detached), its nodes (loaded once, then kept up to date
    with what the pass itself writes), and the decision."""

    pool: models.Pool
    nodes: list[NodeRecord]
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
            node_rows = pool_nodes.load(s, pool)
            blocked = images.problem(s, pool)
            account = self._account(s, pool)
            capacity = quotas.capacity(s, pool, self.core_quota)
            replicas = images.replicas(s, pool)
            scope = quotas.scope(s, pool)
            free = pool_subnets.room(s, pool)
        subnet_room = None if free is None else (free, pool_subnets.subnet_full(str(pool_subnets.subnet_ref(
            pool.spec))))
        view = allocation.PoolView(pool.state, pool.allocation_state, pool.target_dedicated, pool.target_low_priority,
                                   pool.resize_started_at, timedelta(seconds=pool.resize_timeout_s))
        decision = allocation.decide(view, [allocation.NodeView(n.key, n.is_dedicated, n.state, n.pending,
                                                                n.running_tasks) for n in node_rows],
                                     self.ctx.clock.now(), blocked=blocked, capacity=capacity, quota_scope=scope,
                                     max_batch=1 if self.ctx.slow() else 1000, replicas=replicas,
                                     nodes_per_replica=self.nodes_per_replica, subnet_room=subnet_room)
        return Plan(pool, node_rows, account, replicas, decision)

    def record(self, plan: Plan, public_address: tuple[str, str]) -> None:
        """Write the intent in one transaction: nodes leaving (marked), new node rows (inserted in bulk). The
        plan's nodes and pool (its subnet) follow what was written."""
        pool, decision = plan.pool, plan.decision
        with self.ctx.write() as s:
            row = s.get(models.Pool, pool.key)
            if row is None:
                return
            leaving = set(pool_nodes.mark_leaving(s, decision.remove, pool.deallocation_option))
            created = pool_nodes.add(s, self.ctx.clock, row, decision.create_dedicated,
                                     decision.create_low_priority, plan.nodes, public_address,
                                     self.ctx.address_space, own_network=self.ctx.agent.gateway is not None)
            pool.subnet = row.subnet  # (pool is detached: nothing is written through it)
        plan.nodes = [dataclasses.replace(n, pending="remove", pending_option=pool.deallocation_option)
                      if n.key in leaving else n for n in plan.nodes] + created

    def _account(self, s: Session, pool: models.Pool) -> tuple[str, str]:
        row = s.get(models.Resource, pool.account_key)
        name = row.name if row is not None else pool.account_key.rsplit("/", 1)[-1]
        return name, f"{self.ctx.node_base_url}/batch/{name}"
