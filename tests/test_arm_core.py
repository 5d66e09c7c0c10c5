"""ARM core through azure-mgmt-resource and raw HTTPS: resource groups, subscriptions, errors, LROs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource.resources.models import ResourceGroup, ResourceGroupPatchable

from harness import ShoalServer
from shoal.azure import Shoal

API = "api-version=2024-11-01"


def bearer(shoal: Shoal) -> dict[str, str]:
    return {"Authorization": "Bearer " + shoal.credential().get_token("https://management.azure.com/.default").token}


def call(server: ShoalServer, shoal: Shoal, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {**bearer(shoal), **kw.pop("headers", {})}
    return requests.request(method, server.base_url + path, headers=headers, verify=server.ca, timeout=30, **kw)


def test_resource_group_lifecycle_with_the_sdk(shoal: Shoal) -> None:
    rm = shoal.resource_client()
    name = f"rg-{uuid.uuid4().hex[:8]}"
    created = rm.resource_groups.create_or_update(name, ResourceGroup(location="westus", tags={"a": "1"}))
    assert created.name == name
    assert created.location == "westus"
    assert created.properties.provisioning_state == "Succeeded"
    assert created.id == f"/subscriptions/{shoal.subscription_id}/resourceGroups/{name}"

    assert rm.resource_groups.check_existence(name) is True
    assert rm.resource_groups.get(name).tags == {"a": "1"}
    assert name in [g.name for g in rm.resource_groups.list()]

    updated = rm.resource_groups.update(name, ResourceGroupPatchable(tags={"b": "2"}))
    assert updated.tags == {"b": "2"}

    poller = rm.resource_groups.begin_delete(name)
    poller.result()
    assert poller.status().lower() == "succeeded"
    assert rm.resource_groups.check_existence(name) is False
    with pytest.raises(ResourceNotFoundError) as info:
        rm.resource_groups.get(name)
    assert info.value.error.code == "ResourceGroupNotFound"


def test_delete_is_a_long_running_operation_polled_every_second(server: ShoalServer, shoal: Shoal) -> None:
    rm = shoal.resource_client()
    name = f"rg-{uuid.uuid4().hex[:8]}"
    rm.resource_groups.create_or_update(name, ResourceGroup(location="eastus"))
    r = call(server, shoal, "DELETE", f"/subscriptions/{shoal.subscription_id}/resourcegroups/{name}?{API}")
    assert r.status_code == 202
    assert r.headers["Retry-After"] == "1"
    location = r.headers["Location"]
    assert location.startswith(server.base_url) and "api-version=" in location
    # The monitor answers 202 (+Retry-After) or 200, and keeps answering after completion: never 404.
    for _ in range(100):
        poll = call(server, shoal, "GET", location[len(server.base_url):])
        assert poll.status_code in (200, 202)
        if poll.status_code == 200:
            break
        assert poll.headers["Retry-After"] == "1"
    assert call(server, shoal, "GET", location[len(server.base_url):]).status_code == 200
    # The SDK's delete never needs its 30 s default poll interval: every non-final answer says 1 s.
    rm.resource_groups.create_or_update(name, ResourceGroup(location="eastus"))
    poller = rm.resource_groups.begin_delete(name)
    assert poller.polling_method()._initial_response.http_response.headers["Retry-After"] == "1"
    poller.result()


def test_paging_follows_next_link(shoal: Shoal, server: ShoalServer) -> None:
    rm = shoal.resource_client()
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    names = {f"{prefix}-{i}" for i in range(5)}
    for n in names:
        rm.resource_groups.create_or_update(n, ResourceGroup(location="westus"))
    r = call(server, shoal, "GET", f"/subscriptions/{shoal.subscription_id}/resourcegroups?{API}&$top=2")
    assert r.status_code == 200 and len(r.json()["value"]) == 2
    # The SDK walks every page (page size is 200 by default; with $top it returns one page).
    assert names <= {g.name for g in rm.resource_groups.list()}
    for n in names:
        rm.resource_groups.begin_delete(n)


def test_subscription_tenant_and_locations(shoal: Shoal, server: ShoalServer) -> None:
    client = shoal.subscription_client()
    subs = list(client.subscriptions.list())
    assert [s.subscription_id for s in subs] == [shoal.subscription_id]
    assert subs[0].state == "Enabled"
    assert client.subscriptions.get(shoal.subscription_id).display_name
    locations = [loc.name for loc in client.subscriptions.list_locations(shoal.subscription_id)]
    assert locations == ["westus", "eastus"]
    assert [t.tenant_id for t in client.tenants.list()] == [shoal.tenant_id]


def test_request_ids_are_returned_and_client_id_echoed(server: ShoalServer, shoal: Shoal) -> None:
    cid = str(uuid.uuid4())
    r = call(server, shoal, "GET", f"/subscriptions/{shoal.subscription_id}/resourcegroups?{API}",
             headers={"x-ms-client-request-id": cid})
    assert r.headers["x-ms-client-request-id"] == cid
    assert r.headers["x-ms-request-id"]
    assert r.headers["x-ms-correlation-request-id"]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("GET", "/subscriptions/{sub}/resourcegroups", None, 400, "MissingApiVersionParameter"),
    ("GET", "/subscriptions/{sub}/resourcegroups?api-version=latest", None, 400, "InvalidApiVersionParameter"),
    ("GET", "/subscriptions/{sub}/resourcegroups?api-version=2024-13-45", None, 400, "InvalidApiVersionParameter"),
    ("PUT", "/subscriptions/{sub}/resourcegroups/ok?" + API, b"{not json", 400, "InvalidRequestContent"),
    ("PUT", "/subscriptions/{sub}/resourcegroups/ok?" + API, b"[1,2]", 400, "InvalidRequestContent"),
    ("PUT", "/subscriptions/{sub}/resourcegroups/ok?" + API, b"{}", 400, "InvalidRequestContent"),
    ("PUT", "/subscriptions/{sub}/resourcegroups/ok?" + API, b'{"location": 5}', 400, "InvalidRequestContent"),
    ("PUT", "/subscriptions/{sub}/resourcegroups/" + "x" * 91 + "?" + API, b'{"location":"westus"}', 400,
     "InvalidResourceGroup"),
    ("PUT", "/subscriptions/{sub}/resourcegroups/bad!name?" + API, b'{"location":"westus"}', 400,
     "InvalidResourceGroup"),
    ("PUT", "/subscriptions/{sub}/resourcegroups/ok?" + API, b'{"location":"mars"}', 400,
     "LocationNotAvailableForResourceGroup"),
    ("GET", "/subscriptions/{sub}/resourcegroups/missing-group?" + API, None, 404, "ResourceGroupNotFound"),
    ("DELETE", "/subscriptions/{sub}/resourcegroups/missing-group?" + API, None, 404, "ResourceGroupNotFound"),
    ("GET", "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups?" + API, None, 404,
     "SubscriptionNotFound"),
])
def test_bad_requests_get_clear_arm_errors(server: ShoalServer, shoal: Shoal, method: str, path: str,
                                           body: bytes | None, status: int, code: str) -> None:
    r = call(server, shoal, method, path.format(sub=shoal.subscription_id), data=body,
             headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert len(err["message"]) > 20


def test_refused_requests_change_nothing(server: ShoalServer, shoal: Shoal) -> None:
    rm = shoal.resource_client()
    name = f"keep-{uuid.uuid4().hex[:6]}"
    rm.resource_groups.create_or_update(name, ResourceGroup(location="westus", tags={"k": "v"}))
    r = call(server, shoal, "PUT", f"/subscriptions/{shoal.subscription_id}/resourcegroups/{name}?{API}",
             json={"location": "eastus"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "InvalidResourceGroupLocation"
    r = call(server, shoal, "PATCH", f"/subscriptions/{shoal.subscription_id}/resourcegroups/{name}?{API}",
             data=b'{"tags": [1]}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    g = rm.resource_groups.get(name)
    assert (g.location, g.tags) == ("westus", {"k": "v"})
    rm.resource_groups.begin_delete(name).result()


def test_unknown_route_is_an_arm_404_not_a_500(server: ShoalServer, shoal: Shoal) -> None:
    r = call(server, shoal, "GET", f"/subscriptions/{shoal.subscription_id}/providers/Microsoft.Nope/things?{API}")
    assert r.status_code == 404
    assert r.json()["error"]["code"]


def test_sdk_surfaces_arm_errors(shoal: Shoal) -> None:
    rm = shoal.resource_client()
    with pytest.raises(HttpResponseError) as info:
        rm.resource_groups.create_or_update("bad name!", ResourceGroup(location="westus"))
    assert info.value.error.code == "InvalidResourceGroup"
