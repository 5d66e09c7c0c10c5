"""Batch data plane: pools (add, get, list, exists, patch, updateproperties, delete, resize, stopresize,
removenodes; upgradeos refused as Azure refuses it for Virtual Machine Configuration pools), supported images,
node counts and pool usage metrics. Paths are relative to ``/batch/{account}``."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api.batch.common import BatchRequest, accepted, authenticate, created, entity_headers, page, read_body
from shoal.api.deps import in_thread
from shoal.core import catalog as marketplace
from shoal.core import errors, timefmt
from shoal.domain.batch import autoscaling, counts, pool_changes, pools, service, usage_metrics
from shoal.schemas import batch as wire
from shoal.schemas import batch_bodies as bodies
from shoal.store import models

router = APIRouter(prefix="/batch/{account}")
READ, WRITE, DELETE = ("Microsoft.Batch/batchAccounts/pools/read", "Microsoft.Batch/batchAccounts/pools/write",
                       "Microsoft.Batch/batchAccounts/pools/delete")


def _duration(seconds: int) -> str:
    return timefmt.format_duration(timedelta(seconds=seconds))


def pool_url(br: BatchRequest, pool_id: str) -> str:
    return f"{br.account_url}/pools/{pool_id}"


def render(br: BatchRequest, s: Any, pool: models.Pool) -> dict[str, Any]:
    counts = pools.node_counts(s, [pool.key])[pool.key]
    body = wire.data_plane_pool(pool, counts, pool_url(br, pool.pool_id), timefmt.format_timestamp, _duration)
    body["odata.metadata"] = f"{br.account_url}/$metadata#pools/@Element"
    return body


def _check_custom_image_auth(br: BatchRequest, spec: dict[str, Any]) -> None:
    """Custom-image pools need Entra ID on the data plane (Shared Key is refused, as Azure documents)."""
    ref = (spec.get("virtualMachineConfiguration") or {}).get("imageReference") or {}
    image_id = str(ref.get("virtualMachineImageId") or "")
    if image_id and br.shared_key:
        raise errors.BatchAuthenticationFailed(
            "Pools from custom images (managed images or Azure Compute Gallery images) require Microsoft Entra ID "
            "authentication; Shared Key is refused. Sign in with a service principal (az batch account login "
            "without --shared-key-auth, or a TokenCredential in BatchClient).",
            values={"AuthenticationErrorDetail": "Microsoft Entra ID required"})
    if image_id and "/providers/microsoft.compute/images/" in image_id.lower() and \
            not br.version.data_plane_accepts_managed_image():
        raise errors.InvalidPropertyValue(
            f"A managed image ('{image_id}') can back a pool only with api-version 2019-08-01.10.0 or older; this "
            f"request uses {br.version.text}. Publish the image to an Azure Compute Gallery and use the image "
            "version (or definition) id, or create the pool through the management plane.",
            values={"PropertyName": "virtualMachineImageId", "PropertyValue": image_id})


@router.post("/pools")
async def add_pool(request: Request, account: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request, shape=bodies.Pool)
    ctx = br.svc.compute_context()

    def work() -> tuple[str, str, Any]:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            if not body.get("id"):
                raise pools.missing("id")
            if body.get("enableAutoScale") and ("targetDedicatedNodes" in body or "targetLowPriorityNodes" in body):
                raise pools.bad_value("targetDedicatedNodes", body.get("targetDedicatedNodes"),
                                      "must not be given when enableAutoScale is true")
            spec = wire.spec_from_data_plane(body)
            _check_custom_image_auth(br, spec)
            scale = pools.scale_from_body(body)
            if body.get("enableAutoScale"):
                scale.auto_scale = autoscaling.settings(body.get("autoScaleFormula"),
                                                        body.get("autoScaleEvaluationInterval"))
            pool = service.create_pool(ctx, s, br.account, str(body["id"]), spec, scale,
                                       service.Plane("data", br.version, br.caller))
            return pool.pool_id, pool.etag, pool.last_modified

    pool_id, etag, modified = await in_thread(work)
    br.svc.nudge("pools")
    return created(pool_url(br, pool_id), etag, modified)


@router.get("/pools")
async def list_pools(request: Request, account: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            return [render(br, s, p) for p in pools.list_pools(s, br.account.key)]

    items = await in_thread(work)
    items = _filter_select(request, items)
    return page(request, items, f"{br.account_url}/$metadata#pools")


def _filter_select(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from shoal.core import odata

    flt = request.query_params.get("$filter")
    if flt:
        try:
            pred = odata.parse_filter(flt)
        except odata.ODataError as exc:
            raise errors.InvalidQueryParameterValue(
                f"The $filter clause is invalid: {exc}",
                values={"QueryParameterName": "$filter", "QueryParameterValue": flt}) from exc
        items = [i for i in items if pred(i)]
    sel = request.query_params.get("$select")
    if sel:
        fields = odata.parse_select(sel)
        items = [odata.apply_select(i, fields) for i in items]
    return items


@router.get("/pools/{pool_id}")
async def get_pool(request: Request, account: str, pool_id: str) -> Response:
    br = authenticate(request, account)

    def work() -> tuple[dict[str, Any], str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            pool = pools.get(s, br.account.key, pool_id)
            return render(br, s, pool), pool.etag, pool.last_modified

    body, etag, modified = await in_thread(work)
    status = _conditional_status(request, etag, modified)
    if status is not None:
        return Response(status_code=status, headers=entity_headers(etag, modified))
    body = _filter_select(request, [body])[0] if request.query_params.get("$select") else body
    return JSONResponse(body, headers=entity_headers(etag, modified))


def _conditional_status(request: Request, etag: str, modified: Any) -> int | None:
    from shoal.core import batch_conditions

    return batch_conditions.check(request.method, etag, modified, request.headers)


@router.head("/pools/{pool_id}")
async def pool_exists(request: Request, account: str, pool_id: str) -> Response:
    br = authenticate(request, account)

    def work() -> tuple[str, Any] | None:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            pool = pools.find(s, br.account.key, pool_id)
            return (pool.etag, pool.last_modified) if pool else None

    found = await in_thread(work)
    if found is None:
        return Response(status_code=404)
    return Response(status_code=200, headers=entity_headers(*found))


async def _change(request: Request, account: str, pool_id: str, change: pool_changes.Change,
                  body: dict[str, Any] | None = None, *, permission: str = WRITE) -> tuple[BatchRequest, str, Any]:
    """Apply one pool change (its use case owns the unit of work); the new ETag and last-modified time."""
    br = authenticate(request, account)

    def precondition(etag: str, modified: Any) -> None:
        if _conditional_status(request, etag, modified) == 412:
            raise errors.ConditionNotMet("A condition in the request (If-Match, If-None-Match, If-Modified-Since or "
                                         "If-Unmodified-Since) is not met.")

    etag, modified = await in_thread(lambda: pool_changes.apply(
        br.svc.db, br.svc.compute_context(), br.account.key, pool_id, change, body or {},
        authorize=lambda s: br.authorize(s, permission), precondition=precondition))
    br.svc.nudge("pools")
    return br, etag, modified


def _done(changed: tuple[BatchRequest, str, Any], pool_id: str, status: int = 200) -> Response:
    br, etag, modified = changed
    return Response(status_code=status, headers=entity_headers(etag, modified, pool_url(br, pool_id)))


def _accepted(changed: tuple[BatchRequest, str, Any], pool_id: str) -> Response:
    br, etag, modified = changed
    return accepted(pool_url(br, pool_id), etag, modified)


@router.patch("/pools/{pool_id}")
async def patch_pool(request: Request, account: str, pool_id: str) -> Response:
    body = await read_body(request, shape=bodies.Pool)
    return _done(await _change(request, account, pool_id, pool_changes.patch, body), pool_id=pool_id)


@router.post("/pools/{pool_id}/updateproperties")
async def update_properties(request: Request, account: str, pool_id: str) -> Response:
    body = await read_body(request, shape=bodies.Pool)
    version = authenticate(request, account).version
    change = pool_changes.update_properties_since_2025 if version.day > date(2024, 7, 1) \
        else pool_changes.update_properties
    return _done(await _change(request, account, pool_id, change, body), pool_id, 204)


@router.delete("/pools/{pool_id}")
async def delete_pool(request: Request, account: str, pool_id: str) -> Response:
    return _accepted(await _change(request, account, pool_id, pool_changes.delete, permission=DELETE), pool_id)


@router.post("/pools/{pool_id}/resize")
async def resize_pool(request: Request, account: str, pool_id: str) -> Response:
    body = await read_body(request, shape=bodies.PoolResize)
    return _accepted(await _change(request, account, pool_id, pool_changes.resize, body), pool_id=pool_id)


@router.post("/pools/{pool_id}/stopresize")
async def stop_resize(request: Request, account: str, pool_id: str) -> Response:
    return _accepted(await _change(request, account, pool_id, pool_changes.stop_resize), pool_id=pool_id)


@router.post("/pools/{pool_id}/removenodes")
async def remove_nodes(request: Request, account: str, pool_id: str) -> Response:
    body = await read_body(request, shape=bodies.RemoveNodes)
    return _accepted(await _change(request, account, pool_id, pool_changes.remove_nodes, body), pool_id=pool_id)


@router.post("/pools/{pool_id}/enableautoscale")
async def enable_autoscale(request: Request, account: str, pool_id: str) -> Response:
    body = await read_body(request, shape=bodies.AutoScale)
    return _done(await _change(request, account, pool_id, pool_changes.enable_autoscale, body), pool_id=pool_id)


@router.post("/pools/{pool_id}/disableautoscale")
async def disable_autoscale(request: Request, account: str, pool_id: str) -> Response:
    return _done(await _change(request, account, pool_id, pool_changes.disable_autoscale), pool_id=pool_id)


@router.post("/pools/{pool_id}/evaluateautoscale")
async def evaluate_autoscale(request: Request, account: str, pool_id: str) -> JSONResponse:
    """Run a formula against the pool's live metrics without applying it."""
    br = authenticate(request, account)
    body = await read_body(request, shape=bodies.AutoScale)

    def work() -> dict[str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            pool = pools.get(s, br.account.key, pool_id)
            return autoscaling.evaluate_only(s, pool, body.get("autoScaleFormula"), br.svc.clock.now())

    run = await in_thread(work)
    return JSONResponse(run, headers={"DataServiceId": f"{pool_url(br, pool_id)}/evaluateautoscale"})


@router.get("/supportedimages")
async def supported_images(request: Request, account: str) -> JSONResponse:
    br = authenticate(request, account)
    items = marketplace.supported_images(br.svc.catalog.images())
    return page(request, _filter_select(request, items), f"{br.account_url}/$metadata#supportedimages")


@router.get("/nodecounts")
async def node_counts(request: Request, account: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            return counts.node_counts(s, br.account.key)

    return page(request, await in_thread(work), f"{br.account_url}/$metadata#poolnodecounts")



@router.post("/pools/{pool_id}/upgradeos")
async def upgrade_os(request: Request, account: str, pool_id: str) -> Response:
    """Upgrade OS applied to Cloud Services Configuration pools only (retired); Azure refuses it for pools of
    Virtual Machine Configuration, the only kind there is here (404 for a pool that does not exist)."""
    br = authenticate(request, account)
    await read_body(request, required=False)

    def work() -> None:
        with br.svc.db.read() as s:
            br.authorize(s, WRITE)
            pools.get(s, br.account.key, pool_id)

    await in_thread(work)
    raise errors.PoolNotEligibleForOSVersionUpgrade(
        f"The pool '{pool_id}' is not eligible for an operating system version upgrade: Upgrade OS applies to "
        "Cloud Services Configuration pools only. Virtual Machine Configuration pools take a new image through "
        "a new pool (or the pool's upgradePolicy).")


def _time_param(request: Request, name: str) -> Any:
    raw = request.query_params.get(name) or request.query_params.get(name.lower())
    if not raw:
        return None
    try:
        return timefmt.parse_timestamp(raw)
    except ValueError as exc:
        raise errors.InvalidQueryParameterValue(
            f"The value '{raw}' of {name} is not a valid ISO 8601 time.",
            values={"QueryParameterName": name, "QueryParameterValue": raw}) from exc


@router.get("/poolusagemetrics")
async def pool_usage_metrics(request: Request, account: str) -> JSONResponse:
    """Core hours per pool in 30-minute intervals, from the service's accounting of node time
    (domain/batch/usage_metrics.py)."""
    br = authenticate(request, account)
    start, end = _time_param(request, "startTime"), _time_param(request, "endTime")

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            rows = usage_metrics.pool_usage(s, br.account.key, br.svc.clock.now(), start, end)
        return [{**r, "startTime": timefmt.format_timestamp(r["startTime"]),
                 "endTime": timefmt.format_timestamp(r["endTime"])} for r in rows]

    items = _filter_select(request, await in_thread(work))
    return page(request, items, f"{br.account_url}/$metadata#poolusagemetrics")
