"""The head's side of a cluster's layer transport: node hosts fetch the layers of the images they boot here.

A host asks for a layer by its digest and proves it belongs to the cluster with the cluster token that the
control plane gave it over Ray (``Authorization: Bearer <token>``). Layers are content-addressed, so a host
checks what it received against the digest before keeping it (``cluster/hostside.py``). Without a cluster
(no token configured) the route does not exist for anyone.
"""

from __future__ import annotations

import functools
import hmac
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from shoal.api.arm.compute import pieces
from shoal.api.deps import in_thread, services
from shoal.core import errors

router = APIRouter()
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _from_a_host(request: Request) -> None:
    """Only a host of the cluster (holding its token) sees these routes; to anyone else they do not exist."""
    token = services(request).settings.cluster_token
    given = request.headers.get("authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise errors.NotFound("Not found.")


@router.get("/_shoal/cluster/layers/{digest}", include_in_schema=False)
async def layer(request: Request, digest: str) -> Response:
    _from_a_host(request)
    ctx = services(request)
    host = ctx.host
    size = await in_thread(lambda: host.layer_size(digest)) if host is not None and _DIGEST.fullmatch(digest) \
        else None
    if host is None or size is None:
        raise errors.NotFound(f"No layer {digest[:64]} is stored here.")
    return StreamingResponse(pieces(functools.partial(host.read_layer, digest), 0, size),
                             media_type="application/zstd", headers={"Content-Length": str(size)})


@router.post("/_shoal/cluster/fenced", include_in_schema=False)
async def fenced(request: Request) -> JSONResponse:
    """A host that fences itself (its Ray node died, or it lost the head) says so as it starts killing its
    machines, so its nodes go unusable without waiting for Ray's health checks to declare it dead."""
    _from_a_host(request)
    try:
        name = (await request.json())["host"]
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.BadRequest("The body must be a JSON object naming the host: {\"host\": \"<name>\"}.") from exc
    if not isinstance(name, str):
        raise errors.BadRequest("The property 'host' must be a string.")
    ctx = services(request)
    return JSONResponse({"host": name, "lost": await in_thread(lambda: ctx.host_fenced(name))})
