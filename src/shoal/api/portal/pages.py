"""The portal's pages: sign-in and sign-out, then resource groups, Batch accounts, pools (with their node
heatmap), nodes with their files, jobs with their tasks, and a task with its output.

Each page is one domain view (``domain/portal_views.py``) rendered by a template; live parts are filled in by
the page's event stream (``live.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from shoal.api import lineage_svg
from shoal.api.deps import in_thread, services
from shoal.api.portal import render, sessions
from shoal.api.portal.sessions import PortalSession
from shoal.core import errors
from shoal.domain import identity, portal_signin, portal_views
from shoal.domain.batch import files as batch_files

router = APIRouter(prefix="/portal", include_in_schema=False)
MAX_FILE_SHOWN = 1 << 20
MAX_FILES_LISTED = 500


# --- signing in and out ----------------------------------------------------------------------------------------
def _signin_page(request: Request, status: int = 200, problem: str = "", client_id: str = "") -> Response:
    nonce = sessions.signin_nonce(request)
    response = render.page(request, "signin.html", None, status=status, problem=problem, client_id=client_id,
                           csrf=nonce, next=render.safe_next(request.query_params.get("next")))
    sessions.remember_signin_nonce(response, nonce)
    return response


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return _signin_page(request)


@router.post("/signin")
async def signin(request: Request) -> Response:
    try:
        form = await sessions.check_post(request, None)
    except sessions.Refused as exc:
        return _signin_page(request, exc.status, exc.message)
    svc = services(request)
    client_id, secret = form.get("client_id", "").strip(), form.get("client_secret", "")
    try:
        who = await in_thread(lambda: portal_signin.check_secret(svc.db, svc.tenant_id, client_id, secret))
    except identity.TokenGrantError as exc:
        return _signin_page(request, 401, exc.description, client_id)
    response = render.secure(RedirectResponse(render.safe_next(form.get("next")), status_code=303))
    sessions.start(request, response, who.object_id, who.client_id, who.display_name)
    return response


@router.get("/signin/link")
async def signin_link(request: Request) -> Response:
    """A one-time link (printed by ``shoal serve``): signs its principal in once, then is gone."""
    svc = services(request)
    code = request.query_params.get("code") or ""
    who = await in_thread(lambda: portal_signin.use_link(svc.db, svc.clock, code))
    if who is None:
        return _signin_page(request, 401, "This sign-in link is unknown, expired or already used. Sign in with a "
                                          "client id and secret (`shoal env` prints the first principal's).")
    response = render.secure(RedirectResponse("/portal/", status_code=303))
    sessions.start(request, response, who.object_id, who.client_id, who.display_name)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = sessions.current(request)
    try:
        await sessions.check_post(request, session)
    except sessions.Refused as exc:
        return render.error_page(request, session, exc.status, "Refused", exc.message)
    response = render.secure(RedirectResponse("/portal/signin", status_code=303))
    sessions.end(response)
    return response


# --- views -----------------------------------------------------------------------------------------------------
@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    svc = services(request)

    async def build(session: PortalSession) -> Response:
        data = await in_thread(lambda: portal_views.home(svc.db, session.caller, svc.subscription_id))
        return render.page(request, "home.html", session, home=data)

    return await render.view(request, build)


async def group_page(request: Request, session: PortalSession, group: str,
                     error: errors.AzureError | None = None) -> Response:
    svc = services(request)
    data = await in_thread(lambda: portal_views.group(svc.db, session.caller, svc.subscription_id, group))
    return render.page(request, "group.html", session, status=error.status if error else 200, group=data,
                       error=error)


@router.get("/groups/{group}")
async def group(request: Request, group: str) -> Response:
    return await render.view(request, lambda session: group_page(request, session, group))


@router.get("/lineage")
async def lineage(request: Request) -> Response:
    """An image's lineage (``?id=<resource id>``): the graph drawn as SVG, and its resources as a list."""
    svc = services(request)
    resource_id = request.query_params.get("id", "")

    async def build(session: PortalSession) -> Response:
        data = await in_thread(lambda: portal_views.lineage(svc.db, session.caller, resource_id))
        return render.page(request, "lineage.html", session, lineage=data, svg=Markup(lineage_svg.render(data)))

    return await render.view(request, build)


@router.get("/lineage.svg")
async def lineage_image(request: Request) -> Response:
    svc = services(request)
    resource_id = request.query_params.get("id", "")

    async def build(session: PortalSession) -> Response:
        data = await in_thread(lambda: portal_views.lineage(svc.db, session.caller, resource_id))
        return render.secure(Response(lineage_svg.render(data), media_type="image/svg+xml"))

    return await render.view(request, build)


@router.get("/batch/{account}")
async def account(request: Request, account: str) -> Response:
    svc = services(request)

    async def build(session: PortalSession) -> Response:
        data = await in_thread(lambda: portal_views.account(svc.db, session.caller, account))
        return render.page(request, "account.html", session, account=data)

    return await render.view(request, build)


async def pool_page(request: Request, session: PortalSession, account: str, pool_id: str,
                    error: errors.AzureError | None = None) -> Response:
    svc = services(request)
    data = await in_thread(lambda: portal_views.pool(svc.db, session.caller, account, pool_id))
    return render.page(request, "pool.html", session, status=error.status if error else 200, pool=data,
                       error=error)


@router.get("/batch/{account}/pools/{pool_id}")
async def pool(request: Request, account: str, pool_id: str) -> Response:
    return await render.view(request, lambda session: pool_page(request, session, account, pool_id))


@router.get("/batch/{account}/pools/{pool_id}/nodes/{node_id}")
async def node(request: Request, account: str, pool_id: str, node_id: str) -> Response:
    svc = services(request)

    async def build(session: PortalSession) -> Response:
        data = await in_thread(lambda: portal_views.node(svc.db, session.caller, account, pool_id, node_id))
        tree = await in_thread(lambda: portal_views.node_files(svc.db, session.caller, account, pool_id, node_id))
        listed: list[dict[str, Any]] = []
        problem = ""
        try:
            listed = await in_thread(lambda: batch_files.list_files(svc.host, tree, recursive=True))
        except errors.AzureError as exc:
            problem = exc.message
        shown = [f for f in listed if not f["isDirectory"]][:MAX_FILES_LISTED]
        return render.page(request, "node.html", session, node=data, files=shown, problem=problem)

    return await render.view(request, build)


@router.get("/batch/{account}/pools/{pool_id}/nodes/{node_id}/files/{file_path:path}")
async def node_file(request: Request, account: str, pool_id: str, node_id: str, file_path: str) -> Response:
    """A node's file as text (its first :data:`MAX_FILE_SHOWN` bytes), read as the Batch file API reads it."""
    svc = services(request)

    async def build(session: PortalSession) -> Response:
        tree = await in_thread(lambda: portal_views.node_files(svc.db, session.caller, account, pool_id, node_id))
        info, data = await in_thread(lambda: batch_files.read_file(svc.host, tree, file_path, 0,
                                                                   MAX_FILE_SHOWN - 1, suffix=False))
        return render.page(request, "file.html", session, account=account, pool_id=pool_id, node_id=node_id,
                           path=batch_files.check_path(file_path), size=info["size"],
                           text=data.decode("utf-8", errors="replace"), truncated=info["size"] > len(data))

    return await render.view(request, build)


async def job_page(request: Request, session: PortalSession, account: str, job_id: str,
                   error: errors.AzureError | None = None) -> Response:
    svc = services(request)
    state = request.query_params.get("state") or ""
    data = await in_thread(lambda: portal_views.job(svc.db, session.caller, account, job_id, state))
    return render.page(request, "job.html", session, status=error.status if error else 200, job=data, error=error,
                       states=portal_views.TASK_STATES)


@router.get("/batch/{account}/jobs/{job_id}")
async def job(request: Request, account: str, job_id: str) -> Response:
    return await render.view(request, lambda session: job_page(request, session, account, job_id))


@router.get("/batch/{account}/jobs/{job_id}/tasks/{task_id}")
async def task(request: Request, account: str, job_id: str, task_id: str) -> Response:
    svc = services(request)

    async def build(session: PortalSession) -> Response:
        data = await in_thread(lambda: portal_views.task(svc.db, session.caller, account, job_id, task_id))
        return render.page(request, "task.html", session, task=data)

    return await render.view(request, build)
