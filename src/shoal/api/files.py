"""Serving files from a node's (or, later, a task's) directory tree: listing, reading with ranges, deleting.

Paths arrive relative to a root and are resolved without following anything outside it: ``..``, absolute
paths and symlinks leading out of the root are refused, so nothing outside the directory is ever served.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.responses import Response

from shoal.core import errors, timefmt


def resolve(root: Path, relative: str) -> Path:
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or relative.startswith("/"):
        raise errors.AzureError(f"The file path '{relative}' is invalid: it must stay inside the directory.",
                                status=400, code="InvalidPropertyValue", values={"FilePath": relative})
    path = root.joinpath(*parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise errors.AzureError("The specified file does not exist.", status=404, code="FileNotFound")
    return path


def _props(path: Path) -> dict[str, Any]:
    st = path.stat()
    modified = datetime.fromtimestamp(st.st_mtime, UTC)
    props: dict[str, Any] = {"creationTime": timefmt.format_timestamp(modified),
                             "lastModified": timefmt.format_timestamp(modified),
                             "contentLength": 0 if path.is_dir() else st.st_size,
                             "contentType": "application/octet-stream", "fileMode": oct(st.st_mode & 0o7777)[2:]}
    if not path.is_dir():
        props["contentType"] = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return props


def listing(root: Path, base_url: str, *, recursive: bool, prefix: str = "") -> list[dict[str, Any]]:
    if not root.is_dir():
        return []
    out = []
    walker = sorted(root.rglob("*")) if recursive else sorted(root.iterdir())
    for path in walker:
        # Shoal's own bookkeeping (a task attempt's exit-status file) is not part of what users see.
        if path.is_symlink() or any(part.startswith(".shoal") for part in path.relative_to(root).parts):
            continue
        name = prefix + path.relative_to(root).as_posix()
        out.append({"name": name, "url": f"{base_url}/{name}", "isDirectory": path.is_dir(),
                    "properties": _props(path)})
    return out


def headers_for(path: Path, url: str) -> dict[str, str]:
    props = _props(path)
    return {"ocp-creation-time": timefmt.format_http_date(datetime.fromtimestamp(path.stat().st_mtime, UTC)),
            "ocp-batch-file-isdirectory": "true" if path.is_dir() else "false", "ocp-batch-file-url": url,
            "ocp-batch-file-mode": props["fileMode"], "Content-Type": props["contentType"],
            "Last-Modified": timefmt.format_http_date(datetime.fromtimestamp(path.stat().st_mtime, UTC)),
            "Content-Length": str(props["contentLength"])}


def read(path: Path, url: str, *, head: bool, ocp_range: str | None) -> Response:
    if not path.exists():
        raise errors.AzureError("The specified file does not exist.", status=404, code="FileNotFound")
    headers = headers_for(path, url)
    if head or path.is_dir():
        return Response(status_code=200, headers=headers)
    data = path.read_bytes()
    if ocp_range:
        spec = ocp_range.split("=", 1)[-1]
        start_s, _, end_s = spec.partition("-")
        try:
            start = int(start_s) if start_s else max(0, len(data) - int(end_s))
            end = int(end_s) if end_s and start_s else len(data) - 1
        except ValueError as exc:
            raise errors.AzureError(f"The ocp-range '{ocp_range}' is invalid.", status=400,
                                    code="InvalidHeaderValue") from exc
        data = data[start:end + 1]
        headers["Content-Length"] = str(len(data))
    return Response(content=data, status_code=200, headers=headers)


def delete(path: Path, *, recursive: bool) -> None:
    if not path.exists():
        raise errors.AzureError("The specified file does not exist.", status=404, code="FileNotFound")
    if path.is_dir():
        if any(path.iterdir()) and not recursive:
            raise errors.AzureError("The directory is not empty: delete it with recursive=true.", status=409,
                                    code="DirectoryNotEmpty")
        shutil.rmtree(path)
    else:
        path.unlink()


def handle(method: str, root: Path, url: str, file_path: str, *, recursive: bool, ocp_range: str | None) -> Response:
    """GET / HEAD / DELETE of one file below ``root`` (node files and task files answer the same way)."""
    path = resolve(root, file_path)
    if method == "DELETE":
        delete(path, recursive=recursive)
        return Response(status_code=200)
    return read(path, f"{url}/{file_path}", head=method == "HEAD", ocp_range=ocp_range)
