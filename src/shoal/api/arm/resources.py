"""Generic resource listing across types: ``GET /subscriptions/{s}[/resourceGroups/{g}]/resources``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.core import ids
from shoal.domain import authorization, resource_groups, resources

router = APIRouter()


def _filter(rows: list[dict[str, Any]], flt: str | None) -> list[dict[str, Any]]:
    """Supports the common ``resourceType eq 'X'`` and ``name eq 'X'`` filters."""
    if not flt:
        return rows
    import re

    for field, key in (("resourceType", "type"), ("name", "name")):
        m = re.search(rf"{field}\s+eq\s+'([^']+)'", flt, re.IGNORECASE)
        if m:
            rows = [r for r in rows if str(r[key]).lower() == m.group(1).lower()]
    return rows


@router.get("/subscriptions/{subscription_id}/resources")
async def list_subscription_resources(request: Request, subscription_id: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, "Microsoft.Resources/subscriptions/resources/read",
                      f"/subscriptions/{subscription_id}")
            return [resources.generic_body(r) for r in resources.list_in_subscription(s, subscription_id)
                    if authorization.allowed(s, caller, f"{r.type}/read", r.id)]

    rows = _filter(await in_thread(work), request.query_params.get("$filter"))
    return arm.page(request, rows, svc.settings.page_size)


@router.get("/subscriptions/{subscription_id}/resourceGroups/{group}/resources")
async def list_group_resources(request: Request, subscription_id: str, group: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            gid = ids.resource_group_id(subscription_id, group)
            authorize(s, caller, subscription_id, "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
                      gid)
            resource_groups.get(s, subscription_id, group)
            return [resources.generic_body(r) for r in resources.list_in_group(s, ids.key(gid))]

    rows = _filter(await in_thread(work), request.query_params.get("$filter"))
    return arm.page(request, rows, svc.settings.page_size)
