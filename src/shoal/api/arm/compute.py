"""``Microsoft.Compute`` routes: one generic set of PUT/GET/PATCH/DELETE/list routes per resource kind,
plus VM actions. Routes stay thin: authenticate, parse, call one domain function, render."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.core import errors, ids
from shoal.core.ids import ResourceId
from shoal.core.timefmt import format_timestamp
from shoal.domain import operations, resource_groups, resources
from shoal.domain.compute import disks, galleries, service, vms
from shoal.domain.compute.kinds import ArmBody, ResourceKind
from shoal.domain.compute.registry import KINDS
from shoal.schemas import arm_compute
from shoal.store import models

router = APIRouter()

RG = "/subscriptions/{subscription_id}/resourceGroups/{group}/providers/Microsoft.Compute"
SUB = "/subscriptions/{subscription_id}/providers/Microsoft.Compute"
DOWNLOAD_PIECE = 1 << 20


def render(kind: ResourceKind, row: models.Resource, *, expand: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"id": row.id, "name": row.name, "type": row.type}
    if row.location:
        body["location"] = row.location
    if row.tags:
        body["tags"] = row.tags
    if row.sku:
        body["sku"] = row.sku
    if row.internal.get("attachedTo") and row.type_key == "microsoft.compute/disks":
        body["managedBy"] = row.internal["attachedTo"]
    body["properties"] = kind.render_properties(row)
    if "replicationstatus" in expand.lower() and isinstance(kind, galleries.GalleryImageVersionKind):
        body["properties"]["replicationStatus"] = galleries.replication_status(row)
    if "instanceview" in expand.lower() and isinstance(kind, vms.VirtualMachineKind):
        body["properties"]["instanceView"] = vms.instance_view(row, format_timestamp(row.changed_at), [])
    return body


def _rid(request: Request) -> ResourceId:
    return ids.parse(request.url.path)


def _status_headers(base_url: str, op: models.Operation, version: str, *, with_location: bool) -> dict[str, str]:
    loc = f"/subscriptions/{op.subscription_id}/providers/Microsoft.Compute/locations/{op.location}"
    return arm.async_headers(base_url, f"{loc}/operations/{op.id}",
                             f"{loc}/operationResults/{op.id}" if with_location else None, version)


def _start_action(svc: Any, s: Any, row: models.Resource, kind: ResourceKind, action: str, target_id: str,
                  payload: dict[str, Any], version: str) -> dict[str, str]:
    """Start the long-running operation of a resource action (VM actions, disk access) and its poll headers."""
    op = operations.start(s, svc.clock, subscription_id=row.subscription_id, location=row.location or "",
                          namespace="Microsoft.Compute", kind=service.op_kind(kind, action), target_id=target_id,
                          payload=payload)
    return _status_headers(svc.settings.base_url, op, version, with_location=True)


def _register(collection: str, kind: ResourceKind) -> None:
    segments = collection.split("/")
    item = RG + "".join(f"/{seg}/{{n{i}}}" for i, seg in enumerate(segments))
    parent = RG + "".join(f"/{seg}/{{n{i}}}" for i, seg in enumerate(segments[:-1]))
    lists = [parent + f"/{segments[-1]}"]
    if len(segments) == 1:
        lists.append(SUB + f"/{collection}")
    write, read, delete = f"{kind.type}/write", f"{kind.type}/read", f"{kind.type}/delete"

    async def put_item(request: Request) -> JSONResponse:
        caller = arm_caller(request)
        version = arm.api_version(request)
        rid = _rid(request)
        body = ArmBody.model_validate(await arm.read_resource(request, arm_compute.BODIES[collection]))
        svc = services(request)
        ctx = svc.compute_context()

        def work() -> tuple[dict[str, Any], int, dict[str, str], bool]:
            with svc.db.write() as s:
                authorize(s, caller, rid.subscription, write, str(rid))
                acc = service.put(ctx, s, kind, rid, body, request.headers.get("if-match"),
                                  request.headers.get("if-none-match"))
                status = kind.create_status if acc.created else kind.update_status
                headers = _status_headers(svc.settings.base_url, acc.operation, version.text,
                                          with_location=status == 202)
                return render(kind, acc.row), status, {**headers, "ETag": f'"{acc.row.etag}"'}, \
                    acc.row.provisioning_state != "Succeeded"

        out, status, headers, pending = await in_thread(work)
        if pending:
            svc.nudge("operations")
        return JSONResponse(out, status_code=status, headers=headers)

    async def get_item(request: Request) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        rid = _rid(request)
        svc = services(request)

        def work() -> dict[str, Any]:
            with svc.db.read() as s:
                authorize(s, caller, rid.subscription, read, str(rid))
                row = resources.get(s, rid, expected_type=kind.type)
                return render(kind, row, expand=request.query_params.get("$expand", ""))

        return JSONResponse(await in_thread(work))

    async def patch_item(request: Request) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        rid = _rid(request)
        body = await arm.read_resource(request, arm_compute.BODIES[collection])
        svc = services(request)
        ctx = svc.compute_context()

        def work() -> dict[str, Any]:
            with svc.db.write() as s:
                authorize(s, caller, rid.subscription, write, str(rid))
                resources.get(s, rid, expected_type=kind.type)
                return render(kind, service.patch_tags(ctx, s, rid, body))

        return JSONResponse(await in_thread(work))

    async def delete_item(request: Request) -> Response:
        caller = arm_caller(request)
        version = arm.api_version(request)
        rid = _rid(request)
        svc = services(request)
        ctx = svc.compute_context()

        def work() -> dict[str, str] | None:
            with svc.db.write() as s:
                authorize(s, caller, rid.subscription, delete, str(rid))
                resource_groups.get(s, rid.subscription, rid.resource_group or "")
                op = service.delete(ctx, s, kind, rid)
                return None if op is None else _status_headers(svc.settings.base_url, op, version.text,
                                                               with_location=True)

        headers = await in_thread(work)
        if headers is None:
            return Response(status_code=204)
        svc.nudge("operations")
        return Response(status_code=202, headers=headers)

    def list_route(path: str) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def list_items(request: Request) -> JSONResponse:
            caller = arm_caller(request)
            arm.api_version(request)
            svc = services(request)
            params = request.path_params
            sub = params["subscription_id"]
            group = params.get("group")
            parent_rid = None
            if len(segments) > 1:
                parent_rid = ids.parse(request.url.path.rsplit("/", 1)[0])

            def work() -> list[dict[str, Any]]:
                with svc.db.read() as s:
                    scope = str(parent_rid) if parent_rid else (
                        ids.resource_group_id(sub, group) if group else f"/subscriptions/{sub}")
                    authorize(s, caller, sub, read, scope)
                    if group:
                        resource_groups.get(s, sub, group)
                    if parent_rid:
                        resources.get(s, parent_rid)
                    rows = resources.list_of_type(s, sub, kind.type, group=group, parent=parent_rid)
                    return [render(kind, r) for r in rows]

            return arm.page(request, await in_thread(work), svc.settings.page_size)

        return list_items

    router.add_api_route(item, put_item, methods=["PUT"])
    router.add_api_route(item, get_item, methods=["GET"])
    router.add_api_route(item, patch_item, methods=["PATCH"])
    router.add_api_route(item, delete_item, methods=["DELETE"])
    for path in lists:
        router.add_api_route(path, list_route(path), methods=["GET"])


VM_ITEM = RG + "/virtualMachines/{vm}"


@router.post(VM_ITEM + "/generalize")
async def generalize_vm(request: Request, subscription_id: str, group: str, vm: str) -> Response:
    caller = arm_caller(request)
    arm.api_version(request)
    rid = ids.parse(request.url.path.rsplit("/", 1)[0])
    svc = services(request)

    def work() -> None:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, "Microsoft.Compute/virtualMachines/generalize/action", str(rid))
            row = resources.get(s, rid, expected_type=vms.VirtualMachineKind.type)
            vms.generalize(row)
            resources.touch(row, svc.clock)

    await in_thread(work)
    return Response(status_code=200)


@router.get(VM_ITEM + "/instanceView")
async def vm_instance_view(request: Request, subscription_id: str, group: str, vm: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    rid = ids.parse(request.url.path.rsplit("/", 1)[0])
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, "Microsoft.Compute/virtualMachines/read", str(rid))
            row = resources.get(s, rid, expected_type=vms.VirtualMachineKind.type)
            attached = [row.internal.get("osDisk"), *row.internal.get("dataDisks", {}).values()]
            disk_rows = [d for d in (resources.find(s, ids.parse(x)) for x in attached if x) if d is not None]
            return vms.instance_view(row, format_timestamp(row.changed_at), disk_rows)

    return JSONResponse(await in_thread(work))


async def _vm_action(request: Request, subscription_id: str, action: str) -> Response:
    caller = arm_caller(request)
    version = arm.api_version(request)
    rid = ids.parse(request.url.path.rsplit("/", 1)[0])
    body = await arm.read_resource(request, arm_compute.RunCommandInput, required=False) \
        if action == "runCommand" else None
    svc = services(request)
    kind = KINDS["virtualMachines"]

    def work() -> dict[str, str]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"Microsoft.Compute/virtualMachines/{action}/action", str(rid))
            row = resources.get(s, rid, expected_type=kind.type)
            payload = vms.begin_action(s, row, action, body)
            return _start_action(svc, s, row, kind, action, str(rid), payload, version.text)

    headers = await in_thread(work)
    svc.nudge("operations")
    return Response(status_code=202, headers=headers)


def _register_access(collection: str) -> None:
    """``beginGetAccess`` / ``endGetAccess`` on disks and snapshots: a download URL served by Shoal."""
    kind = KINDS[collection]

    async def begin(request: Request, subscription_id: str, group: str, name: str) -> Response:
        return await _access(request, subscription_id, "beginGetAccess")

    async def end(request: Request, subscription_id: str, group: str, name: str) -> Response:
        return await _access(request, subscription_id, "endGetAccess")

    async def _access(request: Request, subscription_id: str, action: str) -> Response:
        caller = arm_caller(request)
        version = arm.api_version(request)
        rid = ids.parse(request.url.path.rsplit("/", 1)[0])
        body = await arm.read_resource(request, arm_compute.GrantAccessData, required=False) \
            if action == "beginGetAccess" else None
        svc = services(request)

        def work() -> dict[str, str]:
            with svc.db.write() as s:
                authorize(s, caller, subscription_id, f"{kind.type}/{action}/action", str(rid))
                row = resources.get(s, rid, expected_type=kind.type)
                payload = disks.access_request(row, action, body, svc.settings.base_url)
                return _start_action(svc, s, row, kind, action, str(rid), payload, version.text)

        headers = await in_thread(work)
        svc.nudge("operations")
        return Response(status_code=202, headers=headers)

    item = RG + f"/{collection}/{{name}}"
    router.add_api_route(item + "/beginGetAccess", begin, methods=["POST"])
    router.add_api_route(item + "/endGetAccess", end, methods=["POST"])


_BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(spec: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a ``Range``/``x-ms-range`` header asks for (None: the whole file).

    One range only, as Azure Blob serves: a header it cannot use (malformed, several ranges, last < first) is
    ignored and the whole file answers (RFC 9110 14.2); a range that starts at or beyond the end is 416."""
    match = _BYTE_RANGE.fullmatch((spec or "").replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last n bytes
        if int(last) == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - int(last)), size - 1
    if last and int(last) < int(first):
        return None
    if int(first) >= size:
        raise _unsatisfiable(size)
    return int(first), min(int(last), size - 1) if last else size - 1


def _unsatisfiable(size: int) -> errors.InvalidRange:
    return errors.InvalidRange("The range specified is invalid for the current size of the resource.",
                               headers={"Content-Range": f"bytes */{size}", "x-ms-error-code": "InvalidRange"})


def pieces(read: Callable[[int, int], bytes], start: int, stop: int) -> AsyncIterator[bytes]:
    """Bytes ``start``..``stop`` of a file the host agent keeps, read in pieces in a worker thread."""
    async def chunks() -> AsyncIterator[bytes]:
        offset = start
        while offset < stop:
            piece = await in_thread(functools.partial(read, offset, min(DOWNLOAD_PIECE, stop - offset)))
            if not piece:
                return
            offset += len(piece)
            yield piece
    return chunks()


def download_name(filename: str) -> str:
    """The name a download is saved as: ``[A-Za-z0-9._-]``, no leading dots, at most 255 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", filename).lstrip(".")[:255]
    return name or "disk.tar"


@router.get("/downloads/{token}/{filename}")
async def download(request: Request, token: str, filename: str) -> Response:
    """A disk file handed out by beginGetAccess; the secret token in the URL is the credential (like a SAS).
    The host agent keeps the file; it is streamed from there in pieces. ``Range`` (or Azure's ``x-ms-range``,
    which wins) reads one byte range: 206 with ``Content-Range``, 416 ``InvalidRange`` beyond the end."""
    from fastapi.responses import StreamingResponse

    host = services(request).host
    size = await in_thread(lambda: host.export_size(token)) if host is not None else None
    if host is None or size is None:
        raise errors.BlobNotFound("The download link is unknown or has been revoked (endGetAccess).")
    wanted = byte_range(request.headers.get("x-ms-range") or request.headers.get("range"), size)
    start, stop = (wanted[0], wanted[1] + 1) if wanted else (0, size)

    headers = {"Content-Length": str(stop - start), "Accept-Ranges": "bytes",
               "Content-Disposition": f'attachment; filename="{download_name(filename)}"'}
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return StreamingResponse(pieces(functools.partial(host.read_export, token), start, stop),
                             status_code=206 if wanted else 200, media_type="application/x-tar",
                             headers=headers)


def _register_action(action: str) -> None:
    async def endpoint(request: Request, subscription_id: str, group: str, vm: str) -> Response:
        return await _vm_action(request, subscription_id, action)

    router.add_api_route(VM_ITEM + f"/{action}", endpoint, methods=["POST"])


for _action in ("start", "powerOff", "restart", "deallocate", "runCommand"):
    _register_action(_action)
for _collection, _kind in KINDS.items():
    _register(_collection, _kind)
for _collection in ("disks", "snapshots"):
    _register_access(_collection)
