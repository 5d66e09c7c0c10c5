"""Authentication and authorization steps every ARM route takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from shoal.api.context import Context
from shoal.auth.tokens import ARM_AUDIENCES
from shoal.domain import authorization
from shoal.domain.authorization import Caller
from shoal.domain.identity import require_subscription
from shoal.domain.uow import Session

T = TypeVar("T")
__all__ = ["arm_caller", "authorize", "in_thread", "require_subscription", "services"]


def services(request: Request) -> Context:
    """What the app was built with (``api/app.py``), as routes see it."""
    svc: Context = request.app.state.services
    return svc


def arm_caller(request: Request) -> Caller:
    """Verify the bearer token for the ARM audience; 401 in the ARM format otherwise."""
    svc = services(request)
    claims = svc.tokens.verify(request.headers.get("authorization"), ARM_AUDIENCES, svc.tenant_id)
    return Caller(claims.object_id, claims.app_id, claims.tenant_id)


def authorize(session: Session, caller: Caller, subscription_id: str, action: str, scope: str) -> None:
    require_subscription(session, subscription_id)
    authorization.check_access(session, caller, action, scope)


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking store work off the event loop."""
    return await run_in_threadpool(fn)
