"""Completes long-running ARM operations (resource group deletion, and later resource deletions).

Each operation kind has a handler that does the work outside any transaction and says whether it is
done. A handler must be idempotent: after a crash the operation is claimed again and the handler re-run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select

from shoal.core import errors
from shoal.core.clock import Clock
from shoal.domain import operations
from shoal.reconcilers.base import Lease
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)

LOCK_TTL = timedelta(seconds=120)


@dataclass(frozen=True)
class OperationWork:
    """A plain snapshot of a claimed operation handed to a handler."""

    id: str
    kind: str
    target_id: str
    subscription_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    done: bool
    error: errors.AzureError | None = None
    result: dict[str, Any] | None = None


Handler = Callable[[OperationWork], Outcome]


class OperationReconciler:
    name = "operations"

    def __init__(self, db: Database, clock: Clock, handlers: dict[str, Handler], batch: int = 16, *,
                 owner: str = "", lease_ttl: timedelta = LOCK_TTL) -> None:
        self.db, self.clock, self.handlers, self.batch = db, clock, handlers, batch
        self.lease = Lease(db, clock, models.Operation, lease_ttl, owner=owner)

    def _claim(self) -> tuple[str, list[OperationWork]]:
        token = self.lease.new_token()
        now = self.clock.now()
        with self.db.write() as s:
            rows = s.scalars(select(models.Operation).where(
                models.Operation.status == operations.IN_PROGRESS,
                models.Operation.kind.in_(list(self.handlers)),
                or_(models.Operation.lock_expires_at.is_(None), models.Operation.lock_expires_at < now),
            ).order_by(models.Operation.started_at).limit(self.batch)).all()
            work = [OperationWork(op.id, op.kind, op.target_id, op.subscription_id, dict(op.payload))
                    for op in rows if self.lease.take_row(op, token)]
        return token, work

    def release_claims(self) -> None:
        self.lease.release_all()

    def run_once(self) -> bool:
        token, work = self._claim()
        for item in work:
            try:
                outcome = self.handlers[item.kind](item)
            except errors.AzureError as exc:
                outcome = Outcome(True, error=exc)
            except Exception as exc:
                log.exception("operation %s (%s) failed", item.id, item.kind)
                outcome = Outcome(True, error=errors.InternalServerError(
                    f"The operation failed unexpectedly: {exc}. It can be retried."))
            with self.db.write() as s:
                op = s.get(models.Operation, item.id)
                if op is None or not self.lease.holds(op, token):
                    continue  # another worker took it over after our claim expired
                if outcome.done:
                    operations.finish(op, self.clock.now(), error=outcome.error, result=outcome.result)
                else:
                    op.lock_token, op.lock_expires_at = None, None
        return len(work) == self.batch
