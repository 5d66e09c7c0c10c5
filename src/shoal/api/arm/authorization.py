"""``Microsoft.Authorization``: role assignments (PUT/GET/DELETE/list) and built-in role definitions."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.auth import rbac
from shoal.core.timefmt import format_timestamp
from shoal.domain import authorization
from shoal.schemas.arm import RoleAssignmentPut
from shoal.store import models

router = APIRouter()

NS = "/providers/Microsoft.Authorization"
ASSIGNMENT_READ = "Microsoft.Authorization/roleAssignments/read"
ASSIGNMENT_WRITE = "Microsoft.Authorization/roleAssignments/write"
ASSIGNMENT_DELETE = "Microsoft.Authorization/roleAssignments/delete"
DEFINITION_READ = "Microsoft.Authorization/roleDefinitions/read"


def _scope(raw: str) -> tuple[str, str]:
    """Validate an ARM scope path; returns (scope, subscription id)."""
    parsed = authorization.parse_scope(raw)
    return str(parsed), parsed.subscription


def assignment_body(ra: models.RoleAssignment, subscription_id: str) -> dict[str, Any]:
    role = rbac.role_by_id(ra.role_definition_id)
    assert role is not None
    created = format_timestamp(ra.created_at)
    return {
        "id": f"{ra.scope if ra.scope != '/' else ''}{NS}/roleAssignments/{ra.name}",
        "name": ra.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": authorization.role_definition_resource_id(subscription_id, role),
            "principalId": ra.principal_id, "principalType": ra.principal_type, "scope": ra.scope,
            "condition": None, "conditionVersion": None, "createdOn": created, "updatedOn": created,
            "createdBy": ra.created_by, "updatedBy": ra.created_by,
            "delegatedManagedIdentityResourceId": None, "description": ra.description,
        },
    }


def definition_body(role: rbac.RoleDefinition, subscription_id: str | None) -> dict[str, Any]:
    return {
        "id": authorization.role_definition_resource_id(subscription_id, role), "name": role.id,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.name, "type": "BuiltInRole", "description": role.description,
            "assignableScopes": ["/"],
            "permissions": [{"actions": list(role.actions), "notActions": list(role.not_actions),
                             "dataActions": list(role.data_actions), "notDataActions": []}],
            "createdOn": "2015-02-02T21:55:09.8806423Z", "updatedOn": "2024-01-01T00:00:00.0000000Z",
            "createdBy": None, "updatedBy": None,
        },
    }


@router.put("/{raw_scope:path}" + NS + "/roleAssignments/{name}")
async def put_assignment(request: Request, raw_scope: str, name: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    scope, sub = _scope(raw_scope)
    body = await arm.read_model(request, RoleAssignmentPut)
    svc = services(request)

    def work() -> tuple[dict[str, Any], bool]:
        with svc.db.write() as s:
            authorize(s, caller, sub, ASSIGNMENT_WRITE, scope)
            p = body.properties
            row, created = authorization.create_assignment(
                s, svc.clock, caller, scope, name, p.role_definition_id, p.principal_id, p.principal_type,
                p.description)
            return assignment_body(row, sub), created

    out, created = await in_thread(work)
    return arm.ok(out, 201 if created else 200)


@router.get("/{raw_scope:path}" + NS + "/roleAssignments/{name}")
async def get_assignment(request: Request, raw_scope: str, name: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    scope, sub = _scope(raw_scope)
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.read() as s:
            authorize(s, caller, sub, ASSIGNMENT_READ, scope)
            return assignment_body(authorization.get_assignment(s, scope, name), sub)

    return arm.ok(await in_thread(work))


@router.delete("/{raw_scope:path}" + NS + "/roleAssignments/{name}")
async def delete_assignment(request: Request, raw_scope: str, name: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    scope, sub = _scope(raw_scope)
    svc = services(request)

    def work() -> dict[str, Any] | None:
        with svc.db.write() as s:
            authorize(s, caller, sub, ASSIGNMENT_DELETE, scope)
            row = authorization.delete_assignment(s, scope, name)
            return assignment_body(row, sub) if row is not None else None

    out = await in_thread(work)
    if out is None:
        return JSONResponse(None, status_code=204)
    return arm.ok(out)


_PRINCIPAL = re.compile(r"(?:principalId\s+eq\s+|assignedTo\()\s*'([^']+)'", re.IGNORECASE)


@router.get("/{raw_scope:path}" + NS + "/roleAssignments")
async def list_assignments(request: Request, raw_scope: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    scope, sub = _scope(raw_scope)
    flt = request.query_params.get("$filter", "") or ""
    at_scope = "atscope()" in flt.replace(" ", "").lower()
    m = _PRINCIPAL.search(flt)
    principal = m.group(1).lower() if m else None
    svc = services(request)

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            authorize(s, caller, sub, ASSIGNMENT_READ, scope)
            rows = authorization.list_assignments(s, scope, at_scope_only=at_scope, principal_id=principal)
            return [assignment_body(r, sub) for r in rows]

    return arm.page(request, await in_thread(work), svc.settings.page_size)


_ROLE_NAME = re.compile(r"roleName\s+eq\s+'([^']+)'", re.IGNORECASE)


@router.get("/{raw_scope:path}" + NS + "/roleDefinitions")
async def list_definitions(request: Request, raw_scope: str) -> JSONResponse:
    arm_caller(request)
    arm.api_version(request)
    sub = _scope(raw_scope)[1] if raw_scope.strip("/") else None
    m = _ROLE_NAME.search(request.query_params.get("$filter", "") or "")
    roles = [r for r in rbac.BUILT_IN_ROLES if m is None or r.name.lower() == m.group(1).lower()]
    return arm.ok({"value": [definition_body(r, sub) for r in roles]})


@router.get("/{raw_scope:path}" + NS + "/roleDefinitions/{role_id}")
async def get_definition(request: Request, raw_scope: str, role_id: str) -> JSONResponse:
    arm_caller(request)
    arm.api_version(request)
    sub = _scope(raw_scope)[1] if raw_scope.strip("/") else None
    return arm.ok(definition_body(authorization.parse_role_definition_id(role_id), sub))


@router.get(NS + "/roleDefinitions")
async def list_definitions_root(request: Request) -> JSONResponse:
    return await list_definitions(request, "")
