"""Deletes a resource group's resources, role assignments and finally the group itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from shoal.core import ids
from shoal.domain import authorization
from shoal.reconcilers.operations import OperationWork, Outcome
from shoal.store import models
from shoal.store.db import Database

# Per resource type (lower-cased), what must happen outside the database before a row may go
# (for example tearing down a machine), given the row's internal facts. Types without an entry need nothing.
ResourceTeardown = Callable[[dict[str, Any]], None]


class ResourceGroupDeleter:
    def __init__(self, db: Database, teardown: dict[str, ResourceTeardown]) -> None:
        self.db = db
        self.teardown = teardown

    def __call__(self, work: OperationWork) -> Outcome:
        group_key = ids.key(work.target_id)
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
