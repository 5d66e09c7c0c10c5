"""``Microsoft.Batch`` management plane: applications and application packages (``.../applications/{app}`` and
``.../applications/{app}/versions/{v}`` with ``activate``).

A package's ``storageUrl`` is a signed blob URL of a Shoal-served container of its own (``api/containers.py``),
which takes the zip as a block blob ``PUT`` as Azure Storage does; ``activate`` checks that the upload is a zip.
"""

from __future__ import annotations

import hashlib
import zipfile
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import arm
from shoal.api.arm.batch_mgmt import ACCT, TYPE, _account_rid, _get_account, on_account
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.core import errors
from shoal.domain.batch import applications as apps

router = APIRouter()
APP = ACCT + "/applications/{app}"
VERSION = APP + "/versions/{version}"


async def _body(request: Request) -> dict[str, Any]:
    data = await arm.read_json(request, required=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errors.InvalidRequestContent("The request content was invalid: expected a JSON object.")
    return data


@router.put(APP)
@router.patch(APP)
async def put_application(request: Request, subscription_id: str, group: str, account: str, app: str
                          ) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    body = await _body(request)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/applications/write", str(rid))
            acct = _get_account(s, rid)
            if request.method == "PATCH":
                row = apps.patch_app(s, svc.clock, acct, app, body)
            else:
                row = apps.put_app(s, svc.clock, acct, app, body)
            s.flush()
            return apps.render_app(row)

    return JSONResponse(await in_thread(work))


@router.get(APP)
async def get_application(request: Request, subscription_id: str, group: str, account: str, app: str
                          ) -> JSONResponse:
    return JSONResponse(await on_account(request, "applications/read",
                                         lambda s, acct: apps.render_app(apps.get_app(s, acct, app))))


@router.get(ACCT + "/applications")
async def list_applications(request: Request, subscription_id: str, group: str, account: str) -> JSONResponse:
    found = await on_account(request, "applications/read",
                             lambda s, acct: [apps.render_app(r) for r in apps.list_apps(s, acct)])
    return arm.page(request, found, services(request).settings.page_size)


@router.delete(APP)
async def delete_application(request: Request, subscription_id: str, group: str, account: str, app: str
                             ) -> Response:
    svc = services(request)
    gone = await on_account(request, "applications/delete", lambda s, acct: apps.delete_app(s, acct, app),
                            write=True)
    def drop_containers() -> None:  # after the records are gone: a crash leaves an orphan container, not a hole
        for container in gone or []:
            svc.blobs.delete_container(container)

    await in_thread(drop_containers)
    return Response(status_code=200 if gone is not None else 204)


# --- packages ------------------------------------------------------------------------------------------------
@router.put(VERSION)
async def put_package(request: Request, subscription_id: str, group: str, account: str, app: str, version: str
                      ) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    await _body(request)  # Azure's body carries no properties a client sets
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, Any]:
        key = svc.container_key()
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/applications/versions/write", str(rid))
            row, _created = apps.put_version(s, svc.clock, _get_account(s, rid), app, version)
            s.flush()
            svc.blobs.create_container(str(row.internal["container"]))
            return apps.render_version(row, svc.settings.base_url, key)

    return JSONResponse(await in_thread(work))


@router.get(VERSION)
async def get_package(request: Request, subscription_id: str, group: str, account: str, app: str, version: str
                      ) -> JSONResponse:
    svc = services(request)
    key = await in_thread(svc.container_key)
    return JSONResponse(await on_account(request, "applications/versions/read", lambda s, acct: apps.render_version(
        apps.get_version(s, apps.get_app(s, acct, app), version), svc.settings.base_url, key)))


@router.get(APP + "/versions")
async def list_packages(request: Request, subscription_id: str, group: str, account: str, app: str
                        ) -> JSONResponse:
    svc = services(request)
    key = await in_thread(svc.container_key)
    found = await on_account(request, "applications/versions/read", lambda s, acct: [
        apps.render_version(r, svc.settings.base_url, key) for r in apps.versions(s, apps.get_app(s, acct, app))])
    return arm.page(request, found, svc.settings.page_size)


@router.delete(VERSION)
async def delete_package(request: Request, subscription_id: str, group: str, account: str, app: str,
                         version: str) -> Response:
    svc = services(request)
    container = await on_account(request, "applications/versions/delete",
                                 lambda s, acct: apps.delete_version(s, acct, app, version), write=True)
    if container:
        await in_thread(lambda: svc.blobs.delete_container(container))
    return Response(status_code=200 if container is not None else 204)


@router.post(VERSION + "/activate")
async def activate_package(request: Request, subscription_id: str, group: str, account: str, app: str,
                           version: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    body = await _body(request)
    rid = _account_rid(request)
    svc = services(request)

    def digest_of(container: str, blob: str) -> str | None:
        path = svc.blobs.find(container, [blob])
        if path is None:
            return None
        if not zipfile.is_zipfile(path):
            raise errors.InvalidParameter("The uploaded application package is not a zip file.", target="format")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def work() -> dict[str, Any]:
        key = svc.container_key()
        with svc.db.read() as s:
            row = apps.get_version(s, apps.get_app(s, _get_account(s, rid), app), version)
            where = (str(row.internal["container"]), str(row.internal.get("blob") or apps.BLOB))
        digest = digest_of(*where)
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/applications/versions/activate/action", str(rid))
            row = apps.activate(s, svc.clock, _get_account(s, rid), app, version, body.get("format"), digest)
            s.flush()
            return apps.render_version(row, svc.settings.base_url, key)

    return JSONResponse(await in_thread(work))
