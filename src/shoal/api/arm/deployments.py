"""``Microsoft.Resources/deployments`` at resource-group scope: PUT (a long-running operation with
``Azure-AsyncOperation`` and ``Retry-After``), GET, HEAD, DELETE, list, validate, cancel, exportTemplate, the
deployment's operations and its operation status. ``whatIf`` is refused with a clear 400.

Routes stay thin: authenticate, parse, call one use case of ``domain/templates/deployments.py``, render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.api.errors import arm_error_body
from shoal.core import errors, ids, jsonbody
from shoal.domain import operations
from shoal.domain.templates import deployments, jsonc

router = APIRouter()
T = TypeVar("T")

BASE = "/subscriptions/{subscription_id}/resourceGroups/{group}/providers/Microsoft.Resources/deployments"
ITEM = BASE + "/{name}"
WRITE, READ, DELETE = (f"{deployments.TYPE}/{a}" for a in ("write", "read", "delete"))


def _rid(subscription_id: str, group: str, name: str) -> ids.ResourceId:
    return deployments.deployment_id(subscription_id, group, name)


async def _on_deployment(request: Request, subscription_id: str, group: str, name: str, action: str,
                         use: Callable[[Any, ids.ResourceId], T], *, write: bool = False) -> T:
    """What every route on one deployment does first (the caller, the api-version, the caller's right to
    ``action`` on it), then ``use(session, deployment id)`` off the event loop, in a write session with
    ``write``."""
    caller = arm_caller(request)
    arm.api_version(request)
    rid = _rid(subscription_id, group, name)
    svc = services(request)

    def work() -> T:
        with svc.db.write() if write else svc.db.read() as s:
            authorize(s, caller, subscription_id, action, str(rid))
            return use(s, rid)

    return await in_thread(work)


async def _raw(request: Request) -> tuple[Any, str]:
    """The body and its text as JSON. az sends the template file's own text (JSON with comments, an unquoted
    ``template`` key): that is read too, keeping the file's lines for the positions of errors."""
    raw = await request.body()
    if len(raw) > arm.MAX_BODY:
        raise errors.RequestBodyTooLarge(f"The request body is larger than {arm.MAX_BODY} bytes.")
    text = jsonc.to_json(raw.decode("utf-8", errors="replace"))
    try:
        return jsonbody.loads(text), text
    except jsonbody.TooDeep as exc:
        raise errors.InvalidRequestContent(f"The request content was invalid: {exc}") from None
    except ValueError as exc:
        raise errors.InvalidRequestContent(
            f"The request content was invalid and could not be deserialized: {exc}.") from None


@router.put(ITEM)
async def put_deployment(request: Request, subscription_id: str, group: str, name: str) -> JSONResponse:
    caller = arm_caller(request)
    version = arm.api_version(request)
    rid = _rid(subscription_id, group, name)
    body, raw = await _raw(request)
    svc = services(request)
    ctx = svc.compute_context()

    def work() -> tuple[dict[str, Any], str, bool]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, WRITE, str(rid))
            row, op, created = deployments.create_or_update(ctx, s, caller, rid, body, raw)
            return deployments.render(row), op.id, created

    out, op_id, created = await in_thread(work)
    svc.nudge("operations")
    headers = {"Azure-AsyncOperation": f"{svc.settings.base_url}{rid}/operationStatuses/{op_id}"
                                       f"?api-version={version.text}", "Retry-After": "1"}
    return JSONResponse(out, status_code=201 if created else 200, headers=headers)


@router.get(ITEM)
async def get_deployment(request: Request, subscription_id: str, group: str, name: str) -> JSONResponse:
    return JSONResponse(await _on_deployment(request, subscription_id, group, name, READ,
                                             lambda s, rid: deployments.render(deployments.get(s, rid))))


@router.head(ITEM)
async def deployment_exists(request: Request, subscription_id: str, group: str, name: str) -> Response:
    found = await _on_deployment(request, subscription_id, group, name, READ,
                                 lambda s, rid: deployments.find(s, rid) is not None)
    return Response(status_code=204 if found else 404)


@router.delete(ITEM)
async def delete_deployment(request: Request, subscription_id: str, group: str, name: str) -> Response:
    """Deletes the deployment's record only (never the resources it deployed), at once: 204."""
    await _on_deployment(request, subscription_id, group, name, DELETE, deployments.delete, write=True)
    return Response(status_code=204)


@router.get(BASE)
async def list_deployments(request: Request, subscription_id: str, group: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, READ, ids.resource_group_id(subscription_id, group))
            return [deployments.render(r) for r in deployments.list_in_group(s, subscription_id, group)]

    return arm.page(request, await in_thread(work), svc.settings.page_size)


@router.post(ITEM + "/validate")
async def validate_deployment(request: Request, subscription_id: str, group: str, name: str) -> JSONResponse:
    """200 with the deployment as it would be; 400 ``InvalidTemplate`` otherwise (both the SDKs accept)."""
    caller = arm_caller(request)
    arm.api_version(request)
    rid = _rid(subscription_id, group, name)
    body, raw = await _raw(request)
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, f"{deployments.TYPE}/validate/action", str(rid))
            return deployments.validate(s, rid, body, raw, caller.tenant_id, svc.clock.now())

    return JSONResponse(await in_thread(work))


@router.post(ITEM + "/whatIf")
async def what_if(request: Request, subscription_id: str, group: str, name: str) -> Response:
    arm_caller(request)
    arm.api_version(request)
    raise errors.WhatIfNotSupported("What-if is not supported by Shoal: validate the template with POST "
                                    ".../validate, or deploy it.")


@router.post(ITEM + "/cancel")
async def cancel_deployment(request: Request, subscription_id: str, group: str, name: str) -> Response:
    svc = services(request)
    ctx = svc.compute_context()
    await _on_deployment(request, subscription_id, group, name, f"{deployments.TYPE}/cancel/action",
                         lambda s, rid: deployments.cancel(ctx, s, rid), write=True)
    svc.nudge("operations")
    return Response(status_code=204)


@router.post(ITEM + "/exportTemplate")
async def export_template(request: Request, subscription_id: str, group: str, name: str) -> JSONResponse:
    return JSONResponse(await _on_deployment(
        request, subscription_id, group, name, f"{deployments.TYPE}/exportTemplate/action",
        lambda s, rid: {"template": deployments.get(s, rid).internal.get("template")}))


# The SDKs name a deployment's operations without the provider segment; both spellings are served.
OPERATIONS = ("/subscriptions/{subscription_id}/resourceGroups/{group}/deployments/{name}/operations",
              ITEM + "/operations")


@router.get(OPERATIONS[0])
@router.get(OPERATIONS[1])
async def list_operations(request: Request, subscription_id: str, group: str, name: str) -> JSONResponse:
    found = await _on_deployment(request, subscription_id, group, name, f"{deployments.TYPE}/operations/read",
                                 lambda s, rid: deployments.operations_of(deployments.get(s, rid)))
    return arm.page(request, found, services(request).settings.page_size)


@router.get(OPERATIONS[0] + "/{operation_id}")
@router.get(OPERATIONS[1] + "/{operation_id}")
async def get_operation(request: Request, subscription_id: str, group: str, name: str,
                        operation_id: str) -> JSONResponse:
    return JSONResponse(await _on_deployment(
        request, subscription_id, group, name, f"{deployments.TYPE}/operations/read",
        lambda s, rid: deployments.operation_of(deployments.get(s, rid), operation_id)))


@router.get(ITEM + "/operationStatuses/{operation_id}")
async def operation_status(request: Request, subscription_id: str, group: str, name: str,
                           operation_id: str) -> JSONResponse:
    """The ``Azure-AsyncOperation`` document of a deployment: ``Running`` until it ends, then its state with the
    deployment's error (``DeploymentFailed`` and its details)."""
    caller = arm_caller(request)
    arm.api_version(request)
    rid = _rid(subscription_id, group, name)
    svc = services(request)

    def work() -> tuple[str, dict[str, Any] | None]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, READ, str(rid))
            op = operations.get(s, subscription_id, operation_id)
            row = deployments.find(s, rid)
            if op.status == operations.IN_PROGRESS:
                return "Running", None
            state = row.provisioning_state if row is not None else op.status
            err = deployments.error_of(row) if row is not None else None
            return state, arm_error_body(err)["error"] if err is not None else None

    state, error = await in_thread(work)
    body: dict[str, Any] = {"status": state}
    if error is not None:
        body["error"] = error
    return JSONResponse(body, headers={"Retry-After": "1"} if state == "Running" else None)
