"""Portal sessions: a signed cookie naming the signed-in principal, and the checks every form post passes.

The cookie is ``base64url(json) . base64url(HMAC-SHA256)``, keyed by a key derived (HKDF) from the token
signing key, so servers that share the signing key share sessions and a reader of the database cannot forge one.
It is ``Secure``, ``HttpOnly`` and ``SameSite=Strict``, scoped to ``/portal``, and lasts
:data:`SESSION_LIFETIME`. It names the principal only: what the principal may see and do is read from its role
assignments on every request, so a removed role or principal takes effect at once.

Every POST must come from a page of this origin (``Origin``, when the browser sends it, names this host) and
carry the session's CSRF token, an HMAC of the session id that only pages of the session show. The sign-in form,
which has no session yet, carries the value of a short-lived sign-in cookie instead (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Request
from fastapi.responses import Response

from shoal.api.deps import services
from shoal.domain.authorization import Caller

COOKIE = "shoal_portal"
SIGNIN_COOKIE = "shoal_portal_signin"
PATH = "/portal"
SESSION_LIFETIME = timedelta(hours=8)
SIGNIN_LIFETIME = timedelta(minutes=30)
_keys: dict[str, bytes] = {}


class Refused(Exception):
    """A request the portal refuses before doing anything (bad CSRF token, foreign origin)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class PortalSession:
    sid: str
    caller: Caller
    name: str  # the principal's display name
    csrf: str


def _key(request: Request) -> bytes:
    key = services(request).tokens.keys[0]
    if key.kid not in _keys:
        der = key.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
        _keys[key.kid] = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                              info=b"shoal portal sessions").derive(der)
    return _keys[key.kid]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, label: str, data: bytes) -> bytes:
    return hmac.new(key, label.encode() + b"\0" + data, hashlib.sha256).digest()


def csrf_token(request: Request, sid: str) -> str:
    return _b64(_mac(_key(request), "csrf", sid.encode()))[:32]


def _now(request: Request) -> int:
    return int(services(request).clock.now().timestamp())


def current(request: Request) -> PortalSession | None:
    """The session of the request's cookie, if it is genuine and unexpired."""
    raw = request.cookies.get(COOKIE) or ""
    payload_text, _, mac_text = raw.partition(".")
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except ValueError:
        return None
    if not payload or not hmac.compare_digest(mac, _mac(_key(request), "session", payload)):
        return None
    try:
        data = json.loads(payload)
        expires, sid = int(data["exp"]), str(data["sid"])
        caller = Caller(str(data["oid"]), str(data["app"]), str(data["tid"]))
    except (ValueError, KeyError, TypeError):
        return None
    if expires <= _now(request) or caller.tenant_id != services(request).tenant_id:
        return None
    return PortalSession(sid, caller, str(data.get("name") or caller.app_id), csrf_token(request, sid))


def start(request: Request, response: Response, object_id: str, client_id: str, name: str) -> None:
    """Sign a principal in: a new session cookie on ``response`` (and the sign-in cookie cleared)."""
    lifetime = int(SESSION_LIFETIME.total_seconds())
    data = {"sid": secrets.token_urlsafe(16), "oid": object_id, "app": client_id, "tid": services(request).tenant_id,
            "name": name, "exp": _now(request) + lifetime}
    payload = json.dumps(data, separators=(",", ":")).encode()
    value = f"{_b64(payload)}.{_b64(_mac(_key(request), 'session', payload))}"
    response.set_cookie(COOKIE, value, max_age=lifetime, path=PATH, secure=True, httponly=True, samesite="strict")
    response.delete_cookie(SIGNIN_COOKIE, path=PATH, secure=True, httponly=True, samesite="strict")


def end(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, secure=True, httponly=True, samesite="strict")


def signin_nonce(request: Request) -> str:
    """The sign-in form's anti-forgery value: the browser's sign-in cookie, or a new one."""
    nonce = request.cookies.get(SIGNIN_COOKIE) or ""
    return nonce if len(nonce) >= 16 else secrets.token_urlsafe(16)


def remember_signin_nonce(response: Response, nonce: str) -> None:
    response.set_cookie(SIGNIN_COOKIE, nonce, max_age=int(SIGNIN_LIFETIME.total_seconds()), path=PATH,
                        secure=True, httponly=True, samesite="strict")


def check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None and origin != f"{request.url.scheme}://{host}":
        raise Refused(403, f"Refused: this form was posted from another site ({origin}).")


async def check_post(request: Request, session: PortalSession | None) -> dict[str, str]:
    """The posted form, once the origin and the CSRF token (or, signing in, the sign-in value) are right."""
    check_origin(request)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    sent = form.get("csrf", "")
    expected = session.csrf if session is not None else request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Refused(403, "Refused: the form's anti-forgery token is missing or wrong. Reload the page and "
                           "try again.")
    return form
