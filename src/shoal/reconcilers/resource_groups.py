"""Deletes a resource group's resources, role assignments and finally the group itself (Batch accounts are
emptied first: their pools, with the nodes' machines, then their jobs and tasks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from shoal.core import ids
from shoal.core.clock import Clock
from shoal.domain import authorization
from shoal.domain.batch import accounts
from shoal.reconcilers.operations import OperationWork, Outcome
from shoal.store import models
from shoal.store.db import Database

# Per resource type (lower-cased), what must happen outside the database before a row may go
# (for example tearing down a machine), given the row's internal facts. Types without an entry need nothing.
ResourceTeardown = Callable[[dict[str, Any]], None]


class ResourceGroupDeleter:
    def __init__(self, db: Database, clock: Clock, teardown: dict[str, ResourceTeardown]) -> None:
        self.db, self.clock = db, clock
        self.teardown = teardown

    def __call__(self, work: OperationWork) -> Outcome:
        group_key = ids.key(work.target_id)
        with self.db.write() as s:
            batch_accounts = list(s.scalars(select(models.Resource.key).where(
                models.Resource.group_key == group_key, models.Resource.type_key == accounts.TYPE.lower())))
            # Every account, not only up to the first with pools left: their pools are deleted in parallel.
            if not all([accounts.release(s, self.clock, key) for key in batch_accounts]):
                return Outcome(False)
        with self.db.read() as s:
            resources = [(r.key, r.internal, r.type_key) for r in s.scalars(
                select(models.Resource).where(models.Resource.group_key == group_key))]
        # Children before parents: longer ids first.
        for _key, internal, type_key in sorted(resources, key=lambda r: -len(r[0])):
            hook = self.teardown.get(type_key)
            if hook is not None:
                hook(internal)
        with self.db.write() as s:
            for r in s.scalars(select(models.Resource).where(models.Resource.group_key == group_key)):
                s.delete(r)
            authorization.delete_assignments_under(s, work.target_id)
            group = s.get(models.ResourceGroup, group_key)
            if group is not None:
                s.delete(group)
        return Outcome(True)
