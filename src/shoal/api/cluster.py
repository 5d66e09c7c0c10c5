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
from fastapi.responses import Response, StreamingResponse

from shoal.api.arm.compute import pieces
from shoal.api.deps import in_thread, services
from shoal.core import errors

router = APIRouter()
_DIGEST = re.compile(r"[0-9a-f]{64}")


@router.get("/_shoal/cluster/layers/{digest}", include_in_schema=False)
async def layer(request: Request, digest: str) -> Response:
    ctx = services(request)
    token = ctx.settings.cluster_token
    given = request.headers.get("authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise errors.NotFound("Not found.")
    host = ctx.host
    size = await in_thread(lambda: host.layer_size(digest)) if host is not None and _DIGEST.fullmatch(digest) \
        else None
    if host is None or size is None:
        raise errors.NotFound(f"No layer {digest[:64]} is stored here.")
    return StreamingResponse(pieces(functools.partial(host.read_layer, digest), 0, size),
                             media_type="application/zstd", headers={"Content-Length": str(size)})
