"""``Microsoft.Batch`` management plane: accounts (keys, modes, quotas) and pools in ARM's spelling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import arm
from shoal.api.arm.operations import result_response
from shoal.api.azure_hosts import account_endpoint, azure_host
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.core import errors, ids, timefmt
from shoal.domain import operations, resources
from shoal.domain.batch import accounts, autoscaling, pools, service, unsupported
from shoal.schemas import arm_batch
from shoal.schemas import batch as wire
from shoal.store import models

router = APIRouter()
T = TypeVar("T")

ACCT = "/subscriptions/{subscription_id}/resourceGroups/{group}/providers/Microsoft.Batch/batchAccounts/{account}"
TYPE = accounts.TYPE


def _duration(seconds: int) -> str:
    from datetime import timedelta

    return timefmt.format_duration(timedelta(seconds=seconds))


def render_pool(s: Any, pool: models.Pool, account_id: str) -> dict[str, Any]:
    # Counting the nodes flushes the session first, so a pool just created or changed is counted as it is now.
    counts = pools.node_counts(s, [pool.key])[pool.key]
    return wire.arm_pool(pool, counts, account_id, timefmt.format_timestamp, _duration)


def _account_rid(request: Request) -> ids.ResourceId:
    p = request.path_params
    return ids.ResourceId(p["subscription_id"], p["group"], "Microsoft.Batch", ("batchAccounts",), (p["account"],))


def _get_account(s: Any, rid: ids.ResourceId) -> models.Resource:
    row = resources.find(s, rid)
    if row is None or row.type_key != TYPE.lower():
        raise errors.ResourceNotFound(f"The Resource '{TYPE}/{rid.name}' under resource group "
                                      f"'{rid.resource_group}' was not found.")
    return row


async def on_account(request: Request, action: str, use: Callable[[Any, models.Resource], T], *,
                     write: bool = False) -> T:
    """What every route on one Batch account's children does first (the caller, the api-version, the caller's
    right to ``action`` on the account, the account itself), then ``use(session, account)`` off the event loop,
    in a write session with ``write``."""
    caller = arm_caller(request)
    arm.api_version(request)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> T:
        with svc.db.write() if write else svc.db.read() as s:
            authorize(s, caller, rid.subscription, f"{TYPE}/{action}", str(rid))
            return use(s, _get_account(s, rid))

    return await in_thread(work)


def _render(request: Request, row: models.Resource) -> dict[str, Any]:
    return _with_endpoint(request, accounts.render(row))


def _with_endpoint(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """The account as this client sees it: through `shoal proxy`, its endpoint is Azure's hostname for it."""
    props = body["properties"]
    endpoint = account_endpoint(request, str(props.get("accountEndpoint") or ""), str(body.get("name") or ""),
                                body.get("location"))
    return {**body, "properties": {**props, "accountEndpoint": endpoint}}


def _op_location(base: str, op: models.Operation, version: str) -> dict[str, str]:
    return arm.location_headers(base, f"/subscriptions/{op.subscription_id}/providers/Microsoft.Batch/locations/"
                                      f"{op.location}/accountOperationResults/{op.id}", version)


@router.put(ACCT)
async def put_account(request: Request, subscription_id: str, group: str, account: str) -> Response:
    caller = arm_caller(request)
    version = arm.api_version(request)
    body = await arm.read_resource(request, arm_batch.Account)
    if not isinstance(body, dict):
        raise errors.InvalidRequestContent("The request content was invalid: expected a JSON object.")
    rid = _account_rid(request)
    svc = services(request)

    def work() -> tuple[dict[str, str], bool, dict[str, Any]]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/write", str(rid))
            row, created = accounts.create_or_update(s, svc.clock, rid, body, svc.settings.regions,
                                                     svc.settings.base_url)
            op = operations.start(s, svc.clock, subscription_id=subscription_id, location=row.location or "",
                                  namespace="Microsoft.Batch", kind="batchAccounts.create", target_id=str(rid))
            operations.finish(op, svc.clock.now(), result=accounts.render(row))
            return _op_location(svc.settings.base_url, op, version.text), created, _render(request, row)

    headers, created, body_out = await in_thread(work)
    if created:
        return Response(status_code=202, headers=headers)
    return JSONResponse(body_out)


@router.get("/subscriptions/{subscription_id}/providers/Microsoft.Batch/locations/{location}/"
            "accountOperationResults/{operation_id}")
async def account_operation(request: Request, subscription_id: str, location: str, operation_id: str) -> Response:
    arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> models.Operation:
        with svc.db.read() as s:
            return operations.get(s, subscription_id, operation_id)

    op = await in_thread(work)
    result = op.payload.get("result")
    if azure_host(request) and isinstance(result, dict) and isinstance(result.get("properties"), dict):
        op.payload = {**op.payload, "result": _with_endpoint(request, result)}  # detached: never written back
    return await in_thread(lambda: result_response(request, op))


@router.get(ACCT)
async def get_account(request: Request, subscription_id: str, group: str, account: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/read", str(rid))
            return _render(request, _get_account(s, rid))

    return JSONResponse(await in_thread(work))


@router.patch(ACCT)
async def patch_account(request: Request, subscription_id: str, group: str, account: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    body = await arm.read_resource(request, arm_batch.Account)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, Any]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/write", str(rid))
            row = _get_account(s, rid)
            props = dict((body or {}).get("properties") or {})
            if "allowedAuthenticationModes" in props:
                modes = props["allowedAuthenticationModes"]
                if not isinstance(modes, list) or any(m not in accounts.AUTH_MODES for m in modes):
                    raise errors.InvalidParameter("allowedAuthenticationModes must be a list of "
                                                  + ", ".join(accounts.AUTH_MODES) + ".")
                row.properties = {**row.properties, "allowedAuthenticationModes": modes}
            for key in ("autoStorage", "encryption", "publicNetworkAccess"):
                if key in props:
                    row.properties = {**row.properties, key: props[key]}
            if isinstance((body or {}).get("tags"), dict):
                row.tags = body["tags"]
            resources.touch(row, svc.clock)
            return _render(request, row)

    return JSONResponse(await in_thread(work))


@router.delete(ACCT)
async def delete_account(request: Request, subscription_id: str, group: str, account: str) -> Response:
    caller = arm_caller(request)
    version = arm.api_version(request)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, str] | None:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/delete", str(rid))
            op = accounts.begin_delete(s, svc.clock, rid)
            if op is None:
                return None
            for pool in pools.list_pools(s, rid.key):
                pools.begin_delete(pool, svc.clock)
            return _op_location(svc.settings.base_url, op, version.text)

    headers = await in_thread(work)
    if headers is None:
        return Response(status_code=204)
    svc.nudge()
    return Response(status_code=202, headers=headers)


@router.get("/subscriptions/{subscription_id}/providers/Microsoft.Batch/batchAccounts")
@router.get("/subscriptions/{subscription_id}/resourceGroups/{group}/providers/Microsoft.Batch/batchAccounts")
async def list_accounts(request: Request, subscription_id: str, group: str | None = None) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            scope = ids.resource_group_id(subscription_id, group) if group else f"/subscriptions/{subscription_id}"
            authorize(s, caller, subscription_id, f"{TYPE}/read", scope)
            rows = resources.list_of_type(s, subscription_id, TYPE, group=group)
            return [_render(request, r) for r in rows]

    return arm.page(request, await in_thread(work), svc.settings.page_size)


@router.post(ACCT + "/listKeys")
async def list_keys(request: Request, subscription_id: str, group: str, account: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, str]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/listKeys/action", str(rid))
            return accounts.keys(_get_account(s, rid))

    return JSONResponse(await in_thread(work))


@router.post(ACCT + "/regenerateKeys")
async def regenerate_keys(request: Request, subscription_id: str, group: str, account: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    body = await arm.read_resource(request, arm_batch.RegenerateKey)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, str]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/regenerateKeys/action", str(rid))
            return accounts.regenerate(svc.clock, _get_account(s, rid), str((body or {}).get("keyName", "")))

    return JSONResponse(await in_thread(work))


# --- pools -------------------------------------------------------------------------------------------------
POOL = ACCT + "/pools/{pool_id}"


def _arm_scale(props: dict[str, Any]) -> pools.Scale:
    scale = props.get("scaleSettings") or {}
    fixed = scale.get("fixedScale")
    auto = scale.get("autoScale")
    if fixed and auto:
        raise pools.bad_value("scaleSettings", "both", "use fixedScale or autoScale, not both")
    if auto:
        return pools.Scale(auto_scale=autoscaling.settings(auto.get("formula"), auto.get("evaluationInterval")))
    return pools.scale_from_body(fixed or {})


@router.put(POOL)
async def put_pool(request: Request, subscription_id: str, group: str, account: str, pool_id: str) -> JSONResponse:
    caller = arm_caller(request)
    version = arm.api_version(request)
    body = await arm.read_resource(request, arm_batch.Pool)
    if not isinstance(body, dict):
        raise errors.InvalidRequestContent("The request content was invalid: expected a JSON object.")
    rid = _account_rid(request)
    svc = services(request)
    ctx = svc.compute_context()

    def work() -> tuple[dict[str, Any], str]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/pools/write", str(rid))
            acct = _get_account(s, rid)
            props = dict(body.get("properties") or {})
            existing = pools.find(s, acct.key, pool_id)
            service.check_conditions(existing, request.headers.get("if-match"), request.headers.get("if-none-match"))
            if existing is None:
                pool = service.create_pool(ctx, s, acct, pool_id, _spec(props, "POST /pools"), _arm_scale(props),
                                           service.Plane("arm", version, caller))
            else:
                pool = pools.get(s, acct.key, pool_id, for_update=True)
                _arm_update(ctx, s, pool, props)
            return render_pool(s, pool, acct.id), pool.etag

    out, etag = await in_thread(work)
    svc.nudge("pools")
    return JSONResponse(out, headers={"ETag": f'W/"{etag}"'})


def _spec(props: dict[str, Any], operation: str) -> dict[str, Any]:
    """A pool's spec from its ARM properties, refused as the data plane refuses the same properties
    (``domain/batch/unsupported.py``: they are named in the data plane's spelling, as Shoal keeps them)."""
    spec = wire.spec_from_arm(props)
    unsupported.refuse(operation, spec)
    return spec


def _arm_update(ctx: Any, s: Any, pool: models.Pool, props: dict[str, Any]) -> None:
    spec = _spec(props, "PATCH /pools/{}")
    service.update_pool(ctx, pool, spec, replace=False)
    if "scaleSettings" in props:
        scale = _arm_scale(props)
        if scale.auto_scale:
            pool.autoscale = scale.auto_scale
        elif (scale.target_dedicated, scale.target_low_priority) != (pool.target_dedicated,
                                                                     pool.target_low_priority):
            pool.autoscale = {}
            service.resize_pool(ctx, s, pool, scale)


@router.patch(POOL)
async def patch_pool(request: Request, subscription_id: str, group: str, account: str, pool_id: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    body = await arm.read_resource(request, arm_batch.Pool)
    rid = _account_rid(request)
    svc = services(request)
    ctx = svc.compute_context()

    def work() -> tuple[dict[str, Any], str]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/pools/write", str(rid))
            acct = _get_account(s, rid)
            pool = pools.get(s, acct.key, pool_id, for_update=True)
            service.check_conditions(pool, request.headers.get("if-match"), None)
            _arm_update(ctx, s, pool, dict((body or {}).get("properties") or {}))
            return render_pool(s, pool, acct.id), pool.etag

    out, etag = await in_thread(work)
    svc.nudge("pools")
    return JSONResponse(out, headers={"ETag": f'W/"{etag}"'})


@router.get(POOL)
async def get_pool(request: Request, subscription_id: str, group: str, account: str, pool_id: str) -> JSONResponse:
    def use(s: Any, acct: models.Resource) -> tuple[dict[str, Any], str]:
        pool = pools.get(s, acct.key, pool_id)
        return render_pool(s, pool, acct.id), pool.etag

    out, etag = await on_account(request, "pools/read", use)
    return JSONResponse(out, headers={"ETag": f'W/"{etag}"'})


@router.get(ACCT + "/pools")
async def list_pools(request: Request, subscription_id: str, group: str, account: str) -> JSONResponse:
    found = await on_account(request, "pools/read", lambda s, acct: [render_pool(s, p, acct.id)
                                                                      for p in pools.list_pools(s, acct.key)])
    return arm.page(request, found, services(request).settings.page_size)


@router.delete(POOL)
async def delete_pool(request: Request, subscription_id: str, group: str, account: str, pool_id: str) -> Response:
    caller = arm_caller(request)
    version = arm.api_version(request)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> dict[str, str] | None:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/pools/delete", str(rid))
            acct = _get_account(s, rid)
            pool = pools.find(s, acct.key, pool_id)
            if pool is None:
                return None
            pools.begin_delete(pool, svc.clock)
            op = operations.start(s, svc.clock, subscription_id=subscription_id, location=acct.location or "",
                                  namespace="Microsoft.Batch", kind="pools.delete", target_id=pool.key)
            return _op_location(svc.settings.base_url, op, version.text)

    headers = await in_thread(work)
    if headers is None:
        return Response(status_code=204)
    svc.nudge()
    return Response(status_code=202, headers=headers)


async def _pool_action(request: Request, subscription_id: str, pool_id: str, action: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    rid = _account_rid(request)
    svc = services(request)

    def work() -> tuple[dict[str, Any], str]:
        with svc.db.write() as s:
            authorize(s, caller, subscription_id, f"{TYPE}/pools/{action}/action", str(rid))
            acct = _get_account(s, rid)
            pool = pools.get(s, acct.key, pool_id, for_update=True)
            if action == "stopResize":
                pools.stop_resize(pool, svc.clock)
            else:
                pool.autoscale = {}
                pools.touch(pool, svc.clock)
            return render_pool(s, pool, acct.id), pool.etag

    out, etag = await in_thread(work)
    svc.nudge("pools")
    return JSONResponse(out, headers={"ETag": f'W/"{etag}"'})


@router.post(POOL + "/stopResize")
async def stop_resize(request: Request, subscription_id: str, group: str, account: str, pool_id: str) -> JSONResponse:
    return await _pool_action(request, subscription_id, pool_id, "stopResize")


@router.post(POOL + "/disableAutoScale")
async def disable_autoscale(request: Request, subscription_id: str, group: str, account: str, pool_id: str
                            ) -> JSONResponse:
    return await _pool_action(request, subscription_id, pool_id, "disableAutoScale")
