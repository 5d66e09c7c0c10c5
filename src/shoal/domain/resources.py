"""The generic view of ARM resources shared by every resource type (``GET .../resources``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.clock import Clock
from shoal.core.etags import new_etag
from shoal.core.ids import ResourceId
from shoal.store import models

# Template deployments are stored as resource rows but, as in Azure, are not resources of their group.
NOT_LISTED = "microsoft.resources/deployments"


def list_in_subscription(session: Session, subscription_id: str) -> list[models.Resource]:
    return list(session.scalars(select(models.Resource).where(
        models.Resource.subscription_id == subscription_id, models.Resource.type_key != NOT_LISTED,
    ).order_by(models.Resource.key)))


def list_in_group(session: Session, group_key: str) -> list[models.Resource]:
    return list(session.scalars(select(models.Resource).where(
        models.Resource.group_key == group_key, models.Resource.type_key != NOT_LISTED,
    ).order_by(models.Resource.key)))


def generic_body(row: models.Resource) -> dict[str, Any]:
    body: dict[str, Any] = {"id": row.id, "name": row.name, "type": row.type}
    if row.location:
        body["location"] = row.location
    if row.sku:
        body["sku"] = row.sku
    if row.kind:
        body["kind"] = row.kind
    if row.tags:
        body["tags"] = row.tags
    return body


# --- shared CRUD for ARM-tracked resources ------------------------------------------------------------
def not_found(rid: ResourceId) -> errors.AzureError:
    group = f" under resource group '{rid.resource_group}'" if rid.resource_group else ""
    return errors.ResourceNotFound(
        f"The Resource '{rid.type}/{'/'.join(rid.names)}'{group} was not found. Check the name and resource "
        "group, or list the resources with GET .../resources.")


def find(session: Session, rid: ResourceId) -> models.Resource | None:
    return session.get(models.Resource, rid.key)


def get(session: Session, rid: ResourceId, *, expected_type: str | None = None) -> models.Resource:
    row = find(session, rid)
    if row is None or (expected_type and row.type_key != expected_type.lower()):
        raise not_found(rid)
    return row


def create_row(session: Session, clock: Clock, rid: ResourceId, *, location: str | None,
               properties: dict[str, Any], internal: dict[str, Any] | None = None,
               tags: dict[str, str] | None = None, sku: dict[str, Any] | None = None,
               provisioning_state: str = "Creating") -> models.Resource:
    now = clock.now()
    parent = rid.parent()
    row = models.Resource(
        key=rid.key, id=str(rid), subscription_id=rid.subscription,
        group_key=ids.key(ids.resource_group_id(rid.subscription, rid.resource_group or "")),
        parent_key=parent.key if parent else None, type=rid.type, type_key=rid.type.lower(), name=rid.name,
        location=location, tags=tags or {}, sku=sku, properties=properties, internal=internal or {},
        provisioning_state=provisioning_state, etag=new_etag(), created_at=now, changed_at=now,
    )
    session.add(row)
    return row


def touch(row: models.Resource, clock: Clock) -> None:
    row.etag = new_etag()
    row.changed_at = clock.now()


def list_of_type(session: Session, subscription_id: str, type_: str, *, group: str | None = None,
                 parent: ResourceId | None = None) -> list[models.Resource]:
    q = select(models.Resource).where(models.Resource.subscription_id == subscription_id,
                                      models.Resource.type_key == type_.lower())
    if group is not None:
        q = q.where(models.Resource.group_key == ids.key(ids.resource_group_id(subscription_id, group)))
    if parent is not None:
        q = q.where(models.Resource.parent_key == parent.key)
    return list(session.scalars(q.order_by(models.Resource.key)))


def children(session: Session, rid: ResourceId) -> list[models.Resource]:
    return list(session.scalars(select(models.Resource).where(models.Resource.parent_key == rid.key)))
