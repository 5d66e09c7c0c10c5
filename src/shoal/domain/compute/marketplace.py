"""Marketplace (platform) image references as ARM spells them, resolved against the catalog."""

from __future__ import annotations

import re
from typing import Any

from shoal.core import errors
from shoal.domain.compute.kinds import ComputeContext, invalid

_PLATFORM_ID = re.compile(
    r"/subscriptions/[^/]+/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/publishers/(?P<p>[^/]+)/"
    r"artifacttypes/vmimage/offers/(?P<o>[^/]+)/skus/(?P<s>[^/]+)/versions/(?P<v>[^/]+)$", re.IGNORECASE)


def find(ctx: ComputeContext, publisher: str, offer: str, sku: str, version: str | None) -> Any:
    image = ctx.catalog.find(publisher, offer, sku, version or "latest")
    if image is None:
        raise errors.PlatformImageNotFound(
            f"The platform image '{publisher}:{offer}:{sku}:{version or 'latest'}' is not available. List the "
            "available images with `az vm image list --all` or GET .../locations/{region}/publishers.")
    return image


def from_reference(ctx: ComputeContext, ref: dict[str, Any], what: str) -> Any:
    missing = [k for k in ("publisher", "offer", "sku") if not ref.get(k)]
    if missing:
        raise invalid(f"{what} must name an image by 'id' or by publisher, offer, sku and version; missing: "
                      f"{', '.join(missing)}.", what)
    return find(ctx, ref["publisher"], ref["offer"], ref["sku"], ref.get("version"))


def from_platform_image_id(ctx: ComputeContext, rid: str) -> Any:
    m = _PLATFORM_ID.search(rid)
    if not m:
        raise invalid(f"'{rid}' is not a platform image id (.../publishers/P/artifacttypes/vmimage/offers/O/skus/S/"
                      "versions/V).", "imageReference.id")
    return find(ctx, m["p"], m["o"], m["s"], m["v"])


def base_of(image: Any) -> dict[str, Any]:
    """The base descriptor stored in a disk's content (everything later rules need, no runtime paths)."""
    return {"publisher": image.publisher, "offer": image.offer, "sku": image.sku, "version": image.version,
            "nodeAgentSkuId": image.node_agent_sku_id, "osType": image.os_type, "firstParty": image.first_party,
            "plan": image.plan, "source": image.source}


def platform_image_id(subscription: str, location: str, image: Any) -> str:
    return (f"/Subscriptions/{subscription}/Providers/Microsoft.Compute/Locations/{location}/Publishers/"
            f"{image.publisher}/ArtifactTypes/VMImage/Offers/{image.offer}/Skus/{image.sku}/Versions/{image.version}")
