"""Long-running Batch management operations: account and pool deletion wait for the pools to be gone (and
account deletion takes the account's jobs and tasks with it)."""

from __future__ import annotations

from shoal.core import ids
from shoal.core.clock import Clock
from shoal.domain.batch import accounts
from shoal.reconcilers.operations import Handler, OperationWork, Outcome
from shoal.store import models
from shoal.store.db import Database


class BatchOperations:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock

    def delete_pool(self, work: OperationWork) -> Outcome:
        """The allocator removes the pool's nodes and then the pool; this finishes when it is gone."""
        with self.db.read() as s:
            return Outcome(s.get(models.Pool, work.target_id) is None)

    def delete_account(self, work: OperationWork) -> Outcome:
        key = ids.key(work.target_id)
        with self.db.write() as s:
            if not accounts.release(s, self.clock, key):
                return Outcome(False)
            row = s.get(models.Resource, key)
            if row is not None:
                s.delete(row)
        return Outcome(True)

    def handlers(self) -> dict[str, Handler]:
        return {"pools.delete": self.delete_pool, "batchAccounts.delete": self.delete_account}
