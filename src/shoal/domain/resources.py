"""The generic view of ARM resources shared by every resource type (``GET .../resources``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.store import models


def list_in_subscription(session: Session, subscription_id: str) -> list[models.Resource]:
    return list(session.scalars(select(models.Resource).where(
        models.Resource.subscription_id == subscription_id).order_by(models.Resource.key)))


def list_in_group(session: Session, group_key: str) -> list[models.Resource]:
    return list(session.scalars(select(models.Resource).where(
        models.Resource.group_key == group_key).order_by(models.Resource.key)))


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
