"""Shoal's transfer worker: resource-file downloads and output-file uploads, run INSIDE a node.

The host agent runs this file with the node's own ``python3`` (standard library only, Python >= 3.7), in the
node's namespaces, as the task's user, with the task's working directory as its current directory: it reads
and writes what the task could, resolves ``file://`` URLs in the node's own file system, and reaches only what
the node's network reaches. It is what Azure's node agent does for a task.

The job comes as JSON on stdin, the result goes as one JSON line on stdout::

    {"op": "download", "resource": {...resourceFiles entry...}, "ca": "PEM"|null, "allow": ["host:port", ...]}
    {"op": "upload", "pattern": "/abs/pattern", "destination": {...}, "ca": ..., "allow": [...]}
    -> {"ok": true, "files": [...], "log": [...]} | {"ok": false, "error": {"code", "message", "category",
                                                                           "details": [{"name", "value"}]}}

Connections go to an address checked first and then pinned (no second lookup an attacker's DNS could answer
differently): loopback, link-local (cloud metadata services), multicast and unspecified addresses are refused,
except the ``host:port`` pairs the host allows (Shoal's own endpoint at the node's gateway, for its signed
container and disk URLs).
"""

from __future__ import annotations

import glob
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET
from typing import IO, Any

TIMEOUT = 60
MAX_REDIRECTS = 5
WILDCARD = re.compile(r"[*?\[]")


class Failure(Exception):
    def __init__(self, code: str, message: str, category: str = "usererror",
                 details: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.info = {"code": code, "message": message, "category": category,
                     "details": [{"name": k, "value": v} for k, v in details]}


def public(url: str) -> str:
    """A URL without its query (signatures stay out of messages)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Client:
    def __init__(self, ca: str | None, allow: list[str] | None) -> None:
        self.ctx = ssl.create_default_context()
        if ca:
            self.ctx.load_verify_locations(cadata=ca)
        self.allow = set(allow or ())

    def _address(self, host: str, port: int) -> tuple[int, Any]:
        allowed = f"{host}:{port}" in self.allow
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from None
        for family, _, _, _, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if allowed or not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified
                               or ip.is_reserved):
                return family, sockaddr
        raise PermissionError("{} resolves to {}, an address transfers may not reach (loopback, link-local, "
                              "metadata)".format(host, infos[0][4][0] if infos else "nothing"))

    def request(self, method: str, url: str, body: IO[bytes] | None = None,
                headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("not an http(s) URL")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            family, sockaddr = self._address(parts.hostname, port)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT)
            conn: http.client.HTTPConnection
            try:
                sock.connect(sockaddr)
                if parts.scheme == "https":
                    sock = self.ctx.wrap_socket(sock, server_hostname=parts.hostname)
                    conn = http.client.HTTPSConnection(parts.hostname, port, timeout=TIMEOUT, context=self.ctx)
                else:
                    conn = http.client.HTTPConnection(parts.hostname, port, timeout=TIMEOUT)
            except BaseException:
                sock.close()
                raise
            conn.sock = sock  # connected to the address checked above
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            if body is not None:
                body.seek(0)  # a redirected PUT sends its body again
            conn.request(method, target, body=body, headers=headers or {})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                response.read()
                conn.close()
                if response.status == 303:
                    method, body = "GET", None
                continue
            return response
        raise OSError("too many redirects")


def inside(rel: str) -> str:
    """A path below the working directory (no absolute path, no ..), its parents made."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or rel.startswith("/"):
        raise Failure("BlobDownloadMiscError", f"The file path '{rel}' must stay inside the task's working "
                      "directory.", details=(("FilePath", rel),))
    if len(parts) > 1:
        os.makedirs(os.path.join(*parts[:-1]), exist_ok=True)
    return os.path.join(*parts)


def fetch(client: Client, url: str, target: str, name: str) -> None:
    """Download one URL (file:// in the node, or http(s)) to ``target`` (written whole or not at all)."""
    parts = urllib.parse.urlsplit(url)
    details = (("FilePath", name),)
    fd, tmp = tempfile.mkstemp(prefix=".shoal-download-", dir=os.path.dirname(target) or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            if parts.scheme == "file":
                try:
                    with open(urllib.parse.unquote(parts.path), "rb") as source:
                        shutil.copyfileobj(source, out, 1 << 20)
                except FileNotFoundError:
                    raise Failure("BlobNotFound", f"The resource file '{url}' does not exist on the node.",
                                  details=details) from None
                except (PermissionError, IsADirectoryError) as exc:
                    raise Failure("BlobAccessDenied", f"The task's user cannot read '{url}': {exc}.",
                                  details=details) from None
            else:
                try:
                    response = client.request("GET", url)
                except PermissionError as exc:
                    raise Failure("BlobAccessDenied", f"Downloading '{public(url)}' is refused: {exc}.",
                                  details=details) from None
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    raise Failure("BlobDownloadMiscError", f"Downloading '{public(url)}' failed: {exc}",
                                  "servererror", details) from None
                if response.status in (401, 403):
                    raise Failure("BlobAccessDenied", f"Access to '{public(url)}' was denied "
                                  f"(HTTP {response.status}).", details=details)
                if response.status == 404:
                    raise Failure("BlobNotFound", f"'{public(url)}' was not found (HTTP 404).", details=details)
                if response.status >= 400:
                    raise Failure("BlobDownloadMiscError", f"Downloading '{public(url)}' failed with HTTP "
                                  f"{response.status}.", "servererror", details)
                shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def blob_url(container_url: str, name: str) -> str:
    base, _, query = container_url.partition("?")
    url = "{}/{}".format(base.rstrip("/"), urllib.parse.quote(name))
    return f"{url}?{query}" if query else url


def node_dir(url: str, code: str, message: str) -> str | None:
    """The directory of the node a file:// container URL names (None for other URLs); ``code`` when absent."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "file":
        return None
    root = urllib.parse.unquote(parts.path)
    if not os.path.isdir(root):
        raise Failure(code, message)
    return root


def list_container(client: Client, url: str, prefix: str) -> list[str]:
    root = node_dir(url, "ResourceContainerAccessDenied", f"The container '{url}' does not exist on the node, or "
                    "the task's user cannot read it.")
    if root is not None:
        names = []
        for dirpath, _, files in os.walk(root):
            for f in files:
                rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                if rel.startswith(prefix) and os.path.isfile(os.path.join(dirpath, f)):
                    names.append(rel)
        return sorted(names)
    names, marker = [], ""
    while True:
        query = f"restype=container&comp=list&prefix={urllib.parse.quote(prefix)}"
        if marker:
            query += f"&marker={urllib.parse.quote(marker)}"
        listing = url + ("&" if "?" in url else "?") + query
        try:
            response = client.request("GET", listing)
            body = response.read()
        except PermissionError as exc:
            raise Failure("ResourceContainerAccessDenied", f"Listing '{public(url)}' is refused: {exc}.") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise Failure("ResourceContainerListMiscError", f"Listing '{public(url)}' failed: {exc}",
                          "servererror") from None
        if response.status >= 400:
            raise Failure("ResourceContainerAccessDenied", f"Listing '{public(url)}' failed with HTTP "
                          f"{response.status}.")
        try:
            tree = ET.fromstring(body)
        except ET.ParseError as exc:
            raise Failure("ResourceContainerListMiscError", f"Listing '{public(url)}' returned no container "
                          f"listing: {exc}", "servererror") from None
        names += [el.text or "" for el in tree.iter("Name")]
        marker = (tree.findtext("NextMarker") or "").strip()
        if not marker:
            return names


def download(job: dict[str, Any], client: Client) -> dict[str, Any]:
    resource = job["resource"]
    file_path = str(resource.get("filePath") or "")
    mode = int(str(resource.get("fileMode") or "0770"), 8)
    written = []
    if resource.get("httpUrl"):
        target = inside(file_path)
        fetch(client, str(resource["httpUrl"]), target, file_path)
        written.append(target)
    else:
        url = str(resource.get("storageContainerUrl") or "")
        for name in list_container(client, url, str(resource.get("blobPrefix") or "")):
            target = inside(f"{file_path}/{name}" if file_path else name)
            fetch(client, blob_url(url, name), target, name)
            written.append(target)
    for path in written:
        os.chmod(path, mode)
    return {"files": written}


def put(client: Client, url: str, name: str, source: str, headers: dict[str, str]) -> None:
    root = node_dir(url, "FileUploadContainerNotFound", f"The destination directory '{url}' does not exist on the "
                    "node.")
    if root is not None:
        names = [p for p in name.split("/") if p not in ("", ".")]
        if not names or ".." in names:
            raise Failure("FileUploadMiscError", f"The destination name '{name}' is not a path below '{url}'.")
        dest = os.path.join(root, *names)
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(source, dest)
        except OSError as exc:
            raise Failure("FileUploadMiscError", f"Copying {source} to '{dest}' failed: {exc}.") from None
        return
    try:
        with open(source, "rb") as body:
            response = client.request("PUT", blob_url(url, name), body=body, headers=dict(
                headers, **{"x-ms-blob-type": "BlockBlob", "Content-Length": str(os.fstat(body.fileno()).st_size)}))
            response.read()
    except PermissionError as exc:
        raise Failure("FileUploadMiscError", f"Uploading to '{public(url)}' is refused: {exc}.") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise Failure("FileUploadMiscError", f"Uploading to '{public(url)}' failed: {exc}") from None
    if response.status == 404:
        raise Failure("FileUploadContainerNotFound", f"The container '{public(url)}' was not found.")
    if response.status >= 400:
        raise Failure("FileUploadMiscError", f"Uploading to '{public(url)}' failed with HTTP {response.status}.")


def upload(job: dict[str, Any], client: Client) -> dict[str, Any]:
    pattern = job["pattern"]
    container = job["destination"].get("container") or {}
    url, path = str(container.get("containerUrl") or ""), str(container.get("path") or "")
    headers = {str(h.get("name")): str(h.get("value", "")) for h in container.get("uploadHeaders") or []}
    wildcard = bool(WILDCARD.search(pattern))
    # Blob names keep the path below the pattern's last directory without wildcards.
    fixed = WILDCARD.split(pattern, maxsplit=1)[0]
    base = fixed if fixed.endswith("/") else os.path.dirname(fixed)
    matches = glob.glob(pattern, recursive=True) if wildcard else [pattern]
    log, count = [], 0
    for match in sorted(matches):
        if not os.path.isfile(match):
            continue
        if wildcard:
            rel = os.path.relpath(match, base) if match.startswith(base.rstrip("/") + "/") else os.path.basename(match)
            name = "{}/{}".format(path.rstrip("/"), rel) if path else rel
        else:
            name = path or os.path.basename(match)
        put(client, url, name, match, headers)
        log.append(f"Uploaded {os.path.basename(match)} to {public(url)}/{name}")
        count += 1
    return {"files": count, "log": log}


def main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        client = Client(job.get("ca"), job.get("allow"))
        result = download(job, client) if job["op"] == "download" else upload(job, client)
        out = dict(result, ok=True)
    except Failure as failure:
        out = {"ok": False, "error": failure.info}
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
