"""Autoscale: samples the metrics of every autoscale pool every 30 s (of the service clock) and, at each pool's
evaluation interval, runs its formula and applies the result through the resize path.

Task metrics come from the store (tasks of the active jobs that target the pool). Node metrics come from the
pool's machines: CPU time and memory from each node's cgroup on hardened hosts (``HostAgent.usage``), else from
the processes in each node (:mod:`shoal.runtime.usage`), and disk I/O from those processes; per-node network
counters and local disk usage are not measured (0), as documented in the README. Samples older than
the history window are dropped. Everything is in the store, so a restart loses nothing but the CPU deltas of
the sample in progress.

Autoscale runs on one replica at a time (``reconcilers/base.py`` LoopClaim "autoscale"): the samples and the CPU
deltas between them are one sampler's; every write of a pass goes through the loop's claim.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from shoal.core import errors
from shoal.core.clock import Clock
from shoal.domain.batch import autoscaling, counts, image_rules, natpools, pools, vmsizes
from shoal.domain.host import HostAgent
from shoal.reconcilers.base import LeasedDatabase, LeaseLost, LoopClaim
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)


class AutoScaler:
    name = "autoscale"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, *,
                 limits: image_rules.ImageLimits | None = None, claim: LoopClaim | None = None) -> None:
        """``claim``: the loop's claim (None: this process is the only one on the database, e.g. tests)."""
        self.claim = claim
        db = LeasedDatabase(db, claim) if claim is not None else db
        self.db, self.clock, self.agent = db, clock, agent
        self.limits = limits or image_rules.ImageLimits()
        self._last_sample: datetime | None = None
        self._previous: dict[str, dict[str, dict[str, float]]] = {}  # machine -> pid -> counters
        self._previous_cgroups: dict[str, tuple[float, float]] = {}  # machine -> (cpu seconds, monotonic time)
        self.nudge: Any = None

    def release_claims(self) -> None:
        """At start-up: free this server's claim on the loop from before it restarted."""
        if self.claim is not None:
            self.claim.release_claims()

    def run_once(self) -> bool:
        if self.claim is not None and not self.claim.hold():
            self._last_sample, self._previous, self._previous_cgroups = None, {}, {}
            return False
        try:
            return self._pass()
        except LeaseLost:
            log.warning("autoscale: the loop's claim was taken over by another server; this pass stops")
            if self.claim is not None:
                self.claim.lost()
            self._last_sample, self._previous, self._previous_cgroups = None, {}, {}
            return False

    def _pass(self) -> bool:
        now = self.clock.now()
        with self.db.read() as s:
            enabled = [key for key, autoscale in s.execute(select(models.Pool.key, models.Pool.autoscale).where(
                models.Pool.state == "active")).all() if (autoscale or {}).get("enabled")]
        if not enabled:
            self._last_sample = None
            return False
        if self._last_sample is None or now - self._last_sample >= autoscaling.SAMPLE_PERIOD:
            self._sample(enabled, now)
            self._last_sample = now
        changed = False
        for key in enabled:
            changed |= self._evaluate(key, now)
        return changed

    # --- sampling ------------------------------------------------------------------------------------------
    def _sample(self, pool_keys: list[str], now: datetime) -> None:
        with self.db.read() as s:
            plan = []
            for key in pool_keys:
                pool = s.get(models.Pool, key)
                if pool is None:
                    continue
                machines = list(s.scalars(select(models.Node.machine_id).where(models.Node.pool_key == key)))
                last = s.scalar(select(func.max(models.PoolSample.taken_at)).where(
                    models.PoolSample.pool_key == key))
                plan.append((pool, machines, counts.pool_task_metrics(s, pool, last)))
        samples = self.agent.usage_samples(sorted({m for _, machines, _ in plan for m in machines}))
        seen = {m: sample["processes"] for m, sample in samples.items()}
        # CPU time and memory from each node's cgroup where it has one (hardened hosts): exact, including
        # processes that started and ended between two samples.
        cgroups = {m: sample["cgroup"] for m, sample in samples.items() if sample.get("cgroup")}
        rows = []
        for pool, machines, tasks in plan:
            data: dict[str, float] = dict(tasks)
            data.update(self._node_metrics(pool, machines, seen, cgroups))
            rows.append(models.PoolSample(pool_key=pool.key, taken_at=now, data=data))
        self._previous = {m: procs for m, procs in seen.items()}
        self._previous_cgroups = {m: (u["cpuSeconds"], time.monotonic()) for m, u in cgroups.items()}
        with self.db.write() as s:
            s.add_all(rows)
            s.execute(delete(models.PoolSample).where(models.PoolSample.taken_at < now - autoscaling.HISTORY))

    def _node_metrics(self, pool: models.Pool, machines: list[str], seen: dict[str, dict[str, dict[str, float]]],
                      cgroups: dict[str, dict[str, float]]) -> dict[str, float]:
        period = autoscaling.SAMPLE_PERIOD.total_seconds()
        cores = vmsizes.SIZES.get(str(pool.spec.get("vmSize", "")).lower())
        per_node_cores = cores.cores if cores else 1
        cpu = []
        memory = read_b = write_b = read_ops = write_ops = 0.0
        for machine in machines:
            now_procs, before = seen.get(machine, {}), self._previous.get(machine, {})
            group, group_before = cgroups.get(machine), self._previous_cgroups.get(machine)
            if group is not None:
                used, since = (group["cpuSeconds"] - group_before[0], time.monotonic() - group_before[1]) \
                    if group_before else (0.0, period)
                cpu.append(min(100.0, 100.0 * max(0.0, used) / max(since, 1e-3) / per_node_cores))
                memory += group["memoryBytes"]
            else:
                used = sum(max(0.0, p["cpuSeconds"] - (before[pid]["cpuSeconds"] if pid in before else 0.0))
                           for pid, p in now_procs.items())
                cpu.append(min(100.0, 100.0 * used / period / per_node_cores))
                memory += sum(p["rssBytes"] for p in now_procs.values())
            for pid, p in now_procs.items():
                old = before.get(pid, {})
                read_b += max(0, p["readBytes"] - old.get("readBytes", 0))
                write_b += max(0, p["writeBytes"] - old.get("writeBytes", 0))
                read_ops += max(0, p["readOps"] - old.get("readOps", 0))
                write_ops += max(0, p["writeOps"] - old.get("writeOps", 0))
        count = len(machines)
        return {"CPUPercent": sum(cpu) / count if count else 0.0, "WallClockSeconds": count * period,
                "MemoryBytes": memory / count if count else 0.0, "DiskBytes": 0.0, "DiskReadBytes": read_b,
                "DiskWriteBytes": write_b, "DiskReadOps": read_ops, "DiskWriteOps": write_ops,
                "NetworkInBytes": 0.0, "NetworkOutBytes": 0.0, "SampleNodeCount": float(count)}

    # --- evaluation ----------------------------------------------------------------------------------------
    def _evaluate(self, key: str, now: datetime) -> bool:
        with self.db.write() as s:
            pool = s.get(models.Pool, key)
            if pool is None or not autoscaling.due(pool, now):
                return False
            metrics = autoscaling.load_metrics(s, pool, now)
            run, result = autoscaling.run(str(pool.autoscale.get("formula") or ""), metrics, pool, now)
            if result is not None:
                try:
                    image_rules.check_node_limits(s, self.limits, pool.account_key, pool.key, pool.spec,
                                                  pool.content or {}, result.target_dedicated,
                                                  result.target_low_priority, natpools.node_capacity(pool.spec))
                    autoscaling.apply(pool, self.clock, result)
                except errors.AzureError as exc:
                    run = {**run, "error": {"code": exc.code, "message": exc.message, "values": [
                        {"name": k, "value": v} for k, v in exc.values.items()]}}
            pool.autoscale = {**pool.autoscale, "run": run}
            autoscaling.schedule_next(pool, now)
            pools.touch(pool, self.clock)
        if callable(self.nudge):
            self.nudge()
        return True
