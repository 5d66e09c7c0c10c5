"""``GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/usages``: regional compute usage and quota
(``az vm list-usage``, azure-mgmt-compute ``usage.list``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.api import arm
from shoal.api.deps import arm_caller, authorize, in_thread, services
from shoal.core import errors
from shoal.domain.compute import usage

router = APIRouter()


@router.get("/subscriptions/{subscription_id}/providers/Microsoft.Compute/locations/{location}/usages")
async def list_usages(request: Request, subscription_id: str, location: str) -> JSONResponse:
    caller = arm_caller(request)
    arm.api_version(request)
    svc = services(request)
    if location.lower() not in svc.settings.regions:
        raise errors.NoRegisteredProviderFound(f"The location '{location}' is not a region of this cloud "
                                               f"({', '.join(svc.settings.regions)}).")

    def work() -> list[dict[str, Any]]:
        with svc.db.read() as s:
            authorize(s, caller, subscription_id, "Microsoft.Compute/locations/usages/read",
                      f"/subscriptions/{subscription_id}")
            used = usage.regional(s, subscription_id, location)
        return usage.render(used, svc.settings.subscription_core_quota, usage.VM_QUOTA)

    return JSONResponse({"value": await in_thread(work)})
