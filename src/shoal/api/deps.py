"""Authentication and authorization steps every ARM route takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from shoal.auth.tokens import ARM_AUDIENCES
from shoal.core import errors
from shoal.domain import authorization
from shoal.domain.authorization import Caller
from shoal.services import Services
from shoal.store import models

T = TypeVar("T")


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def arm_caller(request: Request) -> Caller:
    """Verify the bearer token for the ARM audience; 401 in the ARM format otherwise."""
    svc = services(request)
    claims = svc.tokens.verify(request.headers.get("authorization"), ARM_AUDIENCES, svc.tenant_id)
    return Caller(claims.object_id, claims.app_id, claims.tenant_id)


def require_subscription(session: Session, subscription_id: str) -> models.Subscription:
    sub = session.get(models.Subscription, subscription_id.lower())
    if sub is None:
        raise errors.SubscriptionNotFound(f"The subscription '{subscription_id}' could not be found.")
    return sub


def authorize(session: Session, caller: Caller, subscription_id: str, action: str, scope: str) -> None:
    require_subscription(session, subscription_id)
    authorization.check_access(session, caller, action, scope)


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking store work off the event loop."""
    return await run_in_threadpool(fn)
