"""The web portal at ``/portal``: server-rendered pages (Jinja2), a little vanilla JavaScript, live updates by
server-sent events. No build step and no Node.js: the templates and static files ship in the package.

- ``sessions.py``: sign-in sessions (signed cookies) and the CSRF and origin checks of every post;
- ``pages.py``: sign-in and the views; ``actions.py``: the forms that change things; ``autoscale.py``: the
  autoscale editor; ``live.py``: event streams;
- ``render.py``: templates, security headers, error pages.

What a page shows and what its actions do are domain use cases (``domain/portal_views.py``,
``domain/portal_actions.py``, ``domain/portal_signin.py``) that check the principal's role assignments with the
API's own action names.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from shoal.api.portal import actions, autoscale, live, pages, render

router = APIRouter(include_in_schema=False)
STATIC = render.HERE / "static"
_CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".svg": "image/svg+xml", ".png": "image/png"}


@router.get("/portal/static/{name}")
async def static(name: str) -> Response:
    """The portal's own script, style sheet and icons (one flat folder; nothing else is served from here)."""
    path = STATIC / name
    suffix = path.suffix
    if "/" in name or name.startswith(".") or suffix not in _CONTENT_TYPES or not path.is_file():
        return Response(status_code=404)
    return render.secure(FileResponse(path, media_type=_CONTENT_TYPES[suffix],
                                      headers={"Cache-Control": "no-cache"}))


for module in (pages, actions, autoscale, live):
    router.include_router(module.router)
