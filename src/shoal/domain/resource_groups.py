"""Resource groups: create/update, read, list, patch, and deletion as a long-running operation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.clock import Clock
from shoal.domain import operations
from shoal.store import models

DELETE_KIND = "resourceGroups.delete"
_NAME = re.compile(r"^[-\w._()]+$", re.UNICODE)


@dataclass(frozen=True)
class GroupSpec:
    location: str
    tags: dict[str, str] | None
    managed_by: str | None


def check_name(name: str) -> None:
    if len(name) > 90:
        raise errors.InvalidResourceGroup(
            f"The provided resource group name '{name[:100]}...' exceeds the maximum length of 90 characters.")
    bad = sorted({c for c in name if not re.match(r"[-\w._()]", c)})
    if not name or bad or name.endswith(".") or not _NAME.match(name):
        detail = f" has these invalid characters: '{''.join(bad)}'." if bad else " is invalid."
        raise errors.InvalidResourceGroup(
            f"The provided resource group name '{name}'{detail} The name can only be a letter, digit, '-', '.', "
            "'(', ')' or '_', 1-90 characters, and must not end with '.'.")


def normalize_location(location: str, regions: tuple[str, ...]) -> str:
    loc = location.replace(" ", "").lower()
    if loc not in regions:
        raise errors.LocationNotAvailableForResourceGroup(
            f"The provided location '{location}' is not available for resource group. List of available regions "
            f"is '{','.join(regions)}'.")
    return loc


def get(session: Session, subscription_id: str, name: str) -> models.ResourceGroup:
    row = session.get(models.ResourceGroup, ids.key(ids.resource_group_id(subscription_id, name)))
    if row is None:
        raise errors.ResourceGroupNotFound(f"Resource group '{name}' could not be found.")
    return row


def find(session: Session, subscription_id: str, name: str) -> models.ResourceGroup | None:
    return session.get(models.ResourceGroup, ids.key(ids.resource_group_id(subscription_id, name)))


def require_usable(session: Session, subscription_id: str, name: str) -> models.ResourceGroup:
    """The group exists and is not being deleted: resources may be created in it."""
    row = get(session, subscription_id, name)
    if row.provisioning_state == "Deleting":
        raise errors.ResourceGroupBeingDeleted(
            f"The resource group '{row.name}' is in deprovisioning state and cannot perform this operation.")
    return row


def create_or_update(session: Session, clock: Clock, subscription_id: str, name: str, spec: GroupSpec,
                     regions: tuple[str, ...]) -> tuple[models.ResourceGroup, bool]:
    check_name(name)
    location = normalize_location(spec.location, regions)
    row = find(session, subscription_id, name)
    now = clock.now()
    if row is None:
        row = models.ResourceGroup(
            key=ids.key(ids.resource_group_id(subscription_id, name)), subscription_id=subscription_id,
            name=name, location=location, tags=spec.tags or {}, managed_by=spec.managed_by,
            provisioning_state="Succeeded", created_at=now, changed_at=now)
        session.add(row)
        return row, True
    if row.provisioning_state == "Deleting":
        raise errors.ResourceGroupBeingDeleted(
            f"The resource group '{row.name}' is in deprovisioning state and cannot perform this operation.")
    if row.location != location:
        raise errors.InvalidResourceGroupLocation(
            f"Invalid resource group location '{spec.location}'. The Resource group already exists in location "
            f"'{row.location}'.")
    row.tags = spec.tags or {}
    if spec.managed_by is not None:
        row.managed_by = spec.managed_by
    row.changed_at = now
    return row, False


def patch(session: Session, clock: Clock, subscription_id: str, name: str, body: dict[str, Any]) -> (
        models.ResourceGroup):
    row = require_usable(session, subscription_id, name)
    if "tags" in body and body["tags"] is not None:
        row.tags = dict(body["tags"])
    if body.get("managedBy") is not None:
        row.managed_by = body["managedBy"]
    row.changed_at = clock.now()
    return row


def list_groups(session: Session, subscription_id: str) -> list[models.ResourceGroup]:
    return list(session.scalars(select(models.ResourceGroup).where(
        models.ResourceGroup.subscription_id == subscription_id).order_by(models.ResourceGroup.key)))


def begin_delete(session: Session, clock: Clock, subscription_id: str, name: str) -> models.Operation:
    """Mark the group ``Deleting`` and record the deletion; the reconciler deletes its resources."""
    row = get(session, subscription_id, name)
    group_id = ids.resource_group_id(subscription_id, row.name)
    active = operations.find_active(session, DELETE_KIND, group_id)
    if active is not None:
        return active
    row.provisioning_state = "Deleting"
    row.changed_at = clock.now()
    return operations.start(session, clock, subscription_id=subscription_id, location=row.location,
                            namespace="Microsoft.Resources", kind=DELETE_KIND, target_id=group_id)
