"""The autoscale editor of a pool: write a formula, press Evaluate, and see every variable's value and the samples
it read, beside the results string Azure shows; then enable autoscale with it (or disable autoscale).

Evaluate changes nothing and needs only the right to read the pool (as the API's ``evaluateautoscale``); enabling
and disabling are the API's ``enableautoscale``/``disableautoscale`` use cases, with their rights and errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from shoal.api.deps import in_thread, services
from shoal.api.portal import actions, render, sessions
from shoal.api.portal.sessions import PortalSession
from shoal.core import errors
from shoal.domain import portal_actions, portal_views
from shoal.schemas import batch_bodies as bodies

router = APIRouter(prefix="/portal", include_in_schema=False)
EXAMPLE = ("// Up to 10 dedicated nodes, following the tasks waiting in the last 5 minutes\n"
           "$waiting = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5) < 70 ? 0 :\n"
           "    avg($PendingTasks.GetSample(TimeInterval_Minute * 5));\n"
           "$TargetDedicatedNodes = min(10, $waiting);\n"
           "$NodeDeallocationOption = taskcompletion;")


async def editor_page(request: Request, session: PortalSession, account: str, pool_id: str, *,
                      formula: str | None = None, interval: str = "", explained: dict[str, Any] | None = None,
                      error: errors.AzureError | None = None) -> Response:
    svc = services(request)
    pool = await in_thread(lambda: portal_views.pool(svc.db, session.caller, account, pool_id))
    current = pool.autoscale
    text = formula if formula is not None else str(current.get("formula") or EXAMPLE)
    return render.page(request, "autoscale.html", session, status=error.status if error else 200, pool=pool,
                       formula=text, interval=interval or str(current.get("interval") or ""), explained=explained,
                       error=error)


@router.get("/batch/{account}/pools/{pool_id}/autoscale")
async def editor(request: Request, account: str, pool_id: str) -> Response:
    return await render.view(request, lambda session: editor_page(request, session, account, pool_id))


@router.post("/batch/{account}/pools/{pool_id}/autoscale/evaluate")
async def evaluate(request: Request, account: str, pool_id: str) -> Response:
    svc = services(request)

    async def build(session: PortalSession) -> Response:
        form = await sessions.check_post(request, session)
        formula = form.get("formula", "")
        explained = await in_thread(lambda: portal_views.autoscale_explain(svc.db, session.caller, account, pool_id,
                                                                           formula, svc.clock.now()))
        return await editor_page(request, session, account, pool_id, formula=formula,
                                 interval=form.get("interval", ""), explained=explained)

    return await render.view(request, build)


@router.post("/batch/{account}/pools/{pool_id}/autoscale/enable")
async def enable(request: Request, account: str, pool_id: str) -> Response:
    svc = services(request)
    typed: dict[str, str] = {}

    def act(session: PortalSession, form: dict[str, str]) -> None:
        typed.update(form)
        body: dict[str, Any] = {"autoScaleFormula": form.get("formula", "")}
        if form.get("interval", "").strip():
            body["autoScaleEvaluationInterval"] = form["interval"].strip()
        portal_actions.enable_autoscale(svc.db, svc.compute_context(), session.caller, account, pool_id,
                                        bodies.check(body, bodies.AutoScale))
        svc.nudge("pools")

    return await actions.perform(request, act, f"/portal/batch/{quote(account)}/pools/{quote(pool_id)}",
                             lambda s, e: editor_page(request, s, account, pool_id, formula=typed.get("formula"),
                                                      interval=typed.get("interval", ""), error=e))


@router.post("/batch/{account}/pools/{pool_id}/autoscale/disable")
async def disable(request: Request, account: str, pool_id: str) -> Response:
    svc = services(request)

    def act(session: PortalSession, form: dict[str, str]) -> None:
        portal_actions.disable_autoscale(svc.db, svc.compute_context(), session.caller, account, pool_id)

    return await actions.perform(request, act, f"/portal/batch/{quote(account)}/pools/{quote(pool_id)}",
                             lambda s, e: editor_page(request, s, account, pool_id, error=e))
