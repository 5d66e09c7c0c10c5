"""Entra-style identity endpoints: OpenID discovery, JWKS and the client-credentials token grant.

Errors here use OAuth2's format (``error``, ``error_description``, ``error_codes``), not ARM's, because
MSAL and azure-identity parse them that way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api.azure_hosts import login_origin
from shoal.api.deps import in_thread, services
from shoal.api.identity.graph import graph_audience
from shoal.auth.tokens import ARM_AUDIENCES, BATCH_AUDIENCES, VAULT_AUDIENCES, audience_for_scope
from shoal.domain import identity

router = APIRouter()


def known_audiences(request: Request) -> tuple[str, ...]:
    return ARM_AUDIENCES + BATCH_AUDIENCES + VAULT_AUDIENCES + (graph_audience(services(request).settings.base_url),)


def _oauth_error(status: int, error: str, codes: list[int], description: str) -> JSONResponse:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace = str(uuid.uuid4())
    return JSONResponse(
        {"error": error, "error_description": f"{description}\r\nTrace ID: {trace}\r\nTimestamp: {now}",
         "error_codes": codes, "timestamp": now, "trace_id": trace, "correlation_id": str(uuid.uuid4())},
        status_code=status, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _tenant_or_error(request: Request, tenant: str) -> JSONResponse | None:
    svc = services(request)
    if tenant.lower() not in (svc.tenant_id, "shoal.local"):
        return _oauth_error(400, "invalid_request", [90002],
                            f"AADSTS90002: Tenant '{tenant}' not found. This Shoal's tenant is '{svc.tenant_id}'.")
    return None


def _openid_document(request: Request, tenant: str, v2: bool) -> dict[str, object]:
    svc = services(request)
    # Endpoints under the host the client came to (login.microsoftonline.com through `shoal proxy`); the
    # issuer stays Shoal's own, the one its tokens carry wherever they were requested.
    base = login_origin(request, svc.settings.base_url)
    tid = svc.tenant_id
    suffix = "/v2.0" if v2 else ""
    return {
        "token_endpoint": f"{base}/{tid}/oauth2{suffix}/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "jwks_uri": f"{base}/{tid}/discovery{suffix}/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": svc.tokens.issuer(tid) if v2 else f"{svc.settings.base_url}/{tid}/",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{base}/{tid}/oauth2{suffix}/authorize",
        "device_authorization_endpoint": f"{base}/{tid}/oauth2{suffix}/devicecode",
        "end_session_endpoint": f"{base}/{tid}/oauth2{suffix}/logout",
        "tenant_region_scope": "NA",
        "cloud_instance_name": "shoal.local",
    }


@router.get("/{tenant}/v2.0/.well-known/openid-configuration")
async def openid_configuration_v2(request: Request, tenant: str) -> JSONResponse:
    return _tenant_or_error(request, tenant) or JSONResponse(_openid_document(request, tenant, True))


@router.get("/{tenant}/.well-known/openid-configuration")
async def openid_configuration_v1(request: Request, tenant: str) -> JSONResponse:
    return _tenant_or_error(request, tenant) or JSONResponse(_openid_document(request, tenant, False))


@router.get("/{tenant}/discovery/v2.0/keys")
@router.get("/{tenant}/discovery/keys")
async def jwks(request: Request, tenant: str) -> JSONResponse:
    return JSONResponse(services(request).tokens.jwks())


@router.get("/common/discovery/instance")
async def instance_discovery(request: Request) -> JSONResponse:
    """MSAL's instance discovery; answered so clients that forget to disable it still work."""
    base = login_origin(request, services(request).settings.base_url)
    host = base.split("://", 1)[1]
    return JSONResponse({"tenant_discovery_endpoint": f"{base}/{services(request).tenant_id}/v2.0/.well-known/"
                                                      "openid-configuration",
                         "api-version": "1.1",
                         "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}]})


async def _token(request: Request, tenant: str, v1: bool) -> JSONResponse:
    if (err := _tenant_or_error(request, tenant)) is not None:
        return err
    ctype = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" not in ctype and "multipart/form-data" not in ctype:
        return _oauth_error(400, "invalid_request", [900144],
                            "AADSTS900144: The request body must be form-encoded "
                            "(application/x-www-form-urlencoded) and contain 'grant_type'.")
    form = await request.form()
    grant = str(form.get("grant_type") or "")
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", [70003],
                            f"AADSTS70003: The app requested an unsupported grant type '{grant}'. Shoal supports "
                            "'client_credentials' (service principals).")
    raw_scope = str(form.get("resource") or "") + "/.default" if v1 else str(form.get("scope") or "")
    audience = audience_for_scope(raw_scope, known_audiences(request))
    if audience is None:
        return _oauth_error(400, "invalid_scope", [1002012],
                            f"AADSTS1002012: The provided value for scope '{raw_scope}' is not valid. Client "
                            "credential flows must have a scope value with /.default suffixed to the resource "
                            "identifier (application ID URI), e.g. https://management.azure.com/.default or "
                            "https://batch.core.windows.net//.default.")
    svc = services(request)
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    basic = request.headers.get("authorization", "")
    if basic.lower().startswith("basic "):
        import base64
        from urllib.parse import unquote

        try:
            user, _, pw = base64.b64decode(basic[6:]).decode().partition(":")
            client_id, secret = unquote(user), unquote(pw)
        except (ValueError, UnicodeDecodeError):
            pass

    def grant_token() -> tuple[str, int]:
        with svc.db.read() as s:
            principal = identity.authenticate_client(s, svc.tenant_id, str(client_id or "") or None,
                                                     str(secret or "") or None)
            return svc.tokens.issue(tenant_id=svc.tenant_id, object_id=principal.object_id,
                                    app_id=principal.client_id, audience=audience)

    try:
        token, expires_in = await in_thread(grant_token)
    except identity.TokenGrantError as exc:
        return _oauth_error(exc.status, exc.error, [exc.code], exc.description)
    body: dict[str, object] = {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                               "access_token": token}
    if v1:
        now = int(svc.clock.now().timestamp())
        body.update({"resource": audience, "expires_on": str(now + expires_in), "not_before": str(now)})
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.post("/{tenant}/oauth2/v2.0/token")
async def token_v2(request: Request, tenant: str) -> JSONResponse:
    return await _token(request, tenant, v1=False)


@router.post("/{tenant}/oauth2/token")
async def token_v1(request: Request, tenant: str) -> JSONResponse:
    return await _token(request, tenant, v1=True)
