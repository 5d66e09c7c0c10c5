"""The ARM VM-image browse API over the marketplace catalog (``az vm image list-*``).

These list operations answer JSON arrays (not ``{"value": ...}``), as Azure does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api import arm
from shoal.api.deps import arm_caller, services
from shoal.core import catalog as marketplace
from shoal.core import errors

router = APIRouter()

LOC = "/subscriptions/{subscription_id}/providers/Microsoft.Compute/locations/{location}/publishers"


def _tree(request: Request, location: str) -> dict[str, dict[str, dict[str, list[str]]]]:
    arm_caller(request)
    arm.api_version(request)
    svc = services(request)
    if location.lower() not in svc.settings.regions:
        raise errors.NoRegisteredProviderFound(f"The location '{location}' is not a region of this cloud "
                                               f"({', '.join(svc.settings.regions)}).")
    return marketplace.browse_tree(svc.catalog.images())


def _pick(mapping: dict[str, Any], name: str, what: str) -> tuple[str, Any]:
    for key, value in mapping.items():
        if key.lower() == name.lower():
            return key, value
    raise errors.NotFound(f"The {what} '{name}' was not found in the marketplace catalog.")


def _entry(sub: str, location: str, path: str, name: str) -> dict[str, Any]:
    return {"location": location, "name": name,
            "id": f"/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{path}"}


@router.get(LOC)
async def list_publishers(request: Request, subscription_id: str, location: str) -> JSONResponse:
    tree = _tree(request, location)
    return JSONResponse([_entry(subscription_id, location, p, p) for p in tree])


@router.get(LOC + "/{publisher}/artifacttypes/vmimage/offers")
async def list_offers(request: Request, subscription_id: str, location: str, publisher: str) -> JSONResponse:
    p, offers = _pick(_tree(request, location), publisher, "publisher")
    return JSONResponse([_entry(subscription_id, location, f"{p}/ArtifactTypes/VMImage/Offers/{o}", o)
                         for o in offers])


@router.get(LOC + "/{publisher}/artifacttypes/vmimage/offers/{offer}/skus")
async def list_skus(request: Request, subscription_id: str, location: str, publisher: str, offer: str
                    ) -> JSONResponse:
    p, offers = _pick(_tree(request, location), publisher, "publisher")
    o, skus = _pick(offers, offer, "offer")
    return JSONResponse([_entry(subscription_id, location, f"{p}/ArtifactTypes/VMImage/Offers/{o}/Skus/{s}", s)
                         for s in skus])


@router.get(LOC + "/{publisher}/artifacttypes/vmimage/offers/{offer}/skus/{sku}/versions")
async def list_versions(request: Request, subscription_id: str, location: str, publisher: str, offer: str, sku: str
                        ) -> JSONResponse:
    p, offers = _pick(_tree(request, location), publisher, "publisher")
    o, skus = _pick(offers, offer, "offer")
    s, versions = _pick(skus, sku, "sku")
    top = request.query_params.get("$top")
    if request.query_params.get("$orderby", "").lower().startswith("name desc"):
        versions = list(reversed(versions))
    if top:
        versions = versions[: int(top)] if top.isdigit() else versions
    return JSONResponse([_entry(subscription_id, location,
                                f"{p}/ArtifactTypes/VMImage/Offers/{o}/Skus/{s}/Versions/{v}", v) for v in versions])


@router.get(LOC + "/{publisher}/artifacttypes/vmimage/offers/{offer}/skus/{sku}/versions/{version}")
async def get_version(request: Request, subscription_id: str, location: str, publisher: str, offer: str, sku: str,
                      version: str) -> JSONResponse:
    _tree(request, location)
    image = services(request).catalog.find(publisher, offer, sku, version)
    if image is None:
        raise errors.NotFound(f"Artifact: VMImage was not found ({publisher}:{offer}:{sku}:{version}).")
    body = _entry(subscription_id, location, f"{image.publisher}/ArtifactTypes/VMImage/Offers/{image.offer}/Skus/"
                  f"{image.sku}/Versions/{image.version}", image.version)
    body["properties"] = marketplace.vm_image_properties(image)
    return JSONResponse(body)
