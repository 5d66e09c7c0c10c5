"""Subscriptions, tenants, locations and resource providers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, require_subscription, services
from shoal.domain import authorization, identity
from shoal.store import models

router = APIRouter()

PROVIDERS: dict[str, list[str]] = {
    "Microsoft.Resources": ["resourceGroups", "subscriptions", "tenants", "resources", "locations"],
    "Microsoft.Authorization": ["roleAssignments", "roleDefinitions", "permissions"],
    "Microsoft.Compute": ["virtualMachines", "virtualMachines/extensions", "disks", "snapshots", "images",
                          "galleries", "galleries/images", "galleries/images/versions", "locations",
                          "locations/operations", "locations/publishers"],
    "Microsoft.Batch": ["batchAccounts", "batchAccounts/pools", "locations", "locations/quotas",
                        "locations/accountOperationResults", "operations"],
}
API_VERSIONS = ["2025-06-01", "2024-11-01", "2024-07-01", "2024-02-01", "2023-05-01", "2022-12-01",
                "2021-04-01", "2020-03-01", "2019-08-01"]


def subscription_body(sub: models.Subscription) -> dict[str, object]:
    return {
        "id": f"/subscriptions/{sub.id}", "authorizationSource": "RoleBased", "managedByTenants": [],
        "subscriptionId": sub.id, "tenantId": sub.tenant_id, "displayName": sub.display_name, "state": sub.state,
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01",
                                 "spendingLimit": "Off"},
    }


@router.get("/subscriptions")
async def list_subscriptions(request: Request) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> list[dict[str, object]]:
        with svc.db.read() as s:
            return [subscription_body(x) for x in identity.list_subscriptions(s)
                    if authorization.has_any_access(s, caller, f"/subscriptions/{x.id}")]

    items = await in_thread(work)
    return JSONResponse({"value": items, "count": {"type": "Total", "value": len(items)}})


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(request: Request, subscription_id: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> dict[str, object]:
        with svc.db.read() as s:
            sub = require_subscription(s, subscription_id)
            authorize(s, caller, subscription_id, "Microsoft.Resources/subscriptions/read",
                      f"/subscriptions/{sub.id}")
            return subscription_body(sub)

    return JSONResponse(await in_thread(work))


@router.get("/subscriptions/{subscription_id}/locations")
async def list_locations(request: Request, subscription_id: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> None:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, "Microsoft.Resources/subscriptions/locations/read",
                      f"/subscriptions/{subscription_id}")

    await in_thread(work)
    regions = svc.settings.regions
    return JSONResponse({"value": [{
        "id": f"/subscriptions/{subscription_id}/locations/{r}", "name": r, "type": "Region",
        "displayName": svc.settings.region_display_name(r),
        "regionalDisplayName": svc.settings.region_display_name(r),
        "metadata": {"regionType": "Physical", "regionCategory": "Recommended", "geographyGroup": "Shoal",
                     "pairedRegion": [{"name": p, "id": f"/subscriptions/{subscription_id}/locations/{p}"}
                                      for p in regions if p != r][:1]},
    } for r in regions]})


@router.get("/tenants")
async def list_tenants(request: Request) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)

    def work() -> list[dict[str, object]]:
        with svc.db.read() as s:
            t = identity.find_tenant(s, caller.tenant_id)
            if t is None:
                return []
            return [{"id": f"/tenants/{t.id}", "tenantId": t.id, "countryCode": "US", "displayName": t.display_name,
                     "domains": [t.default_domain], "tenantCategory": "Home", "defaultDomain": t.default_domain,
                     "tenantType": "AAD"}]

    return JSONResponse({"value": await in_thread(work)})


def provider_body(subscription_id: str, namespace: str, regions: tuple[str, ...]) -> dict[str, object]:
    return {
        "id": f"/subscriptions/{subscription_id}/providers/{namespace}", "namespace": namespace,
        "registrationState": "Registered", "registrationPolicy": "RegistrationRequired",
        "resourceTypes": [{"resourceType": t, "locations": [r for r in regions], "apiVersions": API_VERSIONS,
                           "capabilities": "None"} for t in PROVIDERS[namespace]],
    }


@router.get("/subscriptions/{subscription_id}/providers")
async def list_providers(request: Request, subscription_id: str) -> JSONResponse:
    arm_caller(request)
    arm.api_version(request)
    regions = services(request).settings.regions
    return JSONResponse({"value": [provider_body(subscription_id, ns, regions) for ns in PROVIDERS]})


@router.get("/subscriptions/{subscription_id}/providers/{namespace}")
async def get_provider(request: Request, subscription_id: str, namespace: str) -> JSONResponse:
    arm_caller(request)
    arm.api_version(request)
    match = next((ns for ns in PROVIDERS if ns.lower() == namespace.lower()), None)
    if match is None:
        from shoal.core import errors

        raise errors.InvalidResourceNamespace(f"The resource provider '{namespace}' is not served by Shoal.")
    return JSONResponse(provider_body(subscription_id, match, services(request).settings.regions))


@router.post("/subscriptions/{subscription_id}/providers/{namespace}/register")
async def register_provider(request: Request, subscription_id: str, namespace: str) -> JSONResponse:
    return await get_provider(request, subscription_id, namespace)
