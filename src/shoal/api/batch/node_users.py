"""Batch data plane: user accounts on compute nodes (add, update, delete). The rules and the scripts that make
the user inside the node are in domain/batch/node_users.py; the remote login settings are in nodes.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from shoal.api.batch.common import BatchRequest, authenticate, read_body
from shoal.api.batch.pools import pool_url
from shoal.api.deps import in_thread
from shoal.core import errors
from shoal.domain.batch import node_users, pools
from shoal.domain.batch import nodes as node_rules

router = APIRouter(prefix="/batch/{account}/pools/{pool_id}/nodes/{node_id}/users")
WRITE = "Microsoft.Batch/batchAccounts/pools/write"


def _url(br: BatchRequest, pool_id: str, node_id: str, name: str) -> str:
    return f"{pool_url(br, pool_id)}/nodes/{node_id}/users/{name}"


def _failed(result: dict[str, Any], what: str) -> errors.AzureError:
    text = node_users.output(result, "stderr").strip()[-1000:] or f"exit code {result.get('exitCode')}"
    return errors.InternalServerError(f"The node could not {what}: {text}")


@router.post("")
async def add_user(request: Request, account: str, pool_id: str, node_id: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request)

    def work() -> str:
        user = node_users.account(body, br.svc.clock)
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            pool = pools.get(s, br.account.key, pool_id)
            node = node_rules.get(s, pool, node_id)
            node_users.check_node(node)
            if not node_users.can_run(br.svc.host):
                raise node_users.cannot_run()
            node_users.add(s, node, user)
            port = node_users.sshd_port(s, node, br.svc.host, br.svc.settings.shared_host_address)
            key, machine_id = f"{node.key}/{user.name.lower()}", node.machine_id
        try:
            result = node_users.run(br.svc.host, machine_id, node_users.user_script(user, create=True, port=port))
        except Exception:
            with br.svc.db.write() as s:
                node_users.forget(s, [key])
            raise
        code = int(result.get("exitCode", -1))
        if code not in (0, node_users.USER_EXISTS_EXIT):
            with br.svc.db.write() as s:
                node_users.forget(s, [key])
            raise _failed(result, f"create the user '{user.name}'")
        if code == node_users.USER_EXISTS_EXIT:  # an account of the image (or made by a task) has the name
            with br.svc.db.write() as s:
                node_users.forget(s, [key])
            raise node_users.exists()
        return _url(br, pool_id, node_id, user.name)

    url = await in_thread(work)
    return Response(status_code=201, headers={"DataServiceId": url, "Location": url})


@router.put("/{user_name}")
async def update_user(request: Request, account: str, pool_id: str, node_id: str, user_name: str) -> Response:
    br = authenticate(request, account)
    body = await read_body(request)

    def work() -> None:
        with br.svc.db.write() as s:
            br.authorize(s, WRITE)
            pool = pools.get(s, br.account.key, pool_id)
            node = node_rules.get(s, pool, node_id)
            row = node_users.get(s, node, user_name)
            node_users.check_node(node)
            user = node_users.account(body, br.svc.clock, name=row.name, is_admin=row.is_admin)
            machine_id = node.machine_id
            row.expiry_time = user.expiry
            port = node_users.sshd_port(s, node, br.svc.host, br.svc.settings.shared_host_address)
        result = node_users.run(br.svc.host, machine_id, node_users.user_script(user, create=False, port=port))
        if int(result.get("exitCode", -1)) != 0:
            raise _failed(result, f"update the user '{user.name}'")

    await in_thread(work)
    return Response(status_code=200, headers={"DataServiceId": _url(br, pool_id, node_id, user_name)})


@router.delete("/{user_name}")
async def delete_user(request: Request, account: str, pool_id: str, node_id: str, user_name: str) -> Response:
    br = authenticate(request, account)

    def work() -> None:
        with br.svc.db.read() as s:
            br.authorize(s, WRITE)
            pool = pools.get(s, br.account.key, pool_id)
            node = node_rules.get(s, pool, node_id)
            row = node_users.get(s, node, user_name)
            key, name, machine_id = row.key, row.name, node.machine_id
        result = node_users.run(br.svc.host, machine_id, node_users.delete_script(name))
        if int(result.get("exitCode", -1)) != 0:
            raise _failed(result, f"delete the user '{name}'")
        with br.svc.db.write() as s:
            node_users.forget(s, [key])

    await in_thread(work)
    return Response(status_code=200)
