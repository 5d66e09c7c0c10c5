"""Cloud discovery: the document ``az cloud register --endpoint-resource-manager`` reads."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api.deps import services

router = APIRouter()


def cloud_document(base: str) -> dict[str, object]:
    return {
        "name": "Shoal",
        "portal": base + "/",
        "resourceManager": base + "/",
        "galleryEndpoint": base + "/",
        "graph": base + "/graph/",
        "graphAudience": base + "/graph/",
        "microsoftGraphResourceId": base + "/graph/",
        "batch": "https://batch.core.windows.net/",
        "media": base + "/",
        "sqlManagement": base + "/",
        "vmImageAliasDoc": base + "/metadata/vm-image-aliases",
        "activeDirectoryDataLake": base + "/",
        "authentication": {
            "loginEndpoint": base,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {
            "acrLoginServer": "azurecr.io",
            "storage": "core.windows.net",
            "keyVaultDns": "vault.azure.net",
            "sqlServerHostname": "database.windows.net",
        },
    }


@router.get("/metadata/endpoints")
async def metadata_endpoints(request: Request) -> JSONResponse:
    """An object for current api-versions; a one-element list for the pre-2022 form (ARM_CLOUD_METADATA_URL)."""
    doc = cloud_document(services(request).settings.base_url)
    version = request.query_params.get("api-version", "2022-09-01")
    if version < "2022-09-01":
        return JSONResponse([doc])
    return JSONResponse(doc)
