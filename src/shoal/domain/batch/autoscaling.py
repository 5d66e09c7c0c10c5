"""Autoscale on a pool: enabling, disabling and evaluating a formula, and applying what it decides.

The formula language itself is :mod:`shoal.domain.batch.autoscale`; the metrics it reads are sampled from the
live pool by :mod:`shoal.reconcilers.autoscaler`. Stored in ``pool.autoscale``::

    {"enabled": true, "formula": "...", "interval": "PT15M", "run": {timestamp, results, error?},
     "nextEvaluation": "<ISO timestamp>"}
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, timefmt
from shoal.core.clock import Clock
from shoal.domain.batch import autoscale, pools
from shoal.store import models

MIN_INTERVAL = timedelta(minutes=5)
MAX_INTERVAL = timedelta(hours=168)
DEFAULT_INTERVAL = "PT15M"


def parse_interval(value: Any, prop: str = "autoScaleEvaluationInterval") -> str:
    text = DEFAULT_INTERVAL if value in (None, "") else str(value)
    try:
        delta = timefmt.parse_duration(text)
    except timefmt.TimeFormatError as exc:
        raise pools.bad_value(prop, value, "an ISO 8601 duration such as PT15M is required") from exc
    if not MIN_INTERVAL <= delta <= MAX_INTERVAL:
        raise pools.bad_value(prop, value, "the evaluation interval must be between 5 minutes (PT5M) and 168 hours "
                                           "(P7D)")
    return timefmt.format_duration(delta)


def check_formula(formula: Any, prop: str = "autoScaleFormula") -> str:
    """The formula must parse; a syntax error is a 400 that says where."""
    if not formula or not isinstance(formula, str):
        raise pools.missing(prop)
    try:
        autoscale.parse(formula)
    except autoscale.FormulaError as exc:
        raise errors.AutoScalingFormulaSyntaxError(f"The autoscale formula is invalid: {exc.message}",
                                                   values={v["name"]: v["value"] for v in _values(exc)}) from exc
    return formula


def settings(formula: Any, interval: Any) -> dict[str, Any]:
    """A validated ``pool.autoscale`` for a pool created with autoscale enabled."""
    return {"enabled": True, "formula": check_formula(formula), "interval": parse_interval(interval)}


def enable(pool: models.Pool, clock: Clock, formula: Any, interval: Any) -> None:
    """``enableautoscale``: a new formula and/or interval; the first evaluation happens at once."""
    if pool.allocation_state != pools.STEADY:
        raise errors.PoolNotSteady("The pool is resizing: autoscale can be enabled only when its allocation state is "
                                   "steady. Stop the resize or wait for it to finish.")
    current = pool.autoscale if pool.autoscale.get("enabled") else {}
    formula = formula if formula is not None else current.get("formula")
    interval = interval if interval is not None else current.get("interval")
    pool.autoscale = {**settings(formula, interval), "run": current.get("run"),
                      "nextEvaluation": timefmt.format_timestamp(clock.now())}
    pools.touch(pool, clock)


def disable(pool: models.Pool, clock: Clock) -> None:
    """``disableautoscale``: the pool keeps its current targets."""
    pool.autoscale = {}
    pools.touch(pool, clock)


def evaluate_only(s: Session, pool: models.Pool, formula: Any, now: datetime) -> dict[str, Any]:
    """``evaluateautoscale``: a formula run against the pool's live metrics, nothing applied."""
    if not pool.autoscale.get("enabled"):
        raise errors.AutoScaleNotEnabled("Autoscale is not enabled on the pool: enable it first (enableautoscale).")
    if not formula or not isinstance(formula, str):
        raise pools.missing("autoScaleFormula")
    result, _ = run(formula, load_metrics(s, pool, now), pool, now)
    return result


def explain(s: Session, pool: models.Pool, formula: str, now: datetime) -> dict[str, Any]:
    """The autoscale editor's Evaluate: a formula against the pool's live metrics, with every variable's value
    and every sample it read (``autoscale.explain``); nothing applied, and autoscale need not be enabled."""
    return autoscale.explain(formula, load_metrics(s, pool, now), current_dedicated=pool.target_dedicated,
                             current_low_priority=pool.target_low_priority)


def run(formula: str, metrics: autoscale.Metrics, pool: models.Pool, now: datetime
        ) -> tuple[dict[str, Any], autoscale.Evaluation | None]:
    """Evaluate a formula: (Azure's ``autoScaleRun``, the evaluation or None when it failed)."""
    stamp = timefmt.format_timestamp(now)
    try:
        result = autoscale.evaluate(formula, metrics, current_dedicated=pool.target_dedicated,
                                    current_low_priority=pool.target_low_priority)
    except autoscale.FormulaError as exc:
        return {"timestamp": stamp, "error": {"code": exc.code, "message": exc.message,
                                              "values": _values(exc)}}, None
    return {"timestamp": stamp, "results": result.results}, result


def due(pool: models.Pool, now: datetime) -> bool:
    text = pool.autoscale.get("nextEvaluation")
    return bool(pool.autoscale.get("enabled")) and (not text or timefmt.parse_timestamp(str(text)) <= now)


def schedule_next(pool: models.Pool, now: datetime) -> None:
    interval = timefmt.parse_duration(str(pool.autoscale.get("interval") or DEFAULT_INTERVAL))
    pool.autoscale = {**pool.autoscale, "nextEvaluation": timefmt.format_timestamp(now + interval)}


def apply(pool: models.Pool, clock: Clock, result: autoscale.Evaluation) -> None:
    """New targets from an evaluation, through the same resize bookkeeping as a manual resize (the node
    limits were checked by the caller). Nothing happens while the pool is not steady or nothing changed."""
    targets = (max(0, result.target_dedicated), max(0, result.target_low_priority))
    if pool.allocation_state != pools.STEADY or targets == (pool.target_dedicated, pool.target_low_priority):
        return
    option = result.node_deallocation_option or pool.deallocation_option
    scale = pools.Scale(targets[0], targets[1], timedelta(seconds=pool.resize_timeout_s),
                        pools.parse_deallocation(option))
    pools.resize(pool, clock, scale, by_autoscale=True)


def _values(exc: autoscale.FormulaError) -> list[dict[str, str]]:
    return [{"name": str(v.get("name")), "value": str(v.get("value"))} for v in exc.values or []]


# --- metrics -------------------------------------------------------------------------------------------------
SAMPLE_PERIOD = timedelta(seconds=30)
HISTORY = timedelta(hours=24)
# Sampled every 30 s; formulas read them with GetSample and friends.
SAMPLED = ("CPUPercent", "WallClockSeconds", "MemoryBytes", "DiskBytes", "DiskReadBytes", "DiskWriteBytes",
           "DiskReadOps", "DiskWriteOps", "NetworkInBytes", "NetworkOutBytes", "SampleNodeCount", "ActiveTasks",
           "RunningTasks", "PendingTasks", "SucceededTasks", "FailedTasks")
# Read at evaluation time.
CURRENT = ("TaskSlotsPerNode", "CurrentDedicatedNodes", "CurrentLowPriorityNodes", "PreemptedNodeCount",
           "UsableNodeCount")


def current_values(s: Session, pool: models.Pool) -> dict[str, float]:
    nodes = list(s.scalars(select(models.Node).where(models.Node.pool_key == pool.key)))
    return {"TaskSlotsPerNode": float(pool.spec.get("taskSlotsPerNode", 1)),
            "CurrentDedicatedNodes": float(sum(1 for n in nodes if n.is_dedicated)),
            "CurrentLowPriorityNodes": float(sum(1 for n in nodes if not n.is_dedicated)),
            "PreemptedNodeCount": float(sum(1 for n in nodes if n.state == "preempted")),
            "UsableNodeCount": float(sum(1 for n in nodes if n.state in ("idle", "running")))}


def load_metrics(s: Session, pool: models.Pool, now: datetime) -> autoscale.Metrics:
    """The pool's samples within the history window, and its current values, as a formula sees them."""
    rows = s.execute(select(models.PoolSample.taken_at, models.PoolSample.data).where(
        models.PoolSample.pool_key == pool.key, models.PoolSample.taken_at >= now - HISTORY,
        models.PoolSample.taken_at <= now).order_by(models.PoolSample.taken_at)).all()
    series: dict[str, list[autoscale.Sample]] = {name: [] for name in SAMPLED}
    for taken_at, data in rows:
        for name in SAMPLED:
            if name in (data or {}):
                series[name].append(autoscale.Sample(taken_at, float(data[name])))
    values = current_values(s, pool)
    for name, value in values.items():  # also as series, for formulas that sample them
        series.setdefault(name, [autoscale.Sample(now, value)])
    return autoscale.Metrics(now=now, series=series, values=values,
                             sample_period_seconds=SAMPLE_PERIOD.total_seconds(),
                             history_seconds=HISTORY.total_seconds())
