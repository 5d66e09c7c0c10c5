"""Requests that arrive under Azure's own hostnames (through ``shoal proxy``) are answered under those names.

``shoal proxy`` hands Shoal the decrypted requests of clients that kept Azure's default endpoints, with their
``Host`` header intact (``management.azure.com``, ``login.microsoftonline.com``,
``{account}.{region}.batch.azure.com``). Everything a client follows must then name a host it reaches through
the proxy, so for such a request:

- a Batch host is routed to that account's data plane (``/pools`` -> ``/batch/{account}/pools``; the raw path
  is left alone, so a Shared Key signature over ``/{account}/pools`` still verifies);
- Shoal's own origin in ``Location``, ``Azure-AsyncOperation`` and ``Operation-Location`` becomes the host the
  request came to, and the authority in a ``WWW-Authenticate`` challenge becomes ``login.microsoftonline.com``
  (Azure itself names ``login.windows.net`` there; Shoal names the host the proxy answers for);
- routes that write URLs into bodies ask :func:`public_origin`, :func:`login_origin` and
  :func:`account_endpoint`.

Tokens keep Shoal's issuer whatever host they were requested at, so a token from ``login.microsoftonline.com``
is good at ``management.azure.com`` and at Shoal's own address alike. Only these fixed names are honoured:
any other ``Host`` header changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.core import azure_hosts

_REWRITTEN = (b"location", b"azure-asyncoperation", b"operation-location")


def _azure_host(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = azure_hosts.normalize(value.decode("latin-1"))
            return host if azure_hosts.role(host) is not None else None
    return None


class AzureHostsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = _azure_host(scope) if scope["type"] == "http" else None
        if host is None:
            await self.app(scope, receive, send)
            return
        base: str = scope["app"].state.services.settings.base_url
        scope = dict(scope)
        scope["state"] = {**scope.get("state", {}), "azure_host": host}
        origin = f"https://{host}"
        prefixes = [(base.encode(), origin.encode())]
        account = azure_hosts.batch_account(host)
        if account is not None:
            mount = f"/batch/{account}"
            path: str = scope["path"]
            if path != mount and not path.startswith(mount + "/"):
                scope["path"] = mount + (path if path != "/" else "")
            prefixes.insert(0, (f"{base}{mount}".encode(), origin.encode()))
        challenge_from = f'authorization_uri="{base}/'.encode()
        challenge_to = f'authorization_uri="https://{azure_hosts.LOGIN_HOST}/'.encode()

        def rewrite(name: bytes, value: bytes) -> bytes:
            lowered = name.lower()
            if lowered in _REWRITTEN:
                for old, new in prefixes:
                    if value == old or value.startswith(old + b"/") or value.startswith(old + b"?"):
                        return new + value[len(old):]
            elif lowered == b"www-authenticate":
                return value.replace(challenge_from, challenge_to)
            return value

        async def send_rewritten(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [(k, rewrite(k, v)) for k, v in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, send_rewritten)


def azure_host(request: Request) -> str | None:
    """The Azure hostname this request came to (through ``shoal proxy``), or None."""
    state: Any = request.scope.get("state") or {}
    host = state.get("azure_host") if isinstance(state, dict) else None
    return str(host) if host else None


def public_origin(request: Request, own: str) -> str:
    """The origin the client used: ``https://management.azure.com`` etc., or Shoal's own (``own``)."""
    host = azure_host(request)
    return f"https://{host}" if host else own


def login_origin(request: Request, own: str) -> str:
    """Where this client reaches the identity endpoints: ``login.microsoftonline.com`` behind the proxy."""
    return f"https://{azure_hosts.LOGIN_HOST}" if azure_host(request) else own


def account_endpoint(request: Request, stored: str, name: str, location: str | None) -> str:
    """A Batch account's ``accountEndpoint`` for this client: ``{account}.{region}.batch.azure.com`` behind the
    proxy, the stored path-style ``host:port/batch/{account}`` otherwise."""
    if azure_host(request) and location:
        return azure_hosts.batch_host(name, location)
    return stored


def client_url(request: Request) -> URL:
    """The URL as the client sent it (the Batch mount a Batch hostname implies is not part of it)."""
    host = azure_host(request)
    if host is None or azure_hosts.batch_account(host) is None:
        return request.url
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"").decode("latin-1")
    return URL(f"https://{host}{raw.decode('latin-1').split('?', 1)[0]}" + (f"?{query}" if query else ""))
