"""The portal's actions: resize a pool, delete a pool, add a task, terminate a job; and the source document's
portal steps, a snapshot of a VM's disk and a managed image from snapshots.

Each is a form post that passes the origin and CSRF checks, then calls one domain use case
(``domain/portal_actions.py``), which authorizes the principal with the API's action name and applies the same
rules as the API. Success redirects to the page (post/redirect/get); an error shows the page again with the API's
error code and message, and its status (403 ``AuthorizationFailed`` for a principal without the right).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from shoal.api.deps import in_thread, services
from shoal.api.portal import pages, render, sessions
from shoal.api.portal.sessions import PortalSession
from shoal.core import errors
from shoal.domain import portal_actions
from shoal.schemas import batch_bodies as bodies

router = APIRouter(prefix="/portal", include_in_schema=False)


def _counts(form: dict[str, str]) -> dict[str, Any]:
    """The node counts typed in the resize form, as the API's resize body: a field left empty keeps the pool's
    target, text that is not a count is sent as typed (and refused as the API refuses it)."""
    body: dict[str, Any] = {}
    for name, prop in (("dedicated", "targetDedicatedNodes"), ("lowpriority", "targetLowPriorityNodes")):
        text = form.get(name, "").strip()
        if text:
            body[prop] = int(text) if text.isdigit() else text
    return body


async def perform(request: Request, act: Callable[[PortalSession, dict[str, str]], Any], done: str,
                  again: Callable[[PortalSession, errors.AzureError], Awaitable[Response]]) -> Response:
    """One action: the session, the form's origin and CSRF token, then ``act`` (in a thread); on success a redirect
    to ``done``, on the API's error the page ``again`` with that error."""
    session = sessions.current(request)
    if session is None:
        return render.error_page(request, None, 401, "Unauthenticated", "Sign in first.")
    try:
        form = await sessions.check_post(request, session)
    except sessions.Refused as exc:
        return render.error_page(request, session, exc.status, "Refused", exc.message)
    try:
        await in_thread(lambda: act(session, form))
    except errors.AzureError as exc:
        try:
            return await again(session, exc)
        except errors.AzureError:  # the page itself is gone or forbidden: the action's error alone
            return render.error_page(request, session, exc.status, exc.code, exc.message)
    return render.secure(RedirectResponse(done, status_code=303))


@router.post("/batch/{account}/pools/{pool_id}/resize")
async def resize_pool(request: Request, account: str, pool_id: str) -> Response:
    svc = services(request)

    def act(session: PortalSession, form: dict[str, str]) -> None:
        body = _counts(form)
        if form.get("resize_timeout"):
            body["resizeTimeout"] = form["resize_timeout"]
        portal_actions.resize_pool(svc.db, svc.compute_context(), session.caller, account, pool_id,
                                   bodies.check(body, bodies.PoolResize))
        svc.nudge("pools")

    url = f"/portal/batch/{quote(account)}/pools/{quote(pool_id)}"
    return await perform(request, act, url, lambda s, e: pages.pool_page(request, s, account, pool_id, e))


@router.post("/batch/{account}/pools/{pool_id}/delete")
async def delete_pool(request: Request, account: str, pool_id: str) -> Response:
    svc = services(request)

    def act(session: PortalSession, form: dict[str, str]) -> None:
        portal_actions.delete_pool(svc.db, svc.compute_context(), session.caller, account, pool_id)
        svc.nudge("pools")

    return await perform(request, act, f"/portal/batch/{quote(account)}",
                      lambda s, e: pages.pool_page(request, s, account, pool_id, e))


@router.post("/batch/{account}/jobs/{job_id}/tasks")
async def add_task(request: Request, account: str, job_id: str) -> Response:
    svc = services(request)
    added: list[str] = []

    def act(session: PortalSession, form: dict[str, str]) -> None:
        body = bodies.check({"id": form.get("id", "").strip(), "commandLine": form.get("command_line", "")},
                            bodies.TaskAdd)
        added.append(portal_actions.add_task(svc.db, svc.clock, session.caller, account, job_id, body))
        svc.nudge("tasks")

    url = f"/portal/batch/{quote(account)}/jobs/{quote(job_id)}"
    response = await perform(request, act, url, lambda s, e: pages.job_page(request, s, account, job_id, e))
    if added and response.status_code == 303:
        response.headers["location"] = f"{url}/tasks/{quote(added[0])}"
    return response


@router.post("/batch/{account}/jobs/{job_id}/terminate")
async def terminate_job(request: Request, account: str, job_id: str) -> Response:
    svc = services(request)

    def act(session: PortalSession, form: dict[str, str]) -> None:
        portal_actions.terminate_job(svc.db, svc.clock, session.caller, account, job_id,
                                     form.get("reason") or None)
        svc.nudge("tasks")

    url = f"/portal/batch/{quote(account)}/jobs/{quote(job_id)}"
    return await perform(request, act, url, lambda s, e: pages.job_page(request, s, account, job_id, e))


@router.post("/groups/{group}/snapshots")
async def snapshot_disk(request: Request, group: str) -> Response:
    svc = services(request)
    made: list[str] = []

    def act(session: PortalSession, form: dict[str, str]) -> None:
        made.append(portal_actions.snapshot_disk(svc.db, svc.compute_context(), session.caller, svc.subscription_id,
                                                 group, form.get("name", "").strip(), form.get("disk", "")))
        svc.nudge("operations")

    return await _then_lineage(request, act, group, made)


@router.post("/groups/{group}/images")
async def image_from_snapshots(request: Request, group: str) -> Response:
    svc = services(request)
    made: list[str] = []
    data = [v for v in (await request.form()).getlist("data_snapshots") if isinstance(v, str) and v]

    def act(session: PortalSession, form: dict[str, str]) -> None:
        made.append(portal_actions.image_from_snapshots(
            svc.db, svc.compute_context(), session.caller, svc.subscription_id, group, form.get("name", "").strip(),
            form.get("os_snapshot", ""), data))
        svc.nudge("operations")

    return await _then_lineage(request, act, group, made)


async def _then_lineage(request: Request, act: Callable[[PortalSession, dict[str, str]], Any], group: str,
                        made: list[str]) -> Response:
    """Run a compute action; on success show the new resource's lineage, on an error the group again."""
    response = await perform(request, act, f"/portal/groups/{quote(group)}",
                             lambda s, e: pages.group_page(request, s, group, e))
    if made and response.status_code == 303:
        response.headers["location"] = f"/portal/lineage?id={quote(made[0])}"
    return response
