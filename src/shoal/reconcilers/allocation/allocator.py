"""The pool allocator: the loop that drives each pool's nodes toward its targets, stage by stage.

One pass per pool: claim the pool with a lock token, decide (:mod:`.decision`), record the intent (new node
rows, removals), act on the host outside any transaction — remove leaving nodes (:mod:`.removal`), boot new
ones (:mod:`.boot`), reboot/reimage, run start tasks (:mod:`.start_task`), publish inbound NAT endpoints
(:mod:`.endpoints`) — and settle the resize or the pool's deletion (:mod:`.settle`).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import or_, select

from shoal.core.clock import Clock
from shoal.domain import network
from shoal.domain.batch import eviction, natpools, pool_nodes, pools
from shoal.domain.batch import nodes as node_rules
from shoal.domain.compute import usage
from shoal.domain.host import HostAgent
from shoal.reconcilers import app_packages
from shoal.reconcilers.allocation import boot
from shoal.reconcilers.allocation.boot import NodeBooter
from shoal.reconcilers.allocation.context import Context
from shoal.reconcilers.allocation.decision import Decider
from shoal.reconcilers.allocation.endpoints import Endpoints
from shoal.reconcilers.allocation.removal import NodeRemoval
from shoal.reconcilers.allocation.settle import settle
from shoal.reconcilers.allocation.start_task import StartTasks
from shoal.reconcilers.base import Lease, LeaseLost
from shoal.reconcilers.faults import FaultSource
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)
LOCK_TTL = timedelta(seconds=120)


class PoolAllocator:
    name = "pools"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, base_url: str, *, workers: int = 4,
                 faults: FaultSource | None = None, core_quota: int = usage.DEFAULT_CORE_QUOTA,
                 address_space: str = network.DEFAULT_SPACE, owner: str = "",
                 lease_ttl: timedelta = LOCK_TTL) -> None:
        self.ctx = Context(db, clock, agent, base_url, base_url, address_space, faults,
                           lease=Lease(db, clock, models.Pool, lease_ttl, owner=owner))
        self.decider = Decider(self.ctx, core_quota)
        self.booter = NodeBooter(self.ctx)
        self.removal = NodeRemoval(self.ctx, self.booter)
        self.start_tasks = StartTasks(self.ctx, workers)
        self.endpoints = Endpoints(self.ctx)
        self._rng = random.Random()
        self._last_random_eviction = time.monotonic()

    # --- the wiring services.py sets ---------------------------------------------------------------------------
    @property
    def node_base_url(self) -> str:
        """Shoal's origin as nodes reach it (their gateway, with networks of their own)."""
        return self.ctx.node_base_url

    @node_base_url.setter
    def node_base_url(self, value: str) -> None:
        self.ctx.node_base_url = value

    @property
    def nudge(self) -> Callable[[], None] | None:
        """Wakes this loop (and the others) when a start task ends."""
        return self.ctx.nudge

    @nudge.setter
    def nudge(self, value: Callable[[], None] | None) -> None:
        self.ctx.nudge = value

    @property
    def nudge_tasks(self) -> Callable[[], None] | None:
        """Wakes the scheduler when nodes come up while a pass goes on."""
        return self.ctx.nudge_tasks

    @nudge_tasks.setter
    def nudge_tasks(self, value: Callable[[], None] | None) -> None:
        self.ctx.nudge_tasks = value

    # --- the pass ----------------------------------------------------------------------------------------------
    def release_claims(self) -> None:
        assert self.ctx.lease is not None
        self.ctx.lease.release_all()

    def random_evictions(self) -> None:
        """The operator's random eviction rates (faults file ``evictionRatesPerMinute``): on average that many
        low-priority nodes of the pool are evicted a minute (domain/batch/eviction.py)."""
        now = time.monotonic()
        elapsed, self._last_random_eviction = now - self._last_random_eviction, now
        rates = self.ctx.faults_now().eviction_rates if self.ctx.faults is not None else {}
        for pool_id, rate in rates.items():
            expected = max(0.0, rate) * elapsed / 60
            count = int(expected) + (1 if self._rng.random() < expected - int(expected) else 0)
            if count:
                with self.ctx.db.write() as s:
                    for pool in eviction.find_pools(s, pool_id):
                        evicted = eviction.evict(s, self.ctx.clock, pool, count=count, rng=self._rng)
                        if evicted:
                            log.warning("pool %s: evicted %s (random eviction rate)", pool.key, ", ".join(evicted))

    def run_once(self) -> bool:
        self.random_evictions()
        if self.endpoints.unpublished:  # after a start: the host's forwarding table is empty
            self.endpoints.publish()
        with self.ctx.db.read() as s:
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

    def reconcile(self, key: str) -> bool:
        """One pass over a pool; True when it changed something (so another pass should follow at once). Every
        write of the pass goes through the pass's claim on the pool (``Context.write``)."""
        lease = self.ctx.lease
        assert lease is not None
        token = lease.take(key)
        if token is None:
            return False
        self.ctx.claim = (key, token)
        try:
            return self._reconcile(key)
        except LeaseLost:
            log.warning("pool %s: the pass's claim lapsed and was taken over; this pass stops", key)
            return False
        finally:
            self.ctx.claim = None
            lease.release(key, token)

    def _reconcile(self, key: str) -> bool:
        # 1. load (the pool's nodes, once) and decide
        plan = self.decider.plan(key)
        if plan is None:
            return False
        pool = plan.pool
        # 2. record intent: new node rows, nodes leaving (the plan's nodes follow)
        changed = plan.changes_nodes
        if changed:
            self.decider.record(plan, self.endpoints.public_address)
        # 3. act: remove leaving nodes, boot new ones, reboot/reimage, start tasks
        nodes = plan.nodes
        leaving = [n for n in nodes if n.pending == "remove"]
        self.removal.remove(leaving, pool)
        staying = [n for n in nodes if n.pending != "remove"]
        sources = boot.sources(nodes, plan.replicas)
        booted = set(self.booter.boot([n for n in staying if n.state == "creating"], pool, sources))
        for n in staying:
            if n.pending == "deallocate":
                self.removal.deallocate(n, pool)
        restarted = {n.key for n in staying if n.pending in ("reboot", "reimage", "start") and self.removal.restart(
            n, pool, reimage=n.pending == "reimage", sources=sources)}
        preempted = [n for n in staying if n.state == "preempted"]
        if preempted:  # evicted Spot nodes: stop their machines, start them again once capacity returns
            delay = timedelta(seconds=self.ctx.faults_now().spot_recovery_seconds)
            restarted |= self.removal.preempt(preempted, pool, delay)
        has_start_task = app_packages.has_start_work(pool)
        up = restarted | booted if has_start_task else restarted  # (without a start task, booted nodes are idle)
        starting = [dataclasses.replace(n, state="starting") if n.key in up else n for n in staying
                    if n.key in up or n.state in ("starting", "waitingforstarttask")]
        if has_start_task:
            self.start_tasks.start(starting, pool, plan.account)
        elif starting:
            self.start_tasks.ready([n.key for n in starting if n.state == "starting"])
            self.ctx.wake()
        if (changed and natpools.has_endpoints(pool.spec)) or self.endpoints.unpublished:
            self.endpoints.publish()
        # 4. settle: end the resize, or delete the drained pool
        settle(self.ctx, key, pool, plan.decision)
        with self.ctx.db.read() as s:
            return changed or pool_nodes.has_work_left(s, key)
