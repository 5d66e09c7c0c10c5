"""Batch data plane: compute nodes (list, get, reboot, reimage, deallocate, start, scheduling, files, remote login
settings, uploadbatchservicelogs, extensions)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shoal.api import files
from shoal.api.batch.common import BatchRequest, accepted, authenticate, page, read_body
from shoal.api.batch.pools import _filter_select, pool_url
from shoal.api.deps import in_thread
from shoal.core import errors, timefmt
from shoal.domain.batch import deallocation, node_logs, node_users, pools
from shoal.domain.batch import files as file_rules
from shoal.domain.batch import nodes as node_rules
from shoal.schemas import batch as wire
from shoal.store import models

router = APIRouter(prefix="/batch/{account}/pools/{pool_id}/nodes")
READ = "Microsoft.Batch/batchAccounts/pools/read"
WRITE = "Microsoft.Batch/batchAccounts/pools/write"


def render(br: BatchRequest, pool: models.Pool, node: models.Node) -> dict[str, Any]:
    return wire.data_plane_node(node, pool, f"{pool_url(br, pool.pool_id)}/nodes/{node.node_id}",
                                timefmt.format_timestamp, node_rules.isolation(br.svc.host))


@router.get("")
async def list_nodes(request: Request, account: str, pool_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            pool = pools.get(s, br.account.key, pool_id)
            return [render(br, pool, n) for n in node_rules.list_nodes(s, pool.key)]

    items = _filter_select(request, await in_thread(work))
    return page(request, items, f"{br.account_url}/$metadata#nodes")


@router.get("/{node_id}")
async def get_node(request: Request, account: str, pool_id: str, node_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> dict[str, Any]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            pool = pools.get(s, br.account.key, pool_id)
            return render(br, pool, node_rules.get(s, pool, node_id))

    body = await in_thread(work)
    if request.query_params.get("$select"):
        body = _filter_select(request, [body])[0]
    return JSONResponse(body)


async def _node_action(request: Request, account: str, pool_id: str, node_id: str, action: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request, required=False)

    def work() -> None:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            pool = pools.get(s, br.account.key, pool_id, for_update=True)
            node = node_rules.get(s, pool, node_id)
            if action == "reboot":
                node_rules.request(node, br.svc.clock, "reboot", body.get("nodeRebootOption"))
            elif action == "reimage":
                node_rules.request(node, br.svc.clock, "reimage", body.get("nodeReimageOption"))
            elif action == "deallocate":
                node_rules.deallocate(node, br.svc.clock, body.get("nodeDeallocateOption"))
            elif action == "start":
                node_rules.start(node, br.svc.clock)
            elif action == "disablescheduling":
                deallocation.disable_scheduling(s, br.svc.clock, node, body.get("nodeDisableSchedulingOption"))
            else:
                node_rules.enable_scheduling(node, br.svc.clock)

    await in_thread(work)
    br.svc.nudge("pools")
    url = f"{pool_url(br, pool_id)}/nodes/{node_id}/{action}"
    if action in ("reboot", "reimage", "deallocate", "start"):
        return accepted(url)
    return Response(status_code=200, headers={"DataServiceId": url})


def _register(action: str) -> None:
    async def endpoint(request: Request, account: str, pool_id: str, node_id: str) -> Response:
        return await _node_action(request, account, pool_id, node_id, action)

    router.add_api_route(f"/{{node_id}}/{action}", endpoint, methods=["POST"])


for _action in ("reboot", "reimage", "deallocate", "start", "disablescheduling", "enablescheduling"):
    _register(_action)


@router.get("/{node_id}/remoteloginsettings")
async def remote_login(request: Request, account: str, pool_id: str, node_id: str) -> JSONResponse:
    br = authenticate(request, account)

    address = br.svc.settings.shared_host_address

    def work() -> dict[str, Any]:
        # With --node-network host the node's SSH port is chosen the first time it is asked for (a write).
        with br.svc.db.write() if address else br.svc.db.read() as s:
            br.authorize(s, READ)
            pool = pools.get(s, br.account.key, pool_id)
            return node_users.remote_login(s, node_rules.get(s, pool, node_id), br.svc.host, address)

    return JSONResponse(await in_thread(work))


def _files_url(br: BatchRequest, pool_id: str, node_id: str) -> str:
    return f"{pool_url(br, pool_id)}/nodes/{node_id}/files"


@router.get("/{node_id}/files")
async def list_files(request: Request, account: str, pool_id: str, node_id: str) -> JSONResponse:
    br = authenticate(request, account)

    def work() -> list[dict[str, Any]]:
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            tree = file_rules.node_tree(s, br.account.key, pool_id, node_id)
        recursive = (request.query_params.get("recursive") or "").lower() == "true"
        return files.listing(br.svc.host, tree, _files_url(br, pool_id, node_id), recursive=recursive)

    items = _filter_select(request, await in_thread(work))
    return page(request, items, f"{br.account_url}/$metadata#files")


@router.api_route("/{node_id}/files/{file_path:path}", methods=["GET", "HEAD", "DELETE"])
async def node_file(request: Request, account: str, pool_id: str, node_id: str, file_path: str) -> Response:
    br = authenticate(request, account)

    def work() -> Response:
        with br.svc.db.read() as s:
            br.authorize(s, WRITE if request.method == "DELETE" else READ)
            tree = file_rules.node_tree(s, br.account.key, pool_id, node_id)
        return files.handle(request.method, br.svc.host, tree, _files_url(br, pool_id, node_id), file_path,
                            ocp_range=request.headers.get("ocp-range"),
                            recursive=(request.query_params.get("recursive") or "").lower() == "true")

    return await in_thread(work)


@router.post("/{node_id}/uploadbatchservicelogs")
async def upload_logs(request: Request, account: str, pool_id: str, node_id: str) -> JSONResponse:
    """The node's Shoal agent log and task logs, written as blobs of the Shoal container URL given
    (domain/batch/node_logs.py)."""
    br = authenticate(request, account)
    body = await read_body(request)
    host = br.svc.host
    if host is None:
        raise errors.OperationInvalidForCurrentState("This server runs no host agent; nodes have no logs.")

    def work() -> dict[str, Any]:
        raw_start = body.get("startTime")
        if not raw_start:
            raise errors.MissingRequiredProperty("The startTime property is required.",
                                                 values={"PropertyName": "startTime"})
        try:
            since = timefmt.parse_timestamp(str(raw_start))
        except ValueError as exc:
            raise errors.InvalidPropertyValue(str(exc), values={"PropertyName": "startTime",
                                                                "PropertyValue": str(raw_start)}) from exc
        with br.svc.db.read() as s:
            br.authorize(s, READ)
            pool = pools.get(s, br.account.key, pool_id)
            node = node_rules.get(s, pool, node_id)
            key = br.svc.container_key()
            upload = node_logs.target(key, body.get("containerUrl"), pool.pool_id, node.node_id)
            agent_log = node_logs.agent_log(node, pool, node_rules.isolation(host), br.svc.clock.now())
            machine_id = node.machine_id
        blobs = br.svc.blobs
        if not blobs.container_dir(upload.container).is_dir():
            raise errors.InvalidPropertyValue(
                f"The container '{upload.container}' of containerUrl does not exist.",
                values={"PropertyName": "containerUrl", "PropertyValue": upload.container})
        count = 0
        blobs.put(upload.container, (upload.directory + node_logs.AGENT_LOG).split("/"), iter([agent_log]))
        count += 1
        for path in node_logs.log_files(host, machine_id, since):
            _, data = host.read_node_file(machine_id, node_logs.ROOT, path)
            name = upload.directory + path
            blobs.put(upload.container, name.split("/"), iter([data]))
            count += 1
        return {"virtualDirectoryName": upload.directory, "numberOfFilesUploaded": count}

    return JSONResponse(await in_thread(work))


def _extension(ext: dict[str, Any], at: str) -> dict[str, Any]:
    return {"provisioningState": "Succeeded", "vmExtension": ext,
            "instanceView": {"name": ext.get("name"), "statuses": [{
                "code": "ProvisioningState/succeeded", "displayStatus": "Provisioning succeeded", "level": "Info",
                "message": "Recorded with the pool; Shoal nodes run no VM extension handlers.", "time": at}],
                "subStatuses": []}}


def _extensions(br: BatchRequest, pool_id: str, node_id: str) -> list[dict[str, Any]]:
    with br.svc.db.read() as s:
        br.authorize(s, READ)
        pool = pools.get(s, br.account.key, pool_id)
        node = node_rules.get(s, pool, node_id)
        at = timefmt.format_timestamp(node.last_boot_time or node.allocation_time)
        exts = (pool.spec.get("virtualMachineConfiguration") or {}).get("extensions") or []
        return [_extension(e, at) for e in exts if isinstance(e, dict)]


@router.get("/{node_id}/extensions")
async def list_extensions(request: Request, account: str, pool_id: str, node_id: str) -> JSONResponse:
    """The pool's VM extensions as the node reports them (none: an empty list)."""
    br = authenticate(request, account)
    items = _filter_select(request, await in_thread(lambda: _extensions(br, pool_id, node_id)))
    return page(request, items, f"{br.account_url}/$metadata#extensions")


@router.get("/{node_id}/extensions/{extension_name}")
async def get_extension(request: Request, account: str, pool_id: str, node_id: str,
                        extension_name: str) -> JSONResponse:
    br = authenticate(request, account)
    items = await in_thread(lambda: _extensions(br, pool_id, node_id))
    found = next((e for e in items if str(e["vmExtension"].get("name") or "").lower() == extension_name.lower()),
                 None)
    if found is None:
        raise errors.ResourceNotFound(f"The extension '{extension_name}' does not exist on the node.")
    return JSONResponse(found)
