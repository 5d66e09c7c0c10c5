"""Shared Key verification against what azure-batch 15.1.0 (and the legacy 14.x algorithm) really sign.

Requests are signed by the installed SDK itself, either by running its auth policy directly or by driving a
real ``BatchClient`` into a transport that captures the outgoing request. ``requests`` then prepares the
request the way the SDK's transport would put it on the wire (it adds ``Content-Length: 0`` to body-less
POST/DELETE after signing), and that wire form is what the verifier sees.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.auth.sharedkey import SharedKeyError, SignedRequest, sign, string_to_sign, verify
from shoal.core.timefmt import format_http_date, parse_http_date

ACCOUNT = "acct1"
KEY = base64.b64encode(bytes(range(64))).decode()
OTHER_KEY = base64.b64encode(b"\x01" * 64).decode()
ENDPOINT = "http://127.0.0.1:1/batch/acct1"
DATE = "Thu, 26 Nov 2026 05:12:44 GMT"
NOW = parse_http_date(DATE)


# --- helpers ---------------------------------------------------------------------------------------------


def to_wire(method: str, url: str, headers: dict[str, str], body: bytes | None) -> SignedRequest:
    """The request as a server receives it after the SDK's requests-based transport sent it."""
    prepared = requests.Session().prepare_request(requests.Request(method, url, headers=headers, data=body))
    path, _, query = (prepared.path_url or "").partition("?")
    return SignedRequest(method=method, raw_path=path, raw_query=query, headers=_text_headers(prepared))


def _text_headers(prepared: requests.PreparedRequest) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in prepared.headers.items()}


def policy_signed(method: str, url: str, *, headers: dict[str, str] | None = None, json_body: Any = None,
                  key: str = KEY, account: str = ACCOUNT) -> SignedRequest:
    """Sign with the SDK's own ``BatchSharedKeyAuthPolicy.on_request`` and return the wire form."""
    kwargs: dict[str, Any] = {"headers": dict(headers or {})}
    if json_body is not None:
        kwargs["json"] = json_body
    http_request = HttpRequest(method, url, **kwargs)
    if json_body is not None:
        http_request.headers["content-type"] = "application/json; odata=minimalmetadata"
    policy = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(account, key))
    policy.on_request(PipelineRequest(http_request, PipelineContext(None)))
    body = http_request.content if json_body is not None else None
    return to_wire(method, http_request.url, dict(http_request.headers), body)


class _Sent(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


class _CaptureTransport(HttpTransport):
    """Stops the pipeline at the wire and hands back the fully prepared, signed request."""

    def __enter__(self) -> _CaptureTransport:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> Any:
        raise _Sent(request)


def client_signed(call: Callable[[BatchClient], Any]) -> SignedRequest:
    """Drive a real azure-batch 15.1.0 client call and capture what it would send."""
    client = BatchClient(ENDPOINT, AzureNamedKeyCredential(ACCOUNT, KEY), transport=_CaptureTransport())
    with pytest.raises(_Sent) as caught:
        call(client)
    request = caught.value.request
    return to_wire(request.method, request.url, dict(request.headers), request.content or None)


def sdk_signature(req: SignedRequest) -> str:
    auth = {k.lower(): v for k, v in req.headers.items()}["authorization"]
    return auth.split(":", 1)[1]


def now_of(req: SignedRequest) -> datetime:
    return parse_http_date({k.lower(): v for k, v in req.headers.items()}["ocp-date"])


def with_headers(req: SignedRequest, **changes: str | None) -> SignedRequest:
    headers = {k: v for k, v in req.headers.items() if k.lower() not in {c.replace("_", "-").lower() for c in changes}}
    headers.update({k.replace("_", "-"): v for k, v in changes.items() if v is not None})
    return SignedRequest(req.method, req.raw_path, req.raw_query, headers)


def reject(req: SignedRequest, *, account: str = ACCOUNT, keys: tuple[str, ...] = (KEY,),
           now: datetime | None = None) -> SharedKeyError:
    with pytest.raises(SharedKeyError) as caught:
        verify(req, account, keys, now or now_of(req))
    return caught.value


# --- the strings-to-sign recorded from 15.1.0 ---------------------------------------------------------------

EMPTY12 = "\n" * 12  # method line ends, then 11 empty standard headers each followed by a newline


@pytest.mark.parametrize(("req", "expected"), [
    (SignedRequest("GET", "/supportedimages", "api-version=2025-06-01", {"ocp-date": DATE}),
     f"GET{EMPTY12}ocp-date:{DATE}\n/acct1/supportedimages\napi-version:2025-06-01"),
    (SignedRequest("POST", "/pools", "api-version=2025-06-01",
                   {"Content-Length": "714", "Content-Type": "application/json; odata=minimalmetadata",
                    "ocp-date": DATE}),
     f"POST\n\n\n714\n\napplication/json; odata=minimalmetadata\n\n\n\n\n\n\nocp-date:{DATE}\n/acct1/pools"
     "\napi-version:2025-06-01"),
    (SignedRequest("DELETE", "/pools/pool1", "api-version=2025-06-01", {"ocp-date": DATE}),
     f"DELETE\n\n\n0\n\n\n\n\n\n\n\n\nocp-date:{DATE}\n/acct1/pools/pool1\napi-version:2025-06-01"),
    (SignedRequest("GET", "/pools/pool1", "api-version=2025-06-01&timeOut=20", {"ocp-date": DATE}),
     f"GET{EMPTY12}ocp-date:{DATE}\n/acct1/pools/pool1\napi-version:2025-06-01\ntimeOut:20"),
    (SignedRequest("GET", "/pools/pool1/nodes",
                   "api-version=2025-06-01&$filter=state%20eq%20%27idle%27&$select=id,state", {"ocp-date": DATE}),
     f"GET{EMPTY12}ocp-date:{DATE}\n/acct1/pools/pool1/nodes\n$filter:state eq 'idle'\n$select:id,state"
     "\napi-version:2025-06-01"),
    (SignedRequest("HEAD", "/jobs/job%201/tasks/task%231/files/wd%2Fout%20put.txt", "api-version=2025-06-01",
                   {"ocp-date": DATE}),
     f"HEAD{EMPTY12}ocp-date:{DATE}\n/acct1/jobs/job%201/tasks/task%231/files/wd%2Fout%20put.txt"
     "\napi-version:2025-06-01"),
])
def test_reproduces_the_recorded_strings_to_sign(req: SignedRequest, expected: str) -> None:
    assert string_to_sign(req, ACCOUNT, lowercase_query_names=False) == expected
    verify(with_headers(req, Authorization=f"SharedKey {ACCOUNT}:{sign(expected, KEY)}"), ACCOUNT, [KEY], NOW)


def test_lowercase_form_differs_only_in_query_names() -> None:
    req = SignedRequest("GET", "/pools/pool1", "api-version=2025-06-01&timeOut=20", {"ocp-date": DATE})
    assert string_to_sign(req, ACCOUNT, lowercase_query_names=True).endswith("\napi-version:2025-06-01\ntimeout:20")


def test_sign_is_base64_hmac_sha256_of_utf8() -> None:
    # Independent oracle: the RFC 4231 test case 2 (key "Jefe").
    key = base64.b64encode(b"Jefe").decode()
    expected = base64.b64encode(bytes.fromhex(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")).decode()
    assert sign("what do ya want for nothing?", key) == expected
    assert sign("é", KEY) != sign("e", KEY)


# --- signed by the installed SDK's policy ----------------------------------------------------------------------

POLICY_CASES: dict[str, Callable[[], SignedRequest]] = {
    "get-timeOut": lambda: policy_signed("GET", f"{ENDPOINT}/pools/pool1?api-version=2025-06-01&timeOut=20"),
    "post-json": lambda: policy_signed(
        "POST", f"{ENDPOINT}/pools?api-version=2025-06-01",
        json_body={"id": "pool1", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 2,
                   "startTask": {"commandLine": "/bin/sh -c 'echo hé'"}}),
    "delete-no-body": lambda: policy_signed("DELETE", f"{ENDPOINT}/pools/pool1?api-version=2025-06-01"),
    "post-no-body": lambda: policy_signed("POST", f"{ENDPOINT}/jobs/j1/tasks/t1/terminate?api-version=2025-06-01"),
    "head-encoded-path": lambda: policy_signed(
        "HEAD", f"{ENDPOINT}/jobs/job%201/tasks/task%231/files/wd%2Fout%20put.txt?api-version=2025-06-01"),
    "if-match-quoted": lambda: policy_signed(
        "DELETE", f"{ENDPOINT}/jobs/j1/tasks/t1?api-version=2025-06-01", headers={"If-Match": '"0x8DC1234ABCD"'}),
    "if-none-match-and-dates": lambda: policy_signed(
        "GET", f"{ENDPOINT}/pools/pool1?api-version=2025-06-01",
        headers={"If-None-Match": '"0x8DC1234ABCD"', "If-Modified-Since": "Wed, 25 Nov 2026 01:02:03 GMT"}),
    "filter-select-expand": lambda: policy_signed(
        "GET", f"{ENDPOINT}/pools?api-version=2025-06-01&$filter=startswith(id%2C%27p%27)%20and%20state%20eq"
               "%20%27active%27&$select=id,state&$expand=stats&maxresults=10"),
    "ocp-range": lambda: policy_signed(
        "GET", f"{ENDPOINT}/jobs/j1/tasks/t1/files/stdout.txt?api-version=2025-06-01",
        headers={"ocp-range": "bytes=0-99"}),
    "no-prefix": lambda: policy_signed("GET", "http://127.0.0.1:1/pools?api-version=2025-06-01"),
}


@pytest.mark.parametrize("case", list(POLICY_CASES))
def test_policy_signed_requests_verify_and_match_byte_for_byte(case: str) -> None:
    req = POLICY_CASES[case]()
    verify(req, ACCOUNT, [KEY], now_of(req))
    # Not just "some candidate matched": the SDK-style canonical form is exactly what the SDK signed.
    assert sign(string_to_sign(req, ACCOUNT, lowercase_query_names=False), KEY) == sdk_signature(req)


def test_body_less_writes_carry_content_length_zero_on_the_wire_and_in_the_signature() -> None:
    req = POLICY_CASES["delete-no-body"]()
    assert {k.lower(): v for k, v in req.headers.items()}["content-length"] == "0"
    assert "\n\n\n0\n" in string_to_sign(req, ACCOUNT, lowercase_query_names=False)
    # A transport that omits the header altogether is also fine: the SDK signed 0 either way.
    verify(with_headers(req, Content_Length=None), ACCOUNT, [KEY], now_of(req))


def test_get_with_a_content_length_zero_added_after_signing_verifies() -> None:
    req = POLICY_CASES["get-timeOut"]()
    verify(with_headers(req, Content_Length="0"), ACCOUNT, [KEY], now_of(req))


def test_timeOut_only_matches_the_verbatim_query_names() -> None:
    req = POLICY_CASES["get-timeOut"]()
    lowered = string_to_sign(req, ACCOUNT, lowercase_query_names=True)
    assert sign(lowered, KEY) != sdk_signature(req)


def test_path_prefix_is_signed() -> None:
    req = POLICY_CASES["get-timeOut"]()
    assert "\n/acct1/batch/acct1/pools/pool1\n" in string_to_sign(req, ACCOUNT, lowercase_query_names=False)
    stripped = SignedRequest(req.method, "/pools/pool1", req.raw_query, req.headers)
    assert "not the same as any computed signature" in reject(stripped).detail


def test_if_match_is_signed_with_its_quotes() -> None:
    req = POLICY_CASES["if-match-quoted"]()
    assert '\n"0x8DC1234ABCD"\n' in string_to_sign(req, ACCOUNT, lowercase_query_names=False)
    reject_mac(with_headers(req, If_Match="0x8DC1234ABCD"))


def test_documented_lowercase_form_is_accepted_too() -> None:
    req = SignedRequest("GET", "/pools/pool1", "api-version=2025-06-01&timeOut=20", {"ocp-date": DATE})
    signature = sign(string_to_sign(req, ACCOUNT, lowercase_query_names=True), KEY)
    verify(with_headers(req, Authorization=f"SharedKey {ACCOUNT}:{signature}"), ACCOUNT, [KEY], NOW)


def test_either_account_key_verifies() -> None:
    req = policy_signed("GET", f"{ENDPOINT}/pools?api-version=2025-06-01", key=OTHER_KEY)
    verify(req, ACCOUNT, [KEY, OTHER_KEY], now_of(req))


# --- signed by a real BatchClient call -------------------------------------------------------------------------

CLIENT_CASES: dict[str, Callable[[BatchClient], Any]] = {
    "get_pool(service_timeout,select,expand)": lambda c: c.get_pool(
        "pool1", service_timeout=20, select=["id", "state"], expand=["stats"]),
    "get_pool(if_modified_since)": lambda c: c.get_pool(
        "pool1", if_modified_since=datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC)),
    "get_pool(etag IfModified)": lambda c: c.get_pool(
        "pool1", etag="0x8DC1234ABCD", match_condition=MatchConditions.IfModified),
    "list_nodes(filter,select)": lambda c: next(iter(c.list_nodes(
        "pool 1", filter="state eq 'idle' or (state eq 'running')", select=["id", "state"]))),
    "list_pools(filter datetime)": lambda c: next(iter(c.list_pools(
        filter="creationTime gt datetime'2024-01-01T00:00:00Z'", max_results=5))),
    "get_task_file_properties": lambda c: c.get_task_file_properties("job 1", "task#1", "wd/out put.txt"),
    "create_job": lambda c: c.create_job(batch_models.BatchJobCreateOptions(
        id="job1", pool_info=batch_models.BatchPoolInfo(pool_id="pool1"),
        all_tasks_complete_mode=batch_models.BatchAllTasksCompleteMode.TERMINATE_JOB)),
    "terminate_task(etag)": lambda c: c.terminate_task(
        "job1", "t1", etag="0x8DC1234ABCD", match_condition=MatchConditions.IfNotModified),
    "delete_task": lambda c: c.delete_task("job1", "t 1"),
    "begin_delete_pool": lambda c: c.begin_delete_pool("pool1"),
}


@pytest.mark.parametrize("case", list(CLIENT_CASES))
def test_batch_client_requests_verify(case: str) -> None:
    req = client_signed(CLIENT_CASES[case])
    verify(req, ACCOUNT, [KEY], now_of(req))
    assert sign(string_to_sign(req, ACCOUNT, lowercase_query_names=False), KEY) == sdk_signature(req)


def test_batch_client_sends_what_the_reference_describes() -> None:
    req = client_signed(CLIENT_CASES["get_pool(service_timeout,select,expand)"])
    assert req.raw_path == "/batch/acct1/pools/pool1"
    assert "timeOut=20" in req.raw_query.split("&")
    req = client_signed(CLIENT_CASES["terminate_task(etag)"])
    assert {k.lower(): v for k, v in req.headers.items()}["if-match"] == '"0x8DC1234ABCD"'
    req = client_signed(CLIENT_CASES["create_job"])
    headers = {k.lower(): v for k, v in req.headers.items()}
    assert headers["content-type"] == "application/json; odata=minimalmetadata"
    assert int(headers["content-length"]) > 0


# --- the legacy azure-batch 14.x algorithm (a requests auth hook) ------------------------------------------------


class _Legacy14Auth(requests.auth.AuthBase):
    """An independent re-statement of the 14.x algorithm: it runs after requests set Content-Length."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.setdefault("ocp-date", format_http_date(datetime.now(UTC)))
        lower = {k.lower(): v for k, v in _text_headers(r).items() if v}
        standard = ["content-encoding", "content-language", "content-length", "content-md5", "content-type",
                    "date", "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range"]
        text = f"{r.method or ''}\n" + "\n".join(lower.get(h, "") for h in standard) + "\n"
        text += "".join(f"{k}:{v}\n" for k, v in sorted(lower.items()) if "ocp-" in k)
        url = urlparse(r.url or "")
        text += f"/{ACCOUNT}{url.path}"
        query = parse_qs(url.query)
        text += "".join(f"\n{k}:{query[k][0]}" for k in sorted(query))
        r.headers["Authorization"] = f"SharedKey {ACCOUNT}:{sign(text, KEY)}"
        return r


LEGACY_HEADERS = {"Content-Type": "application/json; odata=minimalmetadata; charset=utf-8",
                  "accept-language": "en-US", "return-client-request-id": "false",
                  "client-request-id": "5a3c2b8e-0000-4000-8000-000000000001"}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/pools/pool1?api-version=2024-02-01.19.0&timeout=20", None),
    ("POST", "/pools?api-version=2024-02-01.19.0", {"id": "pool1", "vmSize": "standard_d2s_v3",
                                                     "resizeTimeout": "PT20M", "maxParallelTasks": -1}),
    ("DELETE", "/pools/pool1?api-version=2024-02-01.19.0&timeout=30", None),
    ("POST", "/pools/pool1/stopresize?api-version=2024-02-01.19.0", None),
])
def test_legacy_14x_requests_verify(method: str, path: str, body: dict[str, Any] | None) -> None:
    data = json.dumps(body).encode() if body is not None else None
    prepared = requests.Request(method, ENDPOINT + path, headers=LEGACY_HEADERS, data=data,
                                auth=_Legacy14Auth()).prepare()
    wire_path, _, query = (prepared.path_url or "").partition("?")
    req = SignedRequest(method, wire_path, query, _text_headers(prepared))
    verify(req, ACCOUNT, [KEY], now_of(req))


# --- query canonicalisation details -----------------------------------------------------------------------------


def test_query_values_are_decoded_plus_is_space_and_first_value_wins() -> None:
    req = SignedRequest("GET", "/pools", "b=2&a=x+y%2Bz&b=3&empty=&Z=1", {"ocp-date": DATE})
    text = string_to_sign(req, ACCOUNT, lowercase_query_names=False)
    assert text.endswith("/acct1/pools\nZ:1\na:x y+z\nb:2")  # case-sensitive sort: upper case first
    lowered = string_to_sign(req, ACCOUNT, lowercase_query_names=True)
    assert lowered.endswith("/acct1/pools\na:x y+z\nb:2,3\nz:1")


def test_encoded_query_names_are_decoded() -> None:
    req = SignedRequest("GET", "/pools", "%24select=id&api-version=1", {"ocp-date": DATE})
    assert string_to_sign(req, ACCOUNT, lowercase_query_names=False).endswith("\n$select:id\napi-version:1")


def test_every_ocp_header_is_signed_sorted_and_header_names_are_case_insensitive() -> None:
    req = SignedRequest("GET", "/p", "", {"OCP-Range": "bytes=0-1", "Ocp-Date": DATE, "x-ocp-extra": "1",
                                          "CONTENT-TYPE": "text/plain", "If-Match": ""})
    text = string_to_sign(req, ACCOUNT, lowercase_query_names=False)
    assert text == (f"GET\n\n\n\n\ntext/plain{EMPTY12[:7]}ocp-date:{DATE}\nocp-range:bytes=0-1\nx-ocp-extra:1\n"
                    "/acct1/p")


def test_date_header_is_signed_when_there_is_no_ocp_date() -> None:
    req = SignedRequest("GET", "/pools", "api-version=2025-06-01", {"Date": DATE})
    text = string_to_sign(req, ACCOUNT, lowercase_query_names=False)
    assert f"\n{DATE}\n" in text and "ocp-date" not in text
    verify(with_headers(req, Authorization=f"SharedKey {ACCOUNT}:{sign(text, KEY)}"), ACCOUNT, [KEY], NOW)


def test_account_name_case_is_tolerated_but_signed_as_sent() -> None:
    req = policy_signed("GET", f"{ENDPOINT}/pools?api-version=2025-06-01", account="ACCT1")
    verify(req, ACCOUNT, [KEY], now_of(req))


# --- rejections ---------------------------------------------------------------------------------------------


@pytest.fixture
def good() -> Iterator[SignedRequest]:
    yield POLICY_CASES["post-json"]()


def test_wrong_key(good: SignedRequest) -> None:
    err = reject(good, keys=(OTHER_KEY,))
    assert err.message.startswith("Server failed to authenticate the request. Make sure the value of "
                                  "Authorization header is formed correctly including the signature.")
    assert f"'{sdk_signature(good)}' is not the same as any computed signature" in err.detail
    assert "az batch account keys list" in err.detail
    assert str(err) == err.message


def test_no_keys_configured_rejects(good: SignedRequest) -> None:
    reject(good, keys=())


def test_wrong_account(good: SignedRequest) -> None:
    err = reject(good, account="acct2")
    assert "signed for account 'acct1'" in err.detail and "serves account 'acct2'" in err.detail


@pytest.mark.parametrize("offset", [timedelta(minutes=16), -timedelta(minutes=16)])
def test_stale_or_future_ocp_date(good: SignedRequest, offset: timedelta) -> None:
    err = reject(good, now=now_of(good) + offset)
    assert "16 minutes" in err.detail and "within 15 minutes" in err.detail and "clock" in err.detail


def test_fifteen_minutes_of_skew_is_allowed(good: SignedRequest) -> None:
    verify(good, ACCOUNT, [KEY], now_of(good) + timedelta(minutes=15))
    verify(good, ACCOUNT, [KEY], (now_of(good) - timedelta(minutes=15)).replace(tzinfo=None))


def test_custom_skew(good: SignedRequest) -> None:
    with pytest.raises(SharedKeyError, match="90 seconds"):
        verify(good, ACCOUNT, [KEY], now_of(good) + timedelta(seconds=90), max_skew=timedelta(seconds=60))


def reject_mac(req: SignedRequest) -> None:
    assert "is not the same as any computed signature" in reject(req).detail


def test_tampered_query() -> None:
    req = POLICY_CASES["filter-select-expand"]()
    reject_mac(SignedRequest(req.method, req.raw_path, req.raw_query.replace("active", "deleting"), req.headers))
    reject_mac(SignedRequest(req.method, req.raw_path, req.raw_query + "&timeout=1", req.headers))
    reject_mac(SignedRequest(req.method, req.raw_path, req.raw_query.replace("maxresults=10", ""), req.headers))


def test_tampered_path() -> None:
    req = POLICY_CASES["head-encoded-path"]()
    reject_mac(SignedRequest(req.method, req.raw_path.replace("%2F", "/"), req.raw_query, req.headers))
    reject_mac(SignedRequest(req.method, req.raw_path.replace("job%201", "job%202"), req.raw_query, req.headers))
    reject_mac(SignedRequest("GET", req.raw_path, req.raw_query, req.headers))


def test_tampered_content_type_or_length(good: SignedRequest) -> None:
    reject_mac(with_headers(good, Content_Type="application/json"))
    reject_mac(with_headers(good, Content_Length="1"))
    reject_mac(with_headers(good, Content_Length=None))


def test_tampered_ocp_date(good: SignedRequest) -> None:
    later = format_http_date(now_of(good) + timedelta(seconds=1))
    assert "not the same as any computed signature" in reject(with_headers(good, ocp_date=later)).detail


@pytest.mark.parametrize("value", [None, "", "Bearer abc", "SharedKey", "SharedKey acct1", "SharedKey acct1:",
                                   "SharedKey :sig", "SharedKeyLite acct1:sig"])
def test_missing_or_malformed_authorization(good: SignedRequest, value: str | None) -> None:
    err = reject(with_headers(good, Authorization=value))
    assert "Authorization header" in err.detail


def test_missing_and_invalid_dates(good: SignedRequest) -> None:
    err = reject(with_headers(good, ocp_date=None), now=NOW)
    assert "neither an ocp-date nor a Date header" in err.detail
    err = reject(with_headers(good, ocp_date="yesterday"), now=NOW)
    assert "'yesterday' is not an RFC 1123 date" in err.detail


@settings(max_examples=200)
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
       path=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"),
                    max_size=40).map(lambda p: "/" + p),
       query=st.text(max_size=60).filter(lambda q: "#" not in q),
       content_type=st.sampled_from(["", "application/json; odata=minimalmetadata", "text/plain; charset=é"]),
       lowercase=st.booleans())
def test_any_request_signed_with_either_form_verifies(method: str, path: str, query: str, content_type: str,
                                                      lowercase: bool) -> None:
    req = SignedRequest(method, path, query, {"ocp-date": DATE, "Content-Type": content_type})
    signature = sign(string_to_sign(req, ACCOUNT, lowercase_query_names=lowercase), KEY)
    verify(with_headers(req, Authorization=f"SharedKey {ACCOUNT}:{signature}"), ACCOUNT, [KEY], NOW)


@settings(max_examples=200)
@given(auth=st.text(max_size=80), date=st.text(max_size=40), length=st.text(max_size=5))
def test_garbage_headers_only_ever_raise_shared_key_error(auth: str, date: str, length: str) -> None:
    req = SignedRequest("POST", "/pools", "api-version=2025-06-01",
                        {"Authorization": auth, "ocp-date": date, "Content-Length": length})
    with pytest.raises(SharedKeyError):
        verify(req, ACCOUNT, [KEY], NOW)
