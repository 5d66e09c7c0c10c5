"""What every portal response shares: templates, security headers, the sign-in redirect, error pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from shoal.api.portal import sessions
from shoal.api.portal.sessions import PortalSession
from shoal.core import errors

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
SECURITY_HEADERS = {
    # No inline script or style: pages load only this server's own files.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def page(request: Request, name: str, session: PortalSession | None, status: int = 200,
         **context: Any) -> Response:
    response = templates.TemplateResponse(request, name, {"session": session, **context}, status_code=status)
    return secure(response)


def error_page(request: Request, session: PortalSession | None, status: int, code: str, message: str) -> Response:
    return page(request, "error.html", session, status=status, code=code, message=message)


def to_signin(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return secure(RedirectResponse(f"/portal/signin?next={quote(target, safe='')}", status_code=303))


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a portal page of this server, never another site."""
    if value and value.startswith("/portal") and not value.startswith("//") and "\\" not in value:
        return value
    return "/portal/"


async def view(request: Request, build: Callable[[PortalSession], Awaitable[Response]]) -> Response:
    """A page for a signed-in principal (others go to the sign-in page); refusals and the API's errors become
    an error page with the API's status, code and message."""
    session = sessions.current(request)
    if session is None:
        return to_signin(request)
    try:
        return await build(session)
    except sessions.Refused as exc:
        return error_page(request, session, exc.status, "Refused", exc.message)
    except errors.AzureError as exc:
        return error_page(request, session, exc.status, exc.code, exc.message)
