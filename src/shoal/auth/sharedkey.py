"""Server-side verification of Batch Shared Key (``Authorization: SharedKey {account}:{signature}``).

The canonical string is built the way the official SDKs actually sign (azure-batch 15.1.0
``BatchSharedKeyAuthPolicy`` and the legacy 14.x ``SharedKeyAuth`` use the same algorithm), not only the way
the REST documentation describes it, because the two differ:

* query parameter *names keep their case* (15.1.0 sends ``timeOut=20``) while the docs lower-case them, so
  both forms are tried;
* the path is the raw, still percent-encoded request path including any endpoint prefix (``%2F`` inside a
  file path stays ``%2F``);
* query values are url-decoded with :func:`urllib.parse.parse_qsl` semantics (``+`` is a space, empty values
  are dropped, only the first value of a repeated name counts);
* ``Content-Length`` is signed literally; the SDK signs ``0`` for a body-less non-GET request, but the
  transport may add or omit ``Content-Length: 0`` after signing, so a zero or missing length is tried both
  as ``0`` and as empty.

This module is pure: no HTTP framework, no I/O, no clock (the caller passes ``now``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlparse

from shoal.core.timefmt import TimeFormatError, format_http_date, parse_http_date

# The standard headers whose values are signed, in signing order (same list as the SDKs).
SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)

_BODYLESS_METHODS = ("GET", "HEAD")


class SharedKeyError(Exception):
    """The request is not authenticated by Shared Key; the caller answers 403 ``AuthenticationFailed``.

    ``summary`` is the service's fixed wording (the error message); ``detail`` says what exactly is wrong and
    what to do, and belongs in the error's ``AuthenticationErrorDetail`` value.
    """

    summary = ("Server failed to authenticate the request. Make sure the value of Authorization header is "
               "formed correctly including the signature.")

    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.message = f"{self.summary} {detail}"
        super().__init__(self.message)


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs from an incoming request, exactly as it arrived on the wire.

    ``raw_path`` is still percent-encoded and includes any prefix the endpoint has (``/batch/acct1/pools``);
    ``raw_query`` is the text after ``?`` (without it). Header names may have any case.
    """

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]


def sign(string: str, key_b64: str) -> str:
    """Base64 HMAC-SHA256 of ``string`` (UTF-8) under the base64-encoded account key.

    Raises :class:`ValueError` if the key is not base64 (a configuration error, not a client error).
    """
    key = base64.b64decode(key_b64.encode("utf-8"))
    digest = hmac.new(key, string.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def string_to_sign(
    req: SignedRequest,
    account: str,
    *,
    lowercase_query_names: bool,
    content_length: str | None = None,
) -> str:
    """The canonical string for ``req`` signed as ``account``.

    With ``lowercase_query_names=False`` this is byte-for-byte what azure-batch 15.1.0 signs for the same
    request; ``True`` gives the documented form. ``content_length`` overrides the signed ``Content-Length``
    (the verifier uses it to try the other spelling of a zero length); by default the SDK's rule applies.
    """
    headers = _normalise(req.headers)
    method = req.method.upper()
    if content_length is None:
        content_length = _sdk_content_length(method, headers)
    values = [content_length if name == "content-length" else headers.get(name, "") for name in SIGNED_HEADERS]
    parts = [method, "\n", "\n".join(values), "\n"]
    # Every header whose name *contains* "ocp-" (in practice ocp-date and ocp-range), sorted by name then value.
    for name, value in sorted((n, v) for n, v in headers.items() if "ocp-" in n):
        parts.append(f"{name}:{value}\n")
    parts.append(f"/{account}{_signed_path(req.raw_path)}")
    for name, value in _canonical_query(req.raw_query, lowercase_query_names):
        parts.append(f"\n{name}:{value}")
    return "".join(parts)


def verify(
    req: SignedRequest,
    account: str,
    keys: Sequence[str],
    now: datetime,
    *,
    max_skew: timedelta = timedelta(minutes=15),
) -> None:
    """Return if ``req`` carries a valid Shared Key signature for ``account`` by any of ``keys``.

    Raises :class:`SharedKeyError` otherwise. ``now`` is the server's current time (naive means UTC).
    """
    headers = _normalise(req.headers)
    claimed_account, signature = _parse_authorization(headers.get("authorization"))
    # Batch account names are lower-case DNS labels; a client may spell them differently, but it signs with
    # its own spelling, so that is what goes into the canonical string.
    if claimed_account.lower() != account.lower():
        raise SharedKeyError(
            f"The Authorization header is signed for account '{claimed_account}', but this endpoint serves "
            f"account '{account}'. Use the account name from the Batch account URL and that account's key.")
    _check_date(headers, now, max_skew)

    candidates: list[str] = []
    for lowercase in (False, True):
        for length in _content_length_candidates(req.method.upper(), headers):
            text = string_to_sign(req, claimed_account, lowercase_query_names=lowercase, content_length=length)
            if text not in candidates:
                candidates.append(text)
    provided = signature.encode("utf-8", "replace")
    # Compare against every candidate and key without short-circuiting, each in constant time.
    results = [hmac.compare_digest(sign(text, key).encode("ascii"), provided) for key in keys for text in candidates]
    if not any(results):
        raise SharedKeyError(
            f"The MAC signature found in the HTTP request '{signature}' is not the same as any computed "
            f"signature. Server used following string to sign: {candidates[0]!r}. Check the account key "
            "(az batch account keys list) and that the request was not modified after signing.")


def _normalise(headers: Mapping[str, str]) -> dict[str, str]:
    # The SDK skips headers with empty values, so an empty header is the same as a missing one.
    return {name.lower(): value for name, value in headers.items() if value}


def _sdk_content_length(method: str, headers: Mapping[str, str]) -> str:
    """The SDK signs the header it set (from the body) or, for non-GET/HEAD without one, ``0``."""
    if "content-length" in headers:
        return headers["content-length"]
    return "" if method in _BODYLESS_METHODS else "0"


def _content_length_candidates(method: str, headers: Mapping[str, str]) -> list[str]:
    """The SDK's value first; a zero or missing length also as the other spelling of "nothing".

    The transport adds ``Content-Length: 0`` to a body-less POST/DELETE after the policy signed ``0``, and some
    clients send ``Content-Length: 0`` on GET although the SDK signed it empty.
    """
    first = _sdk_content_length(method, headers)
    if first in ("", "0"):
        return [first, "0" if first == "" else ""]
    return [first]


def _signed_path(raw_path: str) -> str:
    # The SDK signs ``urlparse(url).path``, which drops ``;params`` from the last segment; do the same.
    return urlparse("http://host" + raw_path).path


def _canonical_query(raw_query: str, lowercase_names: bool) -> list[tuple[str, str]]:
    """Sorted ``(name, value)`` pairs, url-decoded, blank values dropped.

    As sent by the SDK: names as-is, sorted case-sensitively, first value of a repeated name only.
    Documented form: names lower-cased; repeated names get their values sorted and comma-joined.
    """
    pairs = parse_qsl(raw_query, keep_blank_values=False)
    if not lowercase_names:
        first: dict[str, str] = {}
        for name, value in pairs:
            first.setdefault(name, value)
        return sorted(first.items())
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return [(name, ",".join(sorted(values))) for name, values in sorted(grouped.items())]


def _parse_authorization(value: str | None) -> tuple[str, str]:
    if value is None:
        raise SharedKeyError(
            "The request has no Authorization header. Sign it with an account key "
            "(Authorization: SharedKey {account}:{signature}) or send a Microsoft Entra ID bearer token.")
    scheme, _, credentials = value.strip().partition(" ")
    account, _, signature = credentials.strip().partition(":")
    if scheme.lower() != "sharedkey" or not account or not signature:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise SharedKeyError(
            f"The Authorization header '{shown}' is not of the form 'SharedKey {{account}}:{{signature}}'. "
            "Sign the request with the account name and a base64 HMAC-SHA256 signature.")
    return account, signature.strip()


def _check_date(headers: Mapping[str, str], now: datetime, max_skew: timedelta) -> None:
    """``ocp-date`` (or, failing that, ``Date``) must be an RFC 1123 time within ``max_skew`` of ``now``."""
    name = "ocp-date" if "ocp-date" in headers else "date" if "date" in headers else None
    if name is None:
        raise SharedKeyError(
            "The request has neither an ocp-date nor a Date header. Send ocp-date with the current UTC time in "
            "RFC 1123 format (for example 'Thu, 26 Nov 2026 05:12:44 GMT') and include it in the signature.")
    text = headers[name]
    try:
        sent = parse_http_date(text)
    except TimeFormatError:
        raise SharedKeyError(
            f"The {name} header '{text}' is not an RFC 1123 date. Send the current UTC time in the form "
            "'Thu, 26 Nov 2026 05:12:44 GMT'.") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    skew = sent - now
    if abs(skew) > max_skew:
        direction = "behind" if skew < timedelta(0) else "ahead of"
        raise SharedKeyError(
            f"The {name} header '{text}' is {_describe(abs(skew))} {direction} the server time "
            f"'{format_http_date(now)}'; requests must be signed within {_describe(max_skew)} of it. Check the "
            "client's clock (NTP) and sign each request just before sending it.")


def _describe(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"
