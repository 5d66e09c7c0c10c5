"""The small part of Microsoft Graph that ``az role assignment`` needs to resolve principals.

The cloud document points ``microsoftGraphResourceId`` at ``{base}/graph/``, so az sends Graph calls here
with a token for that audience. Only service principals exist in Shoal's directory.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api import arm
from shoal.api.deps import in_thread, services
from shoal.core import errors
from shoal.domain import identity
from shoal.store import models

router = APIRouter()


def graph_audience(base_url: str) -> str:
    return base_url + "/graph/"


def _graph_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _principal_body(p: models.Principal) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.servicePrincipal", "id": p.object_id, "appId": p.client_id,
            "displayName": p.display_name, "servicePrincipalNames": [p.client_id],
            "servicePrincipalType": "Application", "accountEnabled": True, "appOwnerOrganizationId": p.tenant_id}


def _authenticate(request: Request) -> JSONResponse | None:
    svc = services(request)
    try:
        svc.tokens.verify(request.headers.get("authorization"), (graph_audience(svc.settings.base_url),),
                          svc.tenant_id)
    except errors.AzureError as exc:
        return _graph_error(401, "InvalidAuthenticationToken", exc.message)
    return None


_SPN = re.compile(r"servicePrincipalNames/any\(\w+:\w+\s+eq\s+'([^']*)'\)|appId\s+eq\s+'([^']*)'|"
                  r"displayName\s+eq\s+'([^']*)'", re.IGNORECASE)


@router.get("/graph/v1.0/servicePrincipals")
async def list_service_principals(request: Request) -> JSONResponse:
    if (err := _authenticate(request)) is not None:
        return err
    svc = services(request)
    m = _SPN.search(request.query_params.get("$filter", "") or "")
    wanted = next((g for g in m.groups() if g is not None), None) if m else None

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            rows = identity.list_principals(s)
            if wanted is not None:
                rows = [p for p in rows if wanted.lower() in (p.client_id, p.display_name.lower())]
            return [_principal_body(p) for p in rows]

    return JSONResponse({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals",
                         "value": await in_thread(work)})


@router.get("/graph/v1.0/servicePrincipals/{object_id}")
async def get_service_principal(request: Request, object_id: str) -> JSONResponse:
    if (err := _authenticate(request)) is not None:
        return err
    svc = services(request)

    def work() -> dict[str, Any] | None:
        with svc.db.read() as s:
            p = identity.find_principal(s, object_id)
            return _principal_body(p) if p else None

    body = await in_thread(work)
    if body is None:
        return _graph_error(404, "Request_ResourceNotFound",
                            f"Resource '{object_id}' does not exist or one of its queried reference-property "
                            "objects are not present.")
    return JSONResponse(body)


@router.post("/graph/v1.0/directoryObjects/getByIds")
async def get_by_ids(request: Request) -> JSONResponse:
    if (err := _authenticate(request)) is not None:
        return err
    try:
        body = await arm.read_json(request)
    except errors.AzureError as exc:
        return _graph_error(400, "BadRequest", exc.message)
    wanted = {str(i).lower() for i in (body.get("ids") or [])} if isinstance(body, dict) else set()
    svc = services(request)

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            return [_principal_body(p) for p in identity.list_principals(s) if p.object_id in wanted]

    return JSONResponse({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
                         "value": await in_thread(work)})


@router.get("/graph/v1.0/users")
async def list_users(request: Request) -> JSONResponse:
    if (err := _authenticate(request)) is not None:
        return err
    return JSONResponse({"value": []})
