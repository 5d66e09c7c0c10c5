"""Hostile input to ``GET /downloads/{token}/{filename}`` (the disk file URL ``beginGetAccess`` hands out).

The token in the URL is the only credential, so the route must answer anything that is not a token it issued
with 404 ``BlobNotFound`` (or the generic 404 when the path does not even match the route): never a 500, never
bytes of another file. The file name only names the download (``Content-Disposition``), reduced to
``[A-Za-z0-9._-]``. Disk files are planted straight into the server's store (``<store>/exports/<token>.tar``,
where the host agent keeps them) except for the revoked-token case, which goes through grant and revoke.

Requests are sent raw (``http.client`` or a TLS socket): ``requests``/``urllib3`` would normalise ``..``
segments and refuse control characters before the server ever saw them.
"""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ShoalServer
from shoal.azure import Shoal

SECRET = b"this-must-never-be-served-" + uuid.uuid4().hex.encode()
PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes of known content
SAFE_DISPOSITION = re.compile(r'attachment; filename="[A-Za-z0-9._-]{1,255}"')


def _exports(server: ShoalServer) -> Path:
    path = server.state_dir / "store" / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def planted(server: ShoalServer) -> Iterator[str]:
    """A valid token whose disk file holds PAYLOAD, and a secret file elsewhere in the state directory."""
    token = secrets.token_urlsafe(32)
    target = _exports(server) / f"{token}.tar"
    target.write_bytes(PAYLOAD)
    outside = server.state_dir / "outside-secret.tar"
    outside.write_bytes(SECRET)
    yield token
    target.unlink(missing_ok=True)
    outside.unlink(missing_ok=True)


def _context(server: ShoalServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca)


def get(server: ShoalServer, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """GET ``path`` exactly as written (no normalisation, no re-quoting)."""
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=_context(server), timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def raw_get(server: ShoalServer, target: bytes) -> tuple[int, bytes]:
    """A request line with bytes http.client refuses to send (spaces, control characters, raw UTF-8)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as plain, \
            _context(server).wrap_socket(plain, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), data


def _no_leak(body: bytes) -> None:
    assert SECRET not in body
    assert PAYLOAD[:64] not in body
    assert b"root:" not in body  # /etc/passwd


def test_a_planted_disk_file_downloads_with_a_safe_disposition(server: ShoalServer, planted: str) -> None:
    status, headers, body = get(server, f"/downloads/{planted}/disk.tar")
    assert status == 200 and body == PAYLOAD
    assert headers["Content-Length"] == str(len(PAYLOAD))
    assert headers.get_all("Content-Disposition") == ['attachment; filename="disk.tar"']


@pytest.mark.parametrize("token", [
    "..", "%2e%2e", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "..%2f..%2foutside-secret",
    "%2e%2e%2f%2e%2e%2foutside-secret", "..%5C..%5Coutside-secret", "%00", "a" * 40 + "%00",
    "a" * 40 + "%00.tar", "a" * 129, "a" * 5000, "a" * 31, "short", "%C3%A9" * 40, "%F0%9F%92%A9" * 20,
    "%EF%BC%8E%EF%BC%8E",  # fullwidth dots
    "a" * 40 + ".tar", "a" * 40 + "%0d%0aX-Injected:%201", "%20" * 40, "~" * 40, ".." + "a" * 40,
    "%252e%252e",  # double-encoded
])
def test_hostile_tokens_are_not_found(server: ShoalServer, planted: str, token: str) -> None:
    for filename in ("disk.tar", "..%2F..%2Foutside-secret.tar"):
        status, headers, body = get(server, f"/downloads/{token}/{filename}")
        assert status == 404, (token, filename, status, body[:300])
        _no_leak(body)
        assert "X-Injected" not in headers


@pytest.mark.parametrize("path", [
    "/downloads/../outside-secret.tar/disk.tar", "/downloads/../../etc/passwd",
    "/downloads/%2e%2e/%2e%2e/outside-secret.tar", "/downloads/{t}/../../outside-secret.tar",
    "/downloads/{t}/%2e%2e%2f%2e%2e%2foutside-secret.tar", "/downloads/{t}%2F..%2F..%2Foutside-secret/disk.tar",
    "/downloads/{t}/", "/downloads/{t}", "/downloads//disk.tar", "/downloads/%2F{t}/disk.tar",
    "/downloads/{t}/disk.tar/extra", "/downloads/{t}%00/disk.tar",
])
def test_traversal_paths_are_not_found(server: ShoalServer, planted: str, path: str) -> None:
    status, _, body = get(server, path.replace("{t}", planted))
    assert status == 404, (path, status, body[:300])
    _no_leak(body)


@pytest.mark.parametrize("target", [
    b"/downloads/../../etc/passwd", b"/downloads/\x00/disk.tar", b"/downloads/tok en/disk.tar",
    "/downloads/\u00e9\u00e9\u00e9/disk.tar".encode(), b"/downloads/{t}\x00/disk.tar",
    b"/downloads/{t}/../../../outside-secret.tar", b"/downloads/{t}\x7f/disk.tar",
])
def test_raw_request_lines_never_break_the_server(server: ShoalServer, planted: str, target: bytes) -> None:
    status, data = raw_get(server, target.replace(b"{t}", planted.encode()))
    assert status in (400, 404), (target, data[:300])
    _no_leak(data.split(b"\r\n\r\n", 1)[-1])


@pytest.mark.parametrize("name", ["\u00e9t\u00e9.tar".encode(), b"a\x7f\x01b.tar", b'a"b;c=d.tar'])
def test_raw_file_names_give_a_safe_disposition(server: ShoalServer, planted: str, name: bytes) -> None:
    status, data = raw_get(server, f"/downloads/{planted}/".encode() + name)
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower().split("\r\n")
    dispositions = [line for line in head if line.startswith("content-disposition:")]
    if status == 200:
        assert len(dispositions) == 1
        assert SAFE_DISPOSITION.fullmatch(dispositions[0].split(":", 1)[1].strip()[:-1] + '"'), dispositions
    else:
        assert status == 400 and not dispositions, data[:300]


def test_a_well_formed_token_never_issued_is_not_found(server: ShoalServer, planted: str) -> None:
    for token in (secrets.token_urlsafe(32), "A" * 32, "-" * 128, "_" * 64):
        status, headers, body = get(server, f"/downloads/{token}/disk.tar")
        assert status == 404 and headers.get("x-ms-error-code", "BlobNotFound") == "BlobNotFound"
        assert b"BlobNotFound" in body
        _no_leak(body)


def test_a_symlink_planted_as_an_export_is_not_followed_outside(server: ShoalServer, planted: str) -> None:
    """``<store>/exports/<token>.tar`` as a link to a file elsewhere (or to a directory, or dangling)."""
    exports = _exports(server)
    cases = {secrets.token_urlsafe(32): server.state_dir / "outside-secret.tar",
             secrets.token_urlsafe(32): Path("/etc/passwd"),
             secrets.token_urlsafe(32): server.state_dir,
             secrets.token_urlsafe(32): server.state_dir / "missing"}
    try:
        for token, target in cases.items():
            (exports / f"{token}.tar").symlink_to(target)
            status, _, body = get(server, f"/downloads/{token}/disk.tar")
            assert status == 404, (target, status, body[:300])
            _no_leak(body)
    finally:
        for token in cases:
            (exports / f"{token}.tar").unlink(missing_ok=True)


@pytest.mark.parametrize("filename", [
    'a"b.tar', "a%22b.tar", "a%0d%0aSet-Cookie:%20x=1.tar", "a%0aX-Injected:%201", "a;b=c.tar",
    "a%3B%20filename%3D%22evil.exe%22", "%C3%A9t%C3%A9.tar", "%F0%9F%92%A9", "x" * 300, "y" * 8000,
    "%00.tar", "..", ".", "%2e%2e", "a%5Cb.tar", "%E2%80%AE.tar",  # right-to-left override
])
def test_file_names_give_one_safe_disposition_header(server: ShoalServer, planted: str, filename: str) -> None:
    status, headers, body = get(server, f"/downloads/{planted}/{filename}")
    assert status == 200 and body == PAYLOAD, (filename, status, body[:300])
    values = headers.get_all("Content-Disposition") or []
    assert len(values) == 1 and SAFE_DISPOSITION.fullmatch(values[0]), values
    name = values[0][len('attachment; filename="'):-1]
    assert name.strip(".") != "", "a name of dots only is not a file name"
    assert "Set-Cookie" not in headers and "X-Injected" not in headers


# --- ranges (Azure Blob: 206 with Content-Range, 416 InvalidRange beyond the end) -----------------------------
@pytest.mark.parametrize("header", ["Range", "x-ms-range"])
def test_ranges_inside_the_file_are_partial_content(server: ShoalServer, planted: str, header: str) -> None:
    size = len(PAYLOAD)
    for spec, start, end in (("bytes=0-0", 0, 0), ("bytes=10-99", 10, 99), (f"bytes={size - 5}-", size - 5, size - 1),
                             ("bytes=-7", size - 7, size - 1), (f"bytes=100-{size * 10}", 100, size - 1),
                             (f"bytes=0-{size - 1}", 0, size - 1)):
        status, headers, body = get(server, f"/downloads/{planted}/disk.tar", {header: spec})
        assert status == 206, (spec, status, body[:200])
        assert body == PAYLOAD[start:end + 1], spec
        assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert headers["Content-Length"] == str(end - start + 1)


@pytest.mark.parametrize("header", ["Range", "x-ms-range"])
def test_ranges_beyond_the_end_are_416(server: ShoalServer, planted: str, header: str) -> None:
    size = len(PAYLOAD)
    for spec in (f"bytes={size}-", f"bytes={size}-{size + 10}", f"bytes={size * 100}-{size * 200}",
                 "bytes=99999999999999999999999-", "bytes=-0"):
        status, headers, body = get(server, f"/downloads/{planted}/disk.tar", {header: spec})
        assert status == 416, (spec, status, body[:200])
        assert headers["x-ms-error-code"] == "InvalidRange" and b"InvalidRange" in body
        assert headers["Content-Range"] == f"bytes */{size}"
        assert PAYLOAD[:64] not in body


def test_malformed_or_multiple_ranges_are_ignored(server: ShoalServer, planted: str) -> None:
    """As HTTP says (RFC 9110 14.2) and Azure Blob does: a Range it cannot use is ignored, the whole file comes."""
    for spec in ("bytes=abc", "bytes=5-2", "items=0-10", "bytes=0-1,5-6", "bytes=", "bytes=--1", "\u00e9"):
        status, headers, body = get(server, f"/downloads/{planted}/disk.tar",
                                    {"Range": spec.encode("utf-8").decode("latin-1")})
        assert status == 200 and body == PAYLOAD, (spec, status)
        assert "Content-Range" not in headers


def test_a_revoked_token_is_not_found(shoal: Shoal, server: ShoalServer) -> None:
    from azure.mgmt.compute.models import CreationData, Disk, GrantAccessData
    from azure.mgmt.resource.resources.models import ResourceGroup

    group = f"downloads-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location="westus"))
    compute = shoal.compute_client()
    compute.disks.begin_create_or_update(group, "blank", Disk(
        location="westus", disk_size_gb=1, creation_data=CreationData(create_option="Empty"))).result()
    access = compute.disks.begin_grant_access(group, "blank", GrantAccessData(access="Read",
                                                                              duration_in_seconds=600)).result()
    path = access.access_sas[len(shoal.authority):]
    status, _, body = get(server, path)
    assert status == 200 and body[:512].strip(b"\0") != b""  # an empty disk is still a tar file
    compute.disks.begin_revoke_access(group, "blank").result()
    for variant in (path, path + "?x=1", path.replace("/disk.tar", "/other.tar")):
        status, _, body = get(server, variant)
        assert status == 404 and b"BlobNotFound" in body, (variant, status)
    status, _, _ = get(server, path, {"Range": "bytes=0-10"})
    assert status == 404
    shoal.resource_client().resource_groups.begin_delete(group).result()
