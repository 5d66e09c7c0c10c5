"""Long-running operations: the records clients poll, and the work items reconcilers complete.

A request that starts a long-running operation only records it (status ``InProgress``) and nudges the
reconcilers. Operation rows are never deleted while a client may still poll, so a monitor URL never
answers 404 for an operation that existed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors
from shoal.core.clock import Clock
from shoal.store import models

IN_PROGRESS, SUCCEEDED, FAILED, CANCELED = "InProgress", "Succeeded", "Failed", "Canceled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})


def start(session: Session, clock: Clock, *, subscription_id: str, location: str, namespace: str, kind: str,
          target_id: str, payload: dict[str, Any] | None = None) -> models.Operation:
    op = models.Operation(
        id=str(uuid.uuid4()), subscription_id=subscription_id, location=location, namespace=namespace,
        kind=kind, target_id=target_id, status=IN_PROGRESS, payload=payload or {}, started_at=clock.now(),
    )
    session.add(op)
    return op


def find_active(session: Session, kind: str, target_id: str) -> models.Operation | None:
    return session.scalars(select(models.Operation).where(
        models.Operation.kind == kind, models.Operation.target_id == target_id,
        models.Operation.status == IN_PROGRESS)).first()


def get(session: Session, subscription_id: str, operation_id: str) -> models.Operation:
    op = session.get(models.Operation, operation_id.lower())
    if op is None or op.subscription_id.lower() != subscription_id.lower():
        raise errors.OperationNotFound(f"The operation '{operation_id}' could not be found.")
    return op


def finish(op: models.Operation, now: datetime, *, error: errors.AzureError | None = None,
           result: dict[str, Any] | None = None) -> None:
    op.status = FAILED if error else SUCCEEDED
    op.finished_at = now
    op.lock_token = None
    op.lock_expires_at = None
    if error is not None:
        op.error = {"code": error.code, "message": error.message, "status": error.status}
    if result is not None:
        op.payload = {**op.payload, "result": result}


def status_body(op: models.Operation) -> dict[str, Any]:
    """The ``Azure-AsyncOperation`` document."""
    from shoal.core.timefmt import format_timestamp

    body: dict[str, Any] = {"name": op.id, "status": op.status, "startTime": format_timestamp(op.started_at)}
    if op.finished_at:
        body["endTime"] = format_timestamp(op.finished_at)
    if op.error:
        body["error"] = {"code": op.error["code"], "message": op.error["message"]}
    return body
