"""Polling endpoints of long-running operations (never 404 while a client may still poll)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import arm
from shoal.api.deps import arm_caller, in_thread, require_subscription, services
from shoal.api.errors import arm_error_body
from shoal.core import errors, ids
from shoal.domain import operations
from shoal.store import models

router = APIRouter()


async def _load(request: Request, subscription_id: str, operation_id: str) -> models.Operation:
    arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> models.Operation:
        with svc.db.read() as s:
            require_subscription(s, subscription_id)
            return operations.get(s, subscription_id, operation_id)

    return await in_thread(work)


# Work that ends with no resource to show: the Location monitor then answers an empty 200.
NO_RESULT_BODY = {"delete", "start", "powerOff", "restart", "deallocate", "endGetAccess"}


def result_response(request: Request, op: models.Operation) -> Response:
    """Location-style polling: 202 while running, then the final result (or the error).

    For a PUT the final result is the resource itself (az reads it from this URL, not from a final GET);
    for an action with output (run-command) it is that output.
    """
    if op.status == operations.IN_PROGRESS:
        return Response(status_code=202, headers={"Location": str(request.url), "Retry-After": "1"})
    if op.status == operations.FAILED and op.error:
        # Generic on purpose: the code and status are data, stored with the operation when it failed.
        err = errors.AzureError(op.error["message"], code=op.error["code"], status=op.error.get("status", 500))
        return JSONResponse(arm_error_body(err), status_code=err.status)
    result = op.payload.get("result")
    if result is not None:
        return JSONResponse(result, status_code=200)
    type_, _, work = op.kind.partition(":")
    if work and work not in NO_RESULT_BODY:
        body = _resource_body(request, type_, op.target_id)
        if body is not None:
            return JSONResponse(body, status_code=200)
    return Response(status_code=200)


def _resource_body(request: Request, type_: str, target_id: str) -> dict[str, Any] | None:
    from shoal.api.arm.compute import render
    from shoal.domain import resources
    from shoal.domain.compute.registry import KINDS

    kind = next((k for k in KINDS.values() if k.type.lower() == type_.lower()), None)
    if kind is None:
        return None
    with services(request).db.read() as s:
        row = resources.find(s, ids.parse(target_id))
        return render(kind, row) if row is not None else None


@router.get("/subscriptions/{subscription_id}/operationResults/{operation_id}")
async def resource_group_operation_result(request: Request, subscription_id: str, operation_id: str) -> Response:
    op = await _load(request, subscription_id, operation_id)
    return await in_thread(lambda: result_response(request, op))


@router.get("/subscriptions/{subscription_id}/providers/{namespace}/locations/{location}/operations/{operation_id}")
async def operation_status(request: Request, subscription_id: str, namespace: str, location: str,
                           operation_id: str) -> JSONResponse:
    op = await _load(request, subscription_id, operation_id)
    headers = {"Retry-After": "1"} if op.status == operations.IN_PROGRESS else None
    return JSONResponse(operations.status_body(op), headers=headers)


@router.get(
    "/subscriptions/{subscription_id}/providers/{namespace}/locations/{location}/operationResults/{operation_id}")
async def operation_result(request: Request, subscription_id: str, namespace: str, location: str,
                           operation_id: str) -> Response:
    op = await _load(request, subscription_id, operation_id)
    return await in_thread(lambda: result_response(request, op))
