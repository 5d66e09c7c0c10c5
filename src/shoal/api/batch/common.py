"""What every Batch data-plane route shares: resolving the account, authenticating (Entra ID bearer or
Shared Key), api-version, request bodies, list pages, and the response headers the SDKs read."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from shoal.api.azure_hosts import azure_host, client_url
from shoal.api.context import Context
from shoal.api.deps import services
from shoal.auth import sharedkey
from shoal.auth.tokens import BATCH_AUDIENCES
from shoal.core import apiversion, azure_hosts, errors, jsonbody, timefmt
from shoal.domain import authorization
from shoal.domain.authorization import Caller
from shoal.domain.batch import accounts, unsupported
from shoal.schemas import batch_bodies as bodies
from shoal.store import models

MAX_BODY = 4 * 1024 * 1024


@dataclass
class BatchRequest:
    svc: Context
    account: models.Resource
    caller: Caller | None  # None for Shared Key
    version: apiversion.ApiVersion

    @property
    def shared_key(self) -> bool:
        return self.caller is None

    origin: str | None = None  # set when the request came to the account's Batch hostname (`shoal proxy`)

    @property
    def account_url(self) -> str:
        return self.origin or f"{self.svc.settings.base_url}/batch/{self.account.name}"

    def authorize(self, s: Any, action: str) -> None:
        """Entra ID callers need a role that allows the action on the account; Shared Key holds every right."""
        if self.caller is not None:
            authorization.check_access(s, self.caller, action, self.account.id)


def authentication_failed(message: str) -> errors.AzureError:
    return errors.BatchAuthenticationFailed(
        "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly "
        f"including the signature. {message}",
        values={"AuthenticationErrorDetail": message})


def _version(request: Request) -> apiversion.ApiVersion:
    value = next((v for k, v in request.query_params.multi_items() if k.lower() == "api-version"), None)
    if not value:
        raise errors.MissingRequiredQueryParameter(
            "A query parameter that's mandatory for this request is not specified: api-version.",
            values={"QueryParameterName": "api-version"})
    return apiversion.parse(value, request.url.path)  # unpublished versions: InvalidQueryParameterValue


def authenticate(request: Request, account_name: str) -> BatchRequest:
    svc = services(request)
    version = _version(request)
    with svc.db.read() as s:
        account = accounts.find_by_name(s, account_name)
    if account is None or account.provisioning_state == "Deleting":
        raise errors.AccountNotFound(f"The Batch account '{account_name}' does not exist on this Shoal.")
    header = request.headers.get("authorization") or ""
    allowed = account.properties.get("allowedAuthenticationModes") or []
    if header.startswith("SharedKey "):
        if account.properties.get("poolAllocationMode") == "UserSubscription":
            raise authentication_failed("Shared Key authentication is not supported for accounts in "
                                        "UserSubscription pool allocation mode: use Microsoft Entra ID.")
        if "SharedKey" not in allowed:
            raise authentication_failed("Shared Key authentication is disabled for this account "
                                        "(allowedAuthenticationModes): use Microsoft Entra ID.")
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        req = sharedkey.SignedRequest(request.method, raw_path, request.scope.get("query_string", b"").decode(
            "latin-1"), dict(request.headers))
        keys = [account.internal["keys"]["primary"], account.internal["keys"]["secondary"]]
        try:
            sharedkey.verify(req, account.name, keys, svc.clock.now())
        except sharedkey.SharedKeyError as exc:
            raise authentication_failed(str(exc)) from exc
        return BatchRequest(svc, account, None, version, _origin(request))
    if "AAD" not in allowed and header.lower().startswith("bearer "):
        raise authentication_failed("Microsoft Entra ID authentication is disabled for this account.")
    claims = svc.tokens.verify(header or None, BATCH_AUDIENCES, svc.tenant_id)
    return BatchRequest(svc, account, Caller(claims.object_id, claims.app_id, claims.tenant_id), version,
                        _origin(request))


def _origin(request: Request) -> str | None:
    host = azure_host(request)
    return f"https://{host}" if host and azure_hosts.batch_account(host) else None


async def read_body(request: Request, *, required: bool = True,
                    shape: type[bodies.Wire] | None = None) -> dict[str, Any]:
    """The request's JSON object (bounded in size and depth), checked against ``shape`` when given and against the
    properties Shoal refuses for the route's operation."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise errors.RequestBodyTooLarge("The request body is too large.")
    if not raw.strip():
        if required:
            raise errors.MissingRequiredProperty("The request body is missing.")
        return {}
    try:
        data = jsonbody.loads(raw)
    except jsonbody.TooDeep as exc:
        raise errors.InvalidRequestBody(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestBody(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise errors.InvalidRequestBody("The request body must be a JSON object.")
    checked = bodies.check(data, shape) if shape is not None else data
    route = getattr(request.scope.get("route"), "path", None)
    if route:  # properties Shoal refuses (domain/batch/unsupported.py), named before anything is stored
        unsupported.refuse(unsupported.operation(request.method, route), checked)
    return checked


def entity_headers(etag: str, last_modified: Any, data_service_id: str | None = None) -> dict[str, str]:
    headers = {"ETag": etag, "Last-Modified": timefmt.format_http_date(last_modified)}
    if data_service_id:
        headers["DataServiceId"] = data_service_id
    return headers


def created(url: str, etag: str, last_modified: Any) -> Response:
    return Response(status_code=201, headers={**entity_headers(etag, last_modified, url), "Location": url})


def accepted(url: str, etag: str | None = None, last_modified: Any = None) -> Response:
    headers = {"DataServiceId": url}
    if etag:
        headers.update(entity_headers(etag, last_modified))
    return Response(status_code=202, headers=headers)


def page(request: Request, items: list[dict[str, Any]], metadata: str) -> JSONResponse:
    """``{"odata.metadata", "value", "odata.nextLink"}`` with ``maxresults`` (1-1000) and an opaque skip token."""
    raw_max = request.query_params.get("maxresults") or request.query_params.get("maxResults")
    try:
        size = int(raw_max) if raw_max else 1000
    except ValueError as exc:
        raise errors.InvalidQueryParameterValue(f"maxresults '{raw_max}' is not an integer.") from exc
    if not 1 <= size <= 1000:
        raise errors.InvalidQueryParameterValue("maxresults must be between 1 and 1000.")
    token = request.query_params.get("$skiptoken")
    try:
        start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except ValueError as exc:
        raise errors.InvalidQueryParameterValue("The $skiptoken is invalid.") from exc
    body: dict[str, Any] = {"odata.metadata": metadata, "value": items[start:start + size]}
    if start + size < len(items):
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
        params.append(("$skiptoken", base64.urlsafe_b64encode(str(start + size).encode()).decode()))
        body["odata.nextLink"] = str(client_url(request).replace(query=urlencode(params)))
    return JSONResponse(body)
