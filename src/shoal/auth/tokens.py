"""Entra-style access tokens: RS256 JWTs signed with the server's signing key file, published as JWKS.

Tokens carry ``iss`` (``{authority}/{tenant}/v2.0``), ``aud`` (the resource the scope named, with a
trailing slash), ``tid``, ``oid``/``sub``, ``appid``/``azp``, ``iat``/``nbf``/``exp``. Verification
checks signature, issuer, audience, the types of the time claims, ``nbf`` (with Azure's five minutes of
clock skew) and expiry against the injectable clock, and raises the ARM error a
client would get from Azure.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shoal.core import errors
from shoal.core.clock import Clock

TOKEN_LIFETIME = timedelta(hours=1)
CLOCK_SKEW = timedelta(minutes=5)  # what Azure allows between the issuer's clock and its own for 'nbf'
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z: later times are not dates any clock can hold

# Resources a token can be requested for, by the audience the token then carries. ARM accepts both of
# its historical resource ids (az uses management.core.windows.net, the SDKs management.azure.com).
ARM_AUDIENCES = ("https://management.azure.com/", "https://management.core.windows.net/")
BATCH_AUDIENCES = ("https://batch.core.windows.net/",)
# Key Vault's resource: Shoal serves no Key Vault, but clients that always take a token for it before they start
# (Packer's azure-arm builder does, for the Windows certificate it never makes for Linux) are given one; no plane
# of Shoal accepts a token with this audience.
VAULT_AUDIENCES = ("https://vault.azure.net/",)


@dataclass(frozen=True)
class Claims:
    tenant_id: str
    object_id: str
    app_id: str
    audience: str
    expires_at: datetime


@dataclass(frozen=True)
class SigningKeyPair:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKeyPair:
        return cls(uuid.uuid4().hex, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def from_pem(cls, kid: str, pem: str) -> SigningKeyPair:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return cls(kid, key)

    def private_pem(self) -> str:
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()

    def jwk(self) -> dict[str, object]:
        numbers = self.private_key.public_key().public_numbers()

        def b64(n: int) -> str:
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": b64(numbers.n),
                "e": b64(numbers.e)}


def audience_for_scope(scope: str, known: tuple[str, ...]) -> str | None:
    """``https://batch.core.windows.net//.default`` -> ``https://batch.core.windows.net/``."""
    for item in scope.split():
        if not item.endswith("/.default"):
            continue
        resource = item[: -len(".default")].rstrip("/") + "/"
        for aud in known:
            if resource.lower() == aud.lower():
                return aud
    return None


def _numeric_date(claims: dict[str, Any], name: str, challenge: dict[str, str]) -> float | None:
    """A JWT NumericDate claim (seconds since the epoch, an integer or a finite number), or None if absent."""
    value = claims.get(name)
    if value is None and name != "exp":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_NUMERIC_DATE:
        raise errors.InvalidAuthenticationToken(
            f"The access token is invalid: its '{name}' claim is not a time (seconds since 1970 as a number). "
            "Request a new token from this Shoal's token endpoint.", headers=challenge)
    return float(value)


def _fmt(dt: datetime) -> str:
    return f"{dt.month}/{dt.day}/{dt.year} {dt.strftime('%I:%M:%S %p').lstrip('0')}"


VERIFIED_CACHE = 4096  # tokens whose signature was checked, remembered (a client sends one token for an hour)


class TokenService:
    def __init__(self, authority: str, keys: list[SigningKeyPair], clock: Clock) -> None:
        self.authority = authority.rstrip("/")
        self.keys = keys
        self.clock = clock
        # token -> (its key id, its claims): the RS256 check is the costliest part of a request that carries
        # a token, and a client sends the same token for its hour. Only the signature and format are
        # remembered: every time and audience check below runs for each request, and a token whose key is no
        # longer one of this service's is checked (and refused) again.
        self._verified: dict[str, tuple[str, dict[str, Any]]] = {}

    def _decode(self, token: str) -> dict[str, Any]:
        known = self._verified.get(token)
        if known is not None and any(k.kid == known[0] for k in self.keys):
            return dict(known[1])
        header = jwt.get_unverified_header(token)
        key = next((k for k in self.keys if k.kid == header.get("kid")), None)
        if key is None:
            raise jwt.InvalidSignatureError("unknown key id")
        claims: dict[str, Any] = jwt.decode(
            token, key.private_key.public_key(), algorithms=["RS256"],
            options={"verify_exp": False, "verify_aud": False, "verify_iss": False, "verify_nbf": False,
                     "require": ["exp", "aud", "iss", "tid", "oid"]})
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()  # simpler than an LRU, and a full cache is rare (tokens last an hour)
        self._verified[token] = (key.kid, dict(claims))
        return claims

    def issuer(self, tenant_id: str) -> str:
        return f"{self.authority}/{tenant_id}/v2.0"

    def jwks(self) -> dict[str, object]:
        return {"keys": [k.jwk() for k in self.keys]}

    def issue(self, *, tenant_id: str, object_id: str, app_id: str, audience: str) -> tuple[str, int]:
        now = self.clock.now()
        exp = now + TOKEN_LIFETIME
        claims = {
            "aud": audience, "iss": self.issuer(tenant_id), "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()) - 300, "exp": int(exp.timestamp()), "tid": tenant_id,
            "oid": object_id, "sub": object_id, "appid": app_id, "azp": app_id, "appidacr": "1",
            "idtyp": "app", "ver": "2.0", "uti": uuid.uuid4().hex,
        }
        key = self.keys[0]
        token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
        return token, int(TOKEN_LIFETIME.total_seconds()) - 1

    def verify(self, authorization: str | None, audiences: tuple[str, ...], tenant_id: str) -> Claims:
        challenge = {"WWW-Authenticate": f'Bearer authorization_uri="{self.authority}/{tenant_id}", '
                                         'error="invalid_token", error_description="The access token is invalid."'}
        if not authorization:
            # Azure's own challenge without a token, which clients read the tenant of a subscription from.
            missing = {"WWW-Authenticate": f'Bearer authorization_uri="{self.authority}/{tenant_id}", '
                                           'error="invalid_token", error_description="The authentication failed '
                                           "because of missing 'Authorization' header.\""}
            raise errors.AuthenticationFailed("Authentication failed. The 'Authorization' header is missing.",
                                              headers=missing)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.AuthenticationFailed(
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                headers=challenge)
        token = token.strip()
        try:
            claims = self._decode(token)
        except jwt.PyJWTError as exc:
            raise errors.InvalidAuthenticationToken(
                "The access token is invalid: its signature or format could not be verified. "
                "Request a new token from this Shoal's token endpoint.", headers=challenge) from exc
        now = self.clock.now()
        times = {name: _numeric_date(claims, name, challenge) for name in ("exp", "nbf", "iat")}
        not_before = times["nbf"]
        if not_before is not None and not_before > now.timestamp() + CLOCK_SKEW.total_seconds():
            starts = datetime.fromtimestamp(not_before, tz=now.tzinfo)
            raise errors.InvalidAuthenticationToken(
                f"The access token is not yet valid: its 'nbf' (not before) UTC time '{_fmt(starts)}' is later "
                f"than current UTC time '{_fmt(now)}'. Check the clock of the machine that issued it.",
                headers=challenge)
        expires = datetime.fromtimestamp(times["exp"] or 0, tz=now.tzinfo)
        if expires <= now:
            raise errors.ExpiredAuthenticationToken(
                f"The access token expiry UTC time '{_fmt(expires)}' is earlier than current UTC time "
                f"'{_fmt(now)}'.", headers=challenge)
        aud = str(claims["aud"])
        if aud.rstrip("/").lower() + "/" not in {a.lower() for a in audiences}:
            allowed = ",".join(f"'{a}'" for a in audiences)
            raise errors.InvalidAuthenticationTokenAudience(
                f"The access token has been obtained for wrong audience or resource '{aud}'. It should exactly "
                f"match with one of the allowed audiences {allowed}.", headers=challenge)
        if claims["iss"] != self.issuer(str(claims["tid"])) or claims["tid"] != tenant_id:
            raise errors.InvalidAuthenticationTokenTenant(
                f"The access token is from the wrong issuer '{claims['iss']}'. It must match the tenant "
                f"'{self.issuer(tenant_id)}' associated with this subscription. Please use the authority "
                f"(URL) '{self.authority}/{tenant_id}' to get the token.", headers=challenge)
        return Claims(str(claims["tid"]), str(claims["oid"]), str(claims.get("appid", "")), aud, expires)
