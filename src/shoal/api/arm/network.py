"""``Microsoft.Network`` routes: PUT/GET/PATCH/DELETE/list per resource kind (virtual networks, network security
groups, public IP addresses, network interfaces) and the inline children (subnets, security rules). Writes
complete at once: 201/200 with ``provisioningState: Succeeded``, DELETE 200 (204 when there was nothing); the
host's side follows through the ``vmnet`` loop, which a write nudges."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.core import errors, ids
from shoal.domain import resource_groups, resources
from shoal.domain.networking import records

router = APIRouter()

RG = "/subscriptions/{subscription_id}/resourceGroups/{group}/providers/Microsoft.Network"
SUB = "/subscriptions/{subscription_id}/providers/Microsoft.Network"


def _ctx(request: Request) -> records.NetworkContext:
    svc = services(request)
    return records.NetworkContext(svc.clock, svc.settings.regions, svc.settings.node_address_space,
                                  svc.settings.shared_host_address)


async def _body(request: Request) -> dict[str, Any]:
    data = await arm.read_json(request)
    if not isinstance(data, dict):
        raise errors.InvalidRequestContent("The request content was invalid: expected a JSON object.")
    return data


def _register(collection: str, kind: Any) -> None:
    item = RG + f"/{collection}/{{name}}"
    write, read, delete = f"{kind.type}/write", f"{kind.type}/read", f"{kind.type}/delete"

    async def put_item(request: Request) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        rid = ids.parse(request.url.path)
        body = await _body(request)
        svc, ctx = services(request), _ctx(request)

        def work() -> tuple[dict[str, Any], bool]:
            with svc.db.write() as s:
                authorize(s, caller, rid.subscription, write, str(rid))
                row, created = records.put(ctx, s, kind, rid, body)
                return records.render(kind, row), created

        out, created = await in_thread(work)
        svc.nudge("vmnet")
        return JSONResponse(out, status_code=201 if created else 200)

    async def get_item(request: Request) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        rid = ids.parse(request.url.path)
        svc = services(request)

        def work() -> dict[str, Any]:
            with svc.db.read() as s:
                authorize(s, caller, rid.subscription, read, str(rid))
                return records.render(kind, resources.get(s, rid, expected_type=kind.type))

        return JSONResponse(await in_thread(work))

    async def patch_item(request: Request) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        rid = ids.parse(request.url.path)
        body = await _body(request)
        svc = services(request)

        def work() -> dict[str, Any]:
            with svc.db.write() as s:
                authorize(s, caller, rid.subscription, write, str(rid))
                row = resources.get(s, rid, expected_type=kind.type)
                if isinstance(body.get("tags"), dict):
                    row.tags = body["tags"]
                    resources.touch(row, svc.clock)
                return records.render(kind, row)

        return JSONResponse(await in_thread(work))

    async def delete_item(request: Request) -> Response:
        caller = arm_caller(request)
        arm.api_version(request)
        rid = ids.parse(request.url.path)
        svc, ctx = services(request), _ctx(request)

        def work() -> bool:
            with svc.db.write() as s:
                authorize(s, caller, rid.subscription, delete, str(rid))
                resource_groups.get(s, rid.subscription, rid.resource_group or "")
                return records.delete(ctx, s, kind, rid)

        deleted = await in_thread(work)
        svc.nudge("vmnet")
        return Response(status_code=200 if deleted else 204)

    def list_route(in_group: bool) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def list_items(request: Request) -> JSONResponse:
            caller = arm_caller(request)
            arm.api_version(request)
            svc = services(request)
            sub = request.path_params["subscription_id"]
            group = request.path_params.get("group") if in_group else None

            def work() -> list[dict[str, Any]]:
                with svc.db.read() as s:
                    scope = ids.resource_group_id(sub, group) if group else f"/subscriptions/{sub}"
                    authorize(s, caller, sub, read, scope)
                    if group:
                        resource_groups.get(s, sub, group)
                    return [records.render(kind, r) for r in resources.list_of_type(s, sub, kind.type, group=group)]

            return arm.page(request, await in_thread(work), svc.settings.page_size)

        return list_items

    router.add_api_route(item, put_item, methods=["PUT"])
    router.add_api_route(item, get_item, methods=["GET"])
    router.add_api_route(item, patch_item, methods=["PATCH"])
    router.add_api_route(item, delete_item, methods=["DELETE"])
    router.add_api_route(RG + f"/{collection}", list_route(True), methods=["GET"])
    router.add_api_route(SUB + f"/{collection}", list_route(False), methods=["GET"])


def _register_children(collection: str, field: str, kind: Any) -> None:
    parent_path = RG + f"/{collection}/{{name}}"
    item = parent_path + f"/{field}/{{child}}"
    write, read = f"{kind.type}/{field}/write", f"{kind.type}/{field}/read"
    delete = f"{kind.type}/{field}/delete"

    def parent_of(request: Request) -> ids.ResourceId:
        return ids.parse(request.url.path.rsplit("/", 2)[0])

    async def put_child(request: Request, child: str) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        parent = parent_of(request)
        body = await _body(request)
        svc, ctx = services(request), _ctx(request)

        def work() -> tuple[dict[str, Any], bool]:
            with svc.db.write() as s:
                authorize(s, caller, parent.subscription, write, str(parent))
                return records.put_child(ctx, s, kind, parent, field, child, body)

        out, created = await in_thread(work)
        svc.nudge("vmnet")
        return JSONResponse(out, status_code=201 if created else 200)

    async def get_child(request: Request, child: str) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        parent = parent_of(request)
        svc = services(request)

        def work() -> dict[str, Any]:
            with svc.db.read() as s:
                authorize(s, caller, parent.subscription, read, str(parent))
                return records.get_child(s, kind, parent, field, child)

        return JSONResponse(await in_thread(work))

    async def delete_child(request: Request, child: str) -> Response:
        caller = arm_caller(request)
        arm.api_version(request)
        parent = parent_of(request)
        svc, ctx = services(request), _ctx(request)

        def work() -> bool:
            with svc.db.write() as s:
                authorize(s, caller, parent.subscription, delete, str(parent))
                return records.delete_child(ctx, s, kind, parent, field, child)

        deleted = await in_thread(work)
        svc.nudge("vmnet")
        return Response(status_code=200 if deleted else 204)

    async def list_children(request: Request) -> JSONResponse:
        caller = arm_caller(request)
        arm.api_version(request)
        parent = ids.parse(request.url.path.rsplit("/", 1)[0])
        svc = services(request)

        def work() -> list[dict[str, Any]]:
            with svc.db.read() as s:
                authorize(s, caller, parent.subscription, read, str(parent))
                return records.list_children(s, kind, parent, field)

        return arm.page(request, await in_thread(work), svc.settings.page_size)

    router.add_api_route(item, put_child, methods=["PUT"])
    router.add_api_route(item, get_child, methods=["GET"])
    router.add_api_route(item, delete_child, methods=["DELETE"])
    router.add_api_route(parent_path + f"/{field}", list_children, methods=["GET"])


for _collection, _kind in records.KINDS.items():
    _register(_collection, _kind)
for _collection, (_field, _) in records.CHILDREN.items():
    _register_children(_collection, _field, records.KINDS[_collection])
