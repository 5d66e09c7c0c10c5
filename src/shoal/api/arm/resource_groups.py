"""``Microsoft.Resources/resourceGroups``: PUT/GET/HEAD/PATCH/DELETE and list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, require_subscription, services
from shoal.core import ids
from shoal.domain import authorization, resource_groups
from shoal.schemas.arm import ResourceGroupPatch, ResourceGroupPut
from shoal.store import models

router = APIRouter()

READ = "Microsoft.Resources/subscriptions/resourceGroups/read"
WRITE = "Microsoft.Resources/subscriptions/resourceGroups/write"
DELETE = "Microsoft.Resources/subscriptions/resourceGroups/delete"


def group_body(row: models.ResourceGroup) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ids.resource_group_id(row.subscription_id, row.name), "name": row.name,
        "type": "Microsoft.Resources/resourceGroups", "location": row.location,
        "properties": {"provisioningState": row.provisioning_state},
    }
    if row.tags:
        body["tags"] = row.tags
    if row.managed_by:
        body["managedBy"] = row.managed_by
    return body


PATH = "/subscriptions/{subscription_id}/resourceGroups/{group}"


@router.put(PATH)
async def put_group(request: Request, subscription_id: str, group: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    spec = await arm.read_model(request, ResourceGroupPut)
    svc = services(request)

    def work() -> tuple[dict[str, Any], bool]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, WRITE, ids.resource_group_id(subscription_id, group))
            row, created = resource_groups.create_or_update(
                s, svc.clock, subscription_id, group,
                resource_groups.GroupSpec(spec.location, spec.tags, spec.managed_by), svc.settings.regions)
            return group_body(row), created

    body, created = await in_thread(work)
    return arm.ok(body, 201 if created else 200)


@router.get(PATH)
async def get_group(request: Request, subscription_id: str, group: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, READ, ids.resource_group_id(subscription_id, group))
            return group_body(resource_groups.get(s, subscription_id, group))

    return arm.ok(await in_thread(work))


@router.head(PATH)
async def group_exists(request: Request, subscription_id: str, group: str) -> Response:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> bool:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, READ, ids.resource_group_id(subscription_id, group))
            return resource_groups.find(s, subscription_id, group) is not None

    return Response(status_code=204 if await in_thread(work) else 404)


@router.patch(PATH)
async def patch_group(request: Request, subscription_id: str, group: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    patch = await arm.read_model(request, ResourceGroupPatch)
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, WRITE, ids.resource_group_id(subscription_id, group))
            return group_body(resource_groups.patch(
                s, svc.clock, subscription_id, group, patch.model_dump(by_alias=True, exclude_unset=True)))

    return arm.ok(await in_thread(work))


@router.delete(PATH)
async def delete_group(request: Request, subscription_id: str, group: str) -> Response:
    caller = arm_caller(request)
    version = arm.api_version(request)
    svc = services(request)

    def work() -> str:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, DELETE, ids.resource_group_id(subscription_id, group))
            return resource_groups.begin_delete(s, svc.clock, subscription_id, group).id

    op_id = await in_thread(work)
    svc.nudge("operations")
    return arm.accepted(arm.location_headers(
        svc.settings.base_url, f"/subscriptions/{subscription_id}/operationresults/{op_id}", version.text))


@router.get("/subscriptions/{subscription_id}/resourceGroups")
async def list_groups(request: Request, subscription_id: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            require_subscription(s, subscription_id)
            # Like ARM, list what the caller may read: everything with subscription-wide read, else the
            # groups it holds a role on; 403 only when it can read none of them and has no role at all.
            groups = [g for g in resource_groups.list_groups(s, subscription_id) if authorization.allowed(
                s, caller, READ, ids.resource_group_id(subscription_id, g.name))]
            if not groups:
                authorize(s, caller, subscription_id, READ, f"/subscriptions/{subscription_id}")
            return [group_body(g) for g in groups]

    return arm.page(request, await in_thread(work), svc.settings.page_size)
