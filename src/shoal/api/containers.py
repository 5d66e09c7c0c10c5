"""Shoal-served blob containers: the small part of the Azure Blob REST API that task files need.

``PUT {container}?restype=container`` creates a container, ``GET ...?restype=container&comp=list`` lists its
blobs (Azure's ``EnumerationResults`` XML), ``PUT/GET/HEAD/DELETE {container}/{blob}`` write, read and delete a
blob. Access is granted by the container URL's signature (``?sig=``, see :mod:`shoal.domain.containers`); errors
use Azure Storage's XML error format.
"""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from shoal.api.deps import in_thread, services
from shoal.core import errors
from shoal.domain import containers

router = APIRouter()


def _error(status: int, code: str, message: str) -> Response:
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message></Error>")
    return Response(body, status_code=status, media_type="application/xml", headers={"x-ms-error-code": code})


def _blob_headers(size: int, modified: float) -> dict[str, str]:
    return {"Last-Modified": email.utils.formatdate(modified, usegmt=True), "x-ms-blob-type": "BlockBlob",
            "ETag": f'"0x{int(modified * 1e6):X}"', "Content-Length": str(size)}


@router.api_route("/containers/{container}", methods=["GET", "PUT", "DELETE"])
async def container_op(request: Request, container: str) -> Response:
    return await _handle(request, container, None)


@router.api_route("/containers/{container}/{blob:path}", methods=["GET", "HEAD", "PUT", "DELETE"])
async def blob_op(request: Request, container: str, blob: str) -> Response:
    return await _handle(request, container, blob)


async def _handle(request: Request, container: str, blob: str | None) -> Response:
    svc = services(request)
    try:
        containers.check_name(container)
        key = await in_thread(svc.container_key)
        if not containers.verify(key, container, request.query_params.get("sig")):
            return _error(403, "AuthenticationFailed", "The container URL's signature (sig) is missing or does not "
                          "match this container: get a URL with `shoal container url`.")
        store = svc.blobs
        if blob is None:
            return await _container(request, store, container)
        parts = containers.check_blob_name(blob)
    except errors.AzureError as exc:
        return _error(exc.status, exc.code, exc.message)
    if not store.container_dir(container).is_dir():
        return _error(404, "ContainerNotFound", f"The container '{container}' does not exist.")
    method = request.method
    if method == "PUT":
        if request.headers.get("x-ms-blob-type", "BlockBlob") != "BlockBlob":
            return _error(400, "InvalidHeaderValue", "Only block blobs are supported (x-ms-blob-type: BlockBlob).")

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        chunks = [c async for c in body()]  # bounded by the request; blobs here are task outputs
        try:
            info = await in_thread(lambda: store.put(container, parts, iter(chunks)))
        except IsADirectoryError as exc:
            return _error(409, "InvalidBlobOrBlock", str(exc))
        headers = _blob_headers(info.size, info.modified)
        headers.pop("Content-Length")
        return Response(status_code=201, headers=headers)
    found = store.find(container, parts)
    if found is None:
        return _error(404, "BlobNotFound", f"The blob '{blob}' does not exist in container '{container}'.")
    if method == "DELETE":
        store.delete(container, parts)
        return Response(status_code=202)
    st = found.stat()
    if method == "HEAD":
        return Response(status_code=200, headers=_blob_headers(st.st_size, st.st_mtime))
    headers = _blob_headers(st.st_size, st.st_mtime)
    headers.pop("Content-Length")
    return FileResponse(found, headers=headers, media_type="application/octet-stream")


async def _container(request: Request, store: containers.BlobContainers, container: str) -> Response:
    params = request.query_params
    if request.method == "PUT":
        if params.get("restype") != "container":
            return _error(400, "InvalidQueryParameterValue", "Create a container with ?restype=container.")
        if not await in_thread(lambda: store.create_container(container)):
            return _error(409, "ContainerAlreadyExists", "The specified container already exists.")
        return Response(status_code=201)
    if request.method == "DELETE":
        if not await in_thread(lambda: store.delete_container(container)):
            return _error(404, "ContainerNotFound", f"The container '{container}' does not exist.")
        return Response(status_code=202)
    if not store.container_dir(container).is_dir():
        return _error(404, "ContainerNotFound", f"The container '{container}' does not exist.")
    if params.get("comp") != "list":
        return Response(status_code=200, headers={"x-ms-blob-public-access": "none"})
    prefix = params.get("prefix") or ""
    blobs = await in_thread(lambda: store.list(container, prefix))
    items = "".join(
        f"<Blob><Name>{escape(b.name)}</Name><Properties><Last-Modified>"
        f"{email.utils.formatdate(b.modified, usegmt=True)}</Last-Modified><Content-Length>{b.size}"
        f"</Content-Length><BlobType>BlockBlob</BlobType></Properties></Blob>" for b in blobs)
    body = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="'
            f'{escape(str(request.base_url))}" ContainerName="{escape(container)}"><Prefix>{escape(prefix)}</Prefix>'
            f"<Blobs>{items}</Blobs><NextMarker /></EnumerationResults>")
    return Response(body, status_code=200, media_type="application/xml")
