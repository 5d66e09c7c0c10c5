"""Counts the API and the autoscaler read often: nodes by state per pool (``nodecounts``), tasks by state of a
job (``taskcounts``) and of a pool's active jobs (autoscale metrics). Each is one or two SQL aggregates (GROUP
BY), so polling them costs the same whatever the number of nodes or tasks: no row is loaded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shoal.store import models

# nodecounts' buckets, in the wire's spelling (the node states are stored lower-case).
NODE_COUNT_STATES = ("creating", "idle", "offline", "preempted", "rebooting", "reimaging", "running", "starting",
                     "startTaskFailed", "leavingPool", "unknown", "unusable", "waitingForStartTask", "deallocated",
                     "deallocating", "upgradingOS")
_WIRE_STATE = {s.lower(): s for s in NODE_COUNT_STATES}


def node_counts(s: Session, account_key: str) -> list[dict[str, Any]]:
    """``nodecounts``: per pool of the account, its dedicated and low-priority nodes by state (a node being
    removed counts as leavingPool)."""
    pools = s.execute(select(models.Pool.key, models.Pool.pool_id).where(
        models.Pool.account_key == account_key).order_by(models.Pool.key)).all()
    if not pools:
        return []
    leaving = models.Node.pending == "remove"
    rows = s.execute(select(models.Node.pool_key, models.Node.is_dedicated, models.Node.state, leaving, func.count())
                     .where(models.Node.pool_key.in_([key for key, _ in pools]))
                     .group_by(models.Node.pool_key, models.Node.is_dedicated, models.Node.state, leaving)).all()
    counts: dict[str, dict[str, dict[str, int]]] = {
        key: {kind: {**dict.fromkeys(NODE_COUNT_STATES, 0), "total": 0} for kind in ("dedicated", "lowPriority")}
        for key, _ in pools}
    for pool_key, dedicated, state, removing, n in rows:
        bucket = counts[pool_key]["dedicated" if dedicated else "lowPriority"]
        name = "leavingPool" if removing else _WIRE_STATE.get(state, state)
        bucket[name] = bucket.get(name, 0) + n
        bucket["total"] += n
    return [{"poolId": pool_id, **counts[key]} for key, pool_id in pools]


def task_counts(s: Session, job: models.Job) -> dict[str, Any]:
    """``taskcounts``: the job's tasks, and the slots they take, by state (completed ones also by result)."""
    rows = s.execute(select(models.Task.state, models.Task.result, func.count(), func.sum(models.Task.slots)).where(
        models.Task.job_key == job.key).group_by(models.Task.state, models.Task.result)).all()
    counts = {"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
    slots = dict(counts)
    for state, result, n, used in rows:
        buckets = ["running" if state in ("preparing", "running") else state]
        if state == "completed":
            buckets.append("succeeded" if result == "success" else "failed")
        for bucket in buckets:
            counts[bucket] = counts.get(bucket, 0) + n
            slots[bucket] = slots.get(bucket, 0) + int(used or 0)
    return {"taskCounts": counts, "taskSlotCounts": slots}


def pool_task_metrics(s: Session, pool: models.Pool, since: datetime | None) -> dict[str, float]:
    """Task metrics of the active jobs that run on the pool (autoscale): active, running and pending tasks now,
    and the tasks that succeeded or failed since the last sample (all of them without one)."""
    counts = {"ActiveTasks": 0.0, "RunningTasks": 0.0, "PendingTasks": 0.0, "SucceededTasks": 0.0,
              "FailedTasks": 0.0}
    jobs = select(models.Job.key).where(models.Job.account_key == pool.account_key,
                                        models.Job.pool_id == pool.pool_id.lower(), models.Job.state == "active")
    for state, n in s.execute(select(models.Task.state, func.count()).where(
            models.Task.job_key.in_(jobs), models.Task.state != "completed").group_by(models.Task.state)).all():
        counts["ActiveTasks" if state == "active" else "RunningTasks"] += n
    counts["PendingTasks"] = counts["ActiveTasks"] + counts["RunningTasks"]
    finished = select(models.Task.result, func.count()).where(models.Task.job_key.in_(jobs),
                                                              models.Task.state == "completed")
    if since is not None:
        finished = finished.where(models.Task.state_transition_time > since)
    for result, n in s.execute(finished.group_by(models.Task.result)).all():
        counts["SucceededTasks" if result == "success" else "FailedTasks"] += n
    return counts
