"""The changes a Batch client makes to an existing pool, one use case each, and the unit of work they share.

Each use case is ``(ctx, session, pool, body) -> None`` and changes only the pool (and its nodes); the route
that calls it only reads the request and renders the answer. :func:`apply` owns the unit of work: one write
transaction that authorizes the caller, locks the pool, checks the request's conditions and applies the change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shoal.domain.batch import autoscaling, pools, service
from shoal.domain.compute.kinds import ComputeContext
from shoal.schemas import batch as wire
from shoal.store import models
from shoal.store.db import Database

Change = Callable[[ComputeContext, Session, models.Pool, dict[str, Any]], None]
UPDATABLE = ("startTask", "metadata", "applicationPackageReferences", "certificateReferences",
             "targetNodeCommunicationMode")


def patch(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    """PATCH: the properties given replace the pool's; the others stay."""
    service.update_pool(ctx, pool, wire.spec_from_data_plane(body), replace=False)


def update_properties(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    """updateproperties: the updatable properties are replaced, those not given are cleared."""
    service.update_pool(ctx, pool, {k: body.get(k) for k in UPDATABLE if k in body}, replace=True)


def update_properties_since_2025(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    """updateproperties in API versions after 2024-07-01.20.0, whose body has no ``certificateReferences`` (Batch
    certificates were retired): the pool's certificate references, if any, stay as they are."""
    if "certificateReferences" not in body:
        body = {**body, "certificateReferences": pool.spec.get("certificateReferences") or []}
    update_properties(ctx, s, pool, body)


def resize(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    service.resize_pool(ctx, s, pool, pools.scale_from_body({
        "targetDedicatedNodes": body.get("targetDedicatedNodes", pool.target_dedicated),
        "targetLowPriorityNodes": body.get("targetLowPriorityNodes", pool.target_low_priority),
        "resizeTimeout": body.get("resizeTimeout"),
        "nodeDeallocationOption": body.get("nodeDeallocationOption")}))


def stop_resize(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    pools.stop_resize(pool, ctx.clock)


def enable_autoscale(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    autoscaling.enable(pool, ctx.clock, body.get("autoScaleFormula"), body.get("autoScaleEvaluationInterval"))


def disable_autoscale(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    autoscaling.disable(pool, ctx.clock)


def remove_nodes(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    node_list = body.get("nodeList")
    if not isinstance(node_list, list):
        raise pools.missing("nodeList")
    pools.remove_nodes(s, pool, ctx.clock, [str(n) for n in node_list], pools.parse_timeout(body.get("resizeTimeout")),
                       pools.parse_deallocation(body.get("nodeDeallocationOption")))


def delete(ctx: ComputeContext, s: Session, pool: models.Pool, body: dict[str, Any]) -> None:
    pools.begin_delete(pool, ctx.clock)


def apply(db: Database, ctx: ComputeContext, account_key: str, pool_id: str, change: Change,
          body: dict[str, Any], *, authorize: Callable[[Session], None],
          precondition: Callable[[str, datetime], None]) -> tuple[str, datetime]:
    """One change in one transaction: the caller's rights, the pool (locked), the request's conditions on its
    ETag and last-modified time, the change. Returns the pool's new ETag and last-modified time."""
    with db.write() as s:
        authorize(s)
        pool = pools.get(s, account_key, pool_id, for_update=True)
        precondition(pool.etag, pool.last_modified)
        change(ctx, s, pool, body)
        return pool.etag, pool.last_modified
