"""Pool usage metrics (``GET /poolusagemetrics``) from the service's own accounting of node time.

Every node's time in its pool is counted from its allocation until it leaves: nodes still in a pool count up
to now; a node that leaves is written to ``node_usage`` (pool id, VM size, allocated, gone) as it goes, so the
time of nodes of resized or deleted pools is still reported. As Azure does, the time is aggregated per pool in
30-minute intervals aligned on the half hour, with the pool's VM size and ``totalCoreHours`` (node hours times
the size's cores). Azure publishes an interval about two hours after it ends; Shoal's accounting is exact, so an
interval is reported as soon as it has ended. Without ``startTime``/``endTime`` the last interval that has
ended is returned (Azure's default); a pool with no node time in an interval is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.domain.batch import vmsizes
from shoal.store import models

INTERVAL = timedelta(minutes=30)


class Leaving(Protocol):
    @property
    def node_id(self) -> str: ...
    @property
    def allocation_time(self) -> datetime: ...


def record_leaving(s: Session, pool: models.Pool, nodes: Sequence[Leaving], now: datetime) -> None:
    """Nodes that leave ``pool`` now: their time in it is kept for the usage metrics."""
    size = str(pool.spec.get("vmSize") or "")
    for n in nodes:
        s.add(models.NodeUsage(account_key=pool.account_key, pool_id=pool.pool_id, vm_size=size,
                               node_id=n.node_id, started_at=_utc(n.allocation_time), ended_at=now))


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def interval_start(at: datetime) -> datetime:
    at = _utc(at)
    return at.replace(minute=0 if at.minute < 30 else 30, second=0, microsecond=0)


def _window(now: datetime, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    last_end = interval_start(now)  # the end of the last interval that has ended
    if start is None and end is None:
        return last_end - INTERVAL, last_end
    lo = interval_start(start) if start is not None else last_end - INTERVAL
    hi = min(last_end, interval_start(end + INTERVAL - timedelta(microseconds=1))) if end is not None else last_end
    if start is not None and end is not None and end < start:
        raise errors.InvalidQueryParameterValue(
            "endTime must not be earlier than startTime.",
            values={"QueryParameterName": "endtime", "QueryParameterValue": end.isoformat()})
    return lo, hi


def pool_usage(s: Session, account_key: str, now: datetime, start: datetime | None = None,
               end: datetime | None = None) -> list[dict[str, Any]]:
    """The account's pool usage metrics as the Batch data plane lists them (timestamps as datetimes)."""
    lo, hi = _window(now, start, end)
    spans: list[tuple[str, str, datetime, datetime]] = []  # (pool id, vm size, from, to)
    for u in s.scalars(select(models.NodeUsage).where(models.NodeUsage.account_key == account_key,
                                                      models.NodeUsage.ended_at > lo,
                                                      models.NodeUsage.started_at < hi)):
        spans.append((u.pool_id, u.vm_size, _utc(u.started_at), _utc(u.ended_at)))
    live = s.execute(select(models.Pool.pool_id, models.Pool.spec, models.Node.allocation_time)
                     .join(models.Node, models.Node.pool_key == models.Pool.key)
                     .where(models.Pool.account_key == account_key, models.Node.allocation_time < hi,
                            models.Node.state.not_in(("preempted", "deallocated"))))
    for pool_id, spec, allocated in live:
        spans.append((pool_id, str((spec or {}).get("vmSize") or ""), _utc(allocated), now))
    totals: dict[tuple[datetime, str, str], float] = {}
    for pool_id, size, a, b in spans:
        cores = vmsizes.machine_limits(size).get("cores") or 1
        at = max(interval_start(a), lo)
        while at < min(b, hi):
            overlap = (min(b, at + INTERVAL) - max(a, at)).total_seconds()
            if overlap > 0:
                key = (at, pool_id, size)
                totals[key] = totals.get(key, 0.0) + overlap / 3600 * float(cores)
            at += INTERVAL
    return [{"poolId": pool_id, "startTime": at, "endTime": at + INTERVAL, "vmSize": size,
             "totalCoreHours": round(hours, 6)}
            for (at, pool_id, size), hours in sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1].lower()))]
