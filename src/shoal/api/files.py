"""The Batch file API's answers for a node's (or a task's) directory tree: listing, reading with ranges,
deleting.

The use cases (``domain/batch/files.py``) find the directory and ask the host agent, which does the file work
(``runtime/nodefiles.py``): every path is opened beneath the node's temporary drive without following a link
at any step, and read from that one descriptor. Here: the request's range header is parsed, and the agent's
plain data becomes Batch's JSON and headers.
"""

from __future__ import annotations

import mimetypes
import re
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import Response

from shoal.core import errors, timefmt
from shoal.domain.batch import files as file_rules
from shoal.domain.batch.files import Tree, check_path
from shoal.domain.host import NodeFiles

_RANGE = re.compile(r"^\s*(?:bytes=)?\s*(\d*)\s*-\s*(\d*)\s*$")


def _content_type(info: dict[str, Any]) -> str:
    if info["isDirectory"]:
        return "application/octet-stream"
    return mimetypes.guess_type(info["name"].rsplit("/", 1)[-1])[0] or "application/octet-stream"


def _props(info: dict[str, Any]) -> dict[str, Any]:
    modified = datetime.fromtimestamp(info["mtime"], UTC)
    return {"creationTime": timefmt.format_timestamp(modified), "lastModified": timefmt.format_timestamp(modified),
            "contentLength": info["size"], "contentType": _content_type(info), "fileMode": oct(info["mode"])[2:]}


def listing(agent: NodeFiles | None, tree: Tree, base_url: str, *, recursive: bool) -> list[dict[str, Any]]:
    found = file_rules.list_files(agent, tree, recursive=recursive)
    return [{"name": i["name"], "url": f"{base_url}/{i['name']}", "isDirectory": i["isDirectory"],
             "properties": _props(i)} for i in found]


def _headers(info: dict[str, Any], url: str) -> dict[str, str]:
    modified = timefmt.format_http_date(datetime.fromtimestamp(info["mtime"], UTC))
    return {"ocp-creation-time": modified, "ocp-batch-file-isdirectory": "true" if info["isDirectory"] else "false",
            "ocp-batch-file-url": url, "ocp-batch-file-mode": oct(info["mode"])[2:],
            "Content-Type": _content_type(info), "Last-Modified": modified, "Content-Length": str(info["size"])}


def _range(ocp_range: str | None) -> tuple[int, int | None, bool]:
    """(start, end or None, suffix): ``bytes=a-b``, ``a-``, or ``-n`` (the last n bytes)."""
    if not ocp_range:
        return 0, None, False
    match = _RANGE.match(ocp_range)
    if match is None or not any(match.groups()):
        raise errors.InvalidHeaderValue(f"The ocp-range '{ocp_range}' is invalid.",
                                        values={"HeaderName": "ocp-range", "HeaderValue": ocp_range})
    first, last = match.groups()
    if not first:
        return int(last), None, True
    if last and int(last) < int(first):
        raise errors.InvalidHeaderValue(f"The ocp-range '{ocp_range}' is invalid.",
                                        values={"HeaderName": "ocp-range", "HeaderValue": ocp_range})
    return int(first), int(last) if last else None, False


def handle(method: str, agent: NodeFiles | None, tree: Tree, url: str, file_path: str, *, recursive: bool,
           ocp_range: str | None) -> Response:
    """GET / HEAD / DELETE of one file of the tree (node files and task files answer the same way)."""
    check_path(file_path)
    if method == "DELETE":
        file_rules.delete_file(agent, tree, file_path, recursive=recursive)
        return Response(status_code=200)
    if method == "HEAD":
        return Response(status_code=200, headers=_headers(file_rules.stat_file(agent, tree, file_path),
                                                          f"{url}/{file_path}"))
    start, end, suffix = _range(ocp_range)
    info, data = file_rules.read_file(agent, tree, file_path, start, end, suffix=suffix)
    headers = _headers(info, f"{url}/{file_path}")
    headers["Content-Length"] = str(len(data))
    return Response(content=data, status_code=200, headers=headers)
