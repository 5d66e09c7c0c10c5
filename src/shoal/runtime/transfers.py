"""Task file transfers: resource files into a task's working directory, output files out of its directory.

Sources and destinations are URLs, as in Azure:

- this Shoal's own containers (``{base}/containers/{name}?sig=...``) and disk downloads (``{base}/downloads/...``)
  are read and written on the host directly (no HTTPS round trip to ourselves);
- ``file://`` URLs name host paths (a directory for a container);
- other ``http(s)`` URLs are fetched with GET; container URLs elsewhere are listed and written the way Azure
  Storage is (``?restype=container&comp=list``, ``PUT`` with ``x-ms-blob-type: BlockBlob``).

Everything is written by the server on the host, into directories tasks can write to as well: every target is
checked to resolve inside the task's directory, so a symbolic link left by a task cannot send a download or an
upload anywhere else.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from shoal.domain import containers
from shoal.runtime.blobs import BlobStore

TIMEOUT = 60
_WILDCARD = re.compile(r"[*?\[]")


@dataclass
class TransferError(Exception):
    """A download or upload that failed, as the task's ``failureInfo`` will show it."""

    code: str
    message: str
    category: str = "usererror"
    details: tuple[tuple[str, str], ...] = ()

    def failure_info(self) -> dict[str, Any]:
        return {"category": self.category, "code": self.code, "message": self.message,
                "details": [{"name": k, "value": v} for k, v in self.details]}


class Transfers:
    def __init__(self, base_url: str, blobs: BlobStore, key: Callable[[], bytes], *,
                 own_download: Callable[[str], Path | None], ca_bundle: Path | None = None) -> None:
        self.base_url, self.blobs, self._load_key = base_url, blobs, key
        self._cached_key: bytes | None = None
        self._own_download, self.ca_bundle = own_download, ca_bundle

    # --- resource files ----------------------------------------------------------------------------------------
    def download(self, resource: dict[str, Any], wd: Path, owner: tuple[int, int] | None) -> list[Path]:
        """Fetch one ``resourceFiles`` entry into ``wd``; returns the files written."""
        file_path = str(resource.get("filePath") or "")
        mode = int(str(resource.get("fileMode") or "0770"), 8)
        written: list[Path] = []
        if resource.get("httpUrl"):
            url = str(resource["httpUrl"])
            target = _inside(wd, file_path)
            with _staged(target) as tmp:
                self._fetch(url, tmp, file_path)
            written.append(target)
        else:
            url = str(resource.get("storageContainerUrl") or "")
            prefix = str(resource.get("blobPrefix") or "")
            for name in self._list_container(url, prefix, file_path):
                target = _inside(wd, f"{file_path}/{name}" if file_path else name)
                with _staged(target) as tmp:
                    self._fetch(_blob_url(url, name), tmp, name)
                written.append(target)
        for path in written:
            os.chmod(path, mode)
            if owner is not None:
                _chown_up_to(path, wd, owner)
        return written

    def _fetch(self, url: str, target: Path, name: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "file":
            source = Path(unquote(parts.path))
            if not source.is_file():
                raise TransferError("BlobNotFound", f"The resource file '{url}' does not exist.",
                                    details=(("FilePath", name),))
            shutil.copyfile(source, target)
            return
        own = containers.parse_own_url(self.base_url, url)
        if own is not None:
            container, blob, sig = own
            self._check_own(container, sig, url, name, missing="BlobNotFound")
            found = self.blobs.find(container, containers.check_blob_name(unquote(blob))) if blob else None
            if found is None:
                raise TransferError("BlobNotFound", f"The blob '{url}' does not exist.", details=(("FilePath", name),))
            shutil.copyfile(found, target)
            return
        try:
            exported = self._own_download(url)
        except Exception as exc:
            raise TransferError("BlobNotFound", str(exc), details=(("FilePath", name),)) from exc
        if exported is not None:
            shutil.copyfile(exported, target)
            return
        if parts.scheme not in ("http", "https"):
            raise TransferError("BlobDownloadMiscError", f"Cannot download '{url}': use an http(s) or file URL.",
                                details=(("FilePath", name),))
        try:
            with requests.get(url, stream=True, timeout=TIMEOUT, verify=self._verify(url)) as response:
                if response.status_code in (401, 403):
                    raise TransferError("BlobAccessDenied", f"Access to '{_public(url)}' was denied "
                                        f"(HTTP {response.status_code}).", details=(("FilePath", name),))
                if response.status_code == 404:
                    raise TransferError("BlobNotFound", f"'{_public(url)}' was not found (HTTP 404).",
                                        details=(("FilePath", name),))
                if response.status_code >= 400:
                    raise TransferError("BlobDownloadMiscError", f"Downloading '{_public(url)}' failed with HTTP "
                                        f"{response.status_code}.", "servererror", (("FilePath", name),))
                with open(target, "wb") as out:
                    for chunk in response.iter_content(1 << 20):
                        out.write(chunk)
        except requests.RequestException as exc:
            raise TransferError("BlobDownloadMiscError", f"Downloading '{_public(url)}' failed: {exc}",
                                "servererror", (("FilePath", name),)) from exc

    def _list_container(self, url: str, prefix: str, file_path: str) -> list[str]:
        parts = urlsplit(url)
        if parts.scheme == "file":
            root = Path(unquote(parts.path))
            if not root.is_dir():
                raise TransferError("ResourceContainerAccessDenied", f"The container '{url}' does not exist.")
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                          if p.is_file() and p.relative_to(root).as_posix().startswith(prefix))
        own = containers.parse_own_url(self.base_url, url)
        if own is not None:
            container, _, sig = own
            self._check_own(container, sig, url, file_path, missing="ResourceContainerAccessDenied")
            return [b.name for b in self.blobs.list(container, prefix)]
        listing = _with_query(url, f"restype=container&comp=list&prefix={prefix}")
        try:
            response = requests.get(listing, timeout=TIMEOUT, verify=self._verify(url))
        except requests.RequestException as exc:
            raise TransferError("ResourceContainerListMiscError", f"Listing '{_public(url)}' failed: {exc}",
                                "servererror") from exc
        if response.status_code >= 400:
            raise TransferError("ResourceContainerAccessDenied", f"Listing '{_public(url)}' failed with HTTP "
                                f"{response.status_code}.")
        return [el.text or "" for el in ET.fromstring(response.content).iter("Name")]

    def _check_own(self, container: str, sig: str | None, url: str, name: str, *, missing: str) -> None:
        if not containers.verify(self._key(), container, sig):
            raise TransferError("BlobAccessDenied" if missing == "BlobNotFound" else "ResourceContainerAccessDenied",
                                f"The signature of '{_public(url)}' is not valid for container '{container}'.",
                                details=(("FilePath", name),))

    def _key(self) -> bytes:
        if self._cached_key is None:
            self._cached_key = self._load_key()
        return self._cached_key

    def _verify(self, url: str) -> bool | str:
        own = urlsplit(url).netloc == urlsplit(self.base_url).netloc
        return str(self.ca_bundle) if own and self.ca_bundle is not None else True

    # --- output files ------------------------------------------------------------------------------------------
    def upload(self, output: dict[str, Any], env: dict[str, str], machine_to_host: Callable[[str], Path | None],
               host_root: Path, log: Callable[[str], None]) -> int:
        """Upload the files one ``outputFiles`` entry matches; returns how many were uploaded.

        The pattern is a path inside the node (relative ones to the task's working directory, environment
        variables expanded); only files under the node's task directories (``host_root`` on the host) go."""
        pattern = _expand(str(output.get("filePattern") or ""), env)
        machine_wd = env.get("AZ_BATCH_TASK_WORKING_DIR", "")
        machine_pattern = os.path.normpath(pattern if pattern.startswith("/") else f"{machine_wd}/{pattern}")
        host_pattern = machine_to_host(machine_pattern)
        destination = ((output.get("destination") or {}).get("container") or {})
        url, path = str(destination.get("containerUrl") or ""), str(destination.get("path") or "")
        headers = {str(h.get("name")): str(h.get("value", "")) for h in destination.get("uploadHeaders") or []}
        if host_pattern is None:
            log(f"{pattern}: outside the node's task directories; nothing uploaded")
            return 0
        wildcard = bool(_WILDCARD.search(machine_pattern))
        # Blob names keep the path below the pattern's last directory without wildcards.
        fixed = _WILDCARD.split(str(host_pattern), maxsplit=1)[0]
        base = Path(fixed) if fixed.endswith("/") else Path(fixed).parent
        matches = glob.glob(str(host_pattern), recursive=True) if wildcard else [str(host_pattern)]
        count = 0
        for match in sorted(matches):
            source = Path(match)
            if not source.is_file() or not _within(source, host_root):
                continue
            if wildcard:
                rel = source.relative_to(base).as_posix() if _is_relative(source, base) else source.name
                name = f"{path.rstrip('/')}/{rel}" if path else rel
            else:
                name = path or source.name
            self._put(url, name, source, headers)
            log(f"Uploaded {source.name} to {_public(url)}/{name}")
            count += 1
        return count

    def _put(self, url: str, name: str, source: Path, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme == "file":
            target = Path(unquote(parts.path))
            if not target.is_dir():
                raise TransferError("FileUploadContainerNotFound", f"The destination directory '{url}' does not "
                                    "exist.")
            dest = target.joinpath(*containers.check_blob_name(name))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            return
        own = containers.parse_own_url(self.base_url, url)
        if own is not None:
            container, prefix, sig = own
            if not containers.verify(self._key(), container, sig):
                raise TransferError("FileUploadMiscError", f"The signature of '{_public(url)}' is not valid for "
                                    f"container '{container}'.")
            if not self.blobs.container_dir(container).is_dir():
                raise TransferError("FileUploadContainerNotFound", f"The container '{container}' does not exist: "
                                    f"create it with `shoal container url {container} --create`.")
            full = f"{prefix.rstrip('/')}/{name}" if prefix else name
            self.blobs.put_file(container, containers.check_blob_name(full), source)
            return
        try:
            with open(source, "rb") as body:
                response = requests.put(_blob_url(url, name), data=body, timeout=TIMEOUT, verify=self._verify(url),
                                        headers={"x-ms-blob-type": "BlockBlob", **headers})
        except requests.RequestException as exc:
            raise TransferError("FileUploadMiscError", f"Uploading to '{_public(url)}' failed: {exc}") from exc
        if response.status_code == 404:
            raise TransferError("FileUploadContainerNotFound", f"The container '{_public(url)}' was not found.")
        if response.status_code >= 400:
            raise TransferError("FileUploadMiscError", f"Uploading to '{_public(url)}' failed with HTTP "
                                f"{response.status_code}.")


def _inside(wd: Path, rel: str) -> Path:
    """``wd/rel`` with its parent directories created, refused when it would resolve outside ``wd``."""
    target = wd.joinpath(*[p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")])
    if ".." in rel.replace("\\", "/").split("/"):
        raise TransferError("ResourceFileCreateFailed", f"'{rel}' leaves the task's working directory.")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _within(target.parent, wd) or (target.is_symlink() and not _within(target, wd)):
        raise TransferError("ResourceFileCreateFailed", f"'{rel}' resolves outside the task's working directory.")
    return target


class _staged:
    """Write to a temporary file beside ``target``; rename it into place (replacing a link, never following it)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.target.parent, prefix=".download-")
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def _within(path: Path, root: Path | None) -> bool:
    if root is None:
        return False
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip("/") + "/")


def _is_relative(path: Path, base: Path) -> bool:
    try:
        path.relative_to(base)
    except ValueError:
        return False
    return True


def _chown_up_to(path: Path, root: Path, owner: tuple[int, int]) -> None:
    current = path
    while _is_relative(current, root) and current != root:
        os.lchown(current, *owner)
        current = current.parent


def _expand(pattern: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)|%(\w+)%",
                  lambda m: env.get(m.group(1) or m.group(2) or m.group(3), m.group(0)), pattern)


def _blob_url(container_url: str, name: str) -> str:
    parts = urlsplit(container_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


def _with_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _public(url: str) -> str:
    """A URL without its query (signatures stay out of task failure messages)."""
    return urlunsplit(urlsplit(url)._replace(query=""))
