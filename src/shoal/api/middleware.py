"""Per-request plumbing as a plain ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware).

- ARM paths are rewritten to the canonical spelling of their fixed words so routes match however a
  client cases them (``resourcegroups`` vs ``resourceGroups``); user names keep their case.
- Request ids: ARM responses carry ``x-ms-request-id`` and ``x-ms-correlation-request-id`` and echo
  ``x-ms-client-request-id``; Batch data-plane responses carry ``request-id`` and echo
  ``client-request-id``.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.core.ids import canonical_path


def is_data_plane(path: str) -> bool:
    return path.startswith("/batch/")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # az joins its endpoint (with a trailing slash) and "/metadata/endpoints" into "//metadata/...".
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        canonical = canonical_path(path)
        if canonical != scope["path"]:
            scope = dict(scope)
            scope["path"] = canonical
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})
        scope["state"]["request_id"] = request_id
        extra: list[tuple[bytes, bytes]]
        if is_data_plane(path):
            extra = [(b"request-id", request_id.encode())]
            if "client-request-id" in headers:
                extra.append((b"client-request-id", headers["client-request-id"].encode("latin-1")))
        else:
            correlation = headers.get("x-ms-correlation-request-id") or request_id
            extra = [(b"x-ms-request-id", request_id.encode()),
                     (b"x-ms-correlation-request-id", correlation.encode("latin-1"))]
            if "x-ms-client-request-id" in headers:
                extra.append((b"x-ms-client-request-id", headers["x-ms-client-request-id"].encode("latin-1")))

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_ids)


def request_id_of(scope_state: Any) -> str:
    return str(getattr(scope_state, "request_id", "")) or str(uuid.uuid4())
