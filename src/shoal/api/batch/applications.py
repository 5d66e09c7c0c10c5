"""Batch data plane: applications (list, get), the packages a pool or task may reference. Paths are relative to
``/batch/{account}``; only active packages are shown, as on Azure."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api.batch.common import authenticate, page
from shoal.api.deps import in_thread
from shoal.core import errors
from shoal.domain.batch import applications as apps

router = APIRouter(prefix="/batch/{account}")
READ = "Microsoft.Batch/batchAccounts/applications/read"


@router.get("/applications")
async def list_applications(request: Request, account: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            found = [apps.summary(s, row) for row in apps.list_apps(s, br.account)]
            return [item for item in found if item is not None]

    return page(request, await in_thread(work), f"{br.account_url}/$metadata#applications")


@router.get("/applications/{application_id}")
async def get_application(request: Request, account: str, application_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> dict[str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            row = apps.find_app(s, br.account, application_id)
            found = apps.summary(s, row) if row is not None else None
            if found is None:
                raise errors.ApplicationNotFound(f"The specified application '{application_id}' does not exist.")
            return found

    body = await in_thread(work)
    return JSONResponse({"odata.metadata": f"{br.account_url}/$metadata#applications/@Element", **body})
