"""Hostile and malformed requests get the plane's 400 naming what is wrong, never a 500, and nothing is
stored: wrongly typed bodies on both planes, bodies nested 100,000 deep, malformed $select, durations beyond
Azure's range, role assignment scopes with '..'."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from harness import ShoalServer
from shoal.azure import Shoal

ARM_BATCH = "api-version=2024-07-01"
BATCH = "api-version=2025-06-01"
IMAGE = {"imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
         "nodeAgentSKUId": "batch.node.debian 12"}


class Api:
    def __init__(self, server: ShoalServer, shoal: Shoal) -> None:
        self.server, self.shoal = server, shoal
        self.arm = {"Authorization": "Bearer " + shoal.credential().get_token(
            "https://management.azure.com/.default").token}
        self.batch = {"Authorization": "Bearer " + shoal.credential().get_token(
            "https://batch.core.windows.net//.default").token}
        self.group = f"bad-{uuid.uuid4().hex[:6]}"
        self.sub = f"{server.base_url}/subscriptions/{shoal.subscription_id}"
        self.rg = f"{self.sub}/resourceGroups/{self.group}"

    def call(self, method: str, url: str, body: Any = None, *, batch: bool = False, raw: str | None = None) -> Any:
        headers = {**(self.batch if batch else self.arm), "Content-Type": "application/json"}
        return requests.request(method, url, json=body if raw is None else None, data=raw, headers=headers,
                                verify=self.server.ca, timeout=60)


@pytest.fixture(scope="module")
def api(server: ShoalServer, shoal: Shoal) -> Any:
    from azure.mgmt.resource.resources.models import ResourceGroup

    from batch_fixtures import create_account

    api = Api(server, shoal)
    shoal.resource_client().resource_groups.create_or_update(api.group, ResourceGroup(location="westus"))
    account = create_account(shoal, api.group)
    api.account = account.name
    api.bu = f"https://{account.account_endpoint}"
    created = api.call("POST", f"{api.bu}/pools?{BATCH}", {"id": "p", "vmSize": "standard_d2s_v3",
                                                           "virtualMachineConfiguration": IMAGE}, batch=True)
    assert created.status_code == 201, created.text
    assert api.call("POST", f"{api.bu}/jobs?{BATCH}", {"id": "j", "poolInfo": {"poolId": "p"}},
                    batch=True).status_code == 201
    return api


def arm_error(response: Any) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error.get("target") or error["message"]


def batch_error(response: Any) -> tuple[int, str, dict[str, str]]:
    body = response.json()
    return response.status_code, body["code"], {v["key"]: v["value"] for v in body.get("values") or []}


@pytest.mark.parametrize("path, body, where", [
    ("Microsoft.Batch/batchAccounts/acct{n}", {"location": "westus", "properties": "x"}, "properties"),
    ("Microsoft.Compute/virtualMachines/vm{n}", {"location": "westus", "properties": {"hardwareProfile": "x"}},
     "properties.hardwareProfile"),
    ("Microsoft.Compute/virtualMachines/vm{n}", {"location": "westus", "properties": {
        "hardwareProfile": {"vmSize": "Standard_D2s_v3"}, "storageProfile": "x"}}, "properties.storageProfile"),
    ("Microsoft.Compute/disks/d{n}", {"location": "westus", "properties": {"creationData": 5}},
     "properties.creationData"),
    ("Microsoft.Compute/virtualMachines/vm{n}", {"location": "westus", "tags": {"a": {"b": 1}}}, "tags.a"),
])
def test_wrongly_typed_arm_bodies_are_invalid_request_content(api: Any, path: str, body: Any, where: str) -> None:
    n = uuid.uuid4().hex[:6]
    version = "2025-06-01" if "Batch" in path else "2026-03-02" if "disks" in path else "2026-04-01"  # published
    url = f"{api.rg}/providers/{path.format(n=n)}?api-version={version}"
    response = api.call("PUT", url, body)
    assert arm_error(response) == (400, "InvalidRequestContent", where), response.text
    assert api.call("GET", url).status_code == 404  # nothing stored


def test_management_plane_pool_bodies_are_checked(api: Any) -> None:
    base = f"{api.rg}/providers/Microsoft.Batch/batchAccounts/{api.account}/pools"
    for body, where in (({"properties": "x"}, "properties"),
                        ({"properties": {"vmSize": "standard_d2s_v3", "scaleSettings": "x"}},
                         "properties.scaleSettings"),
                        ({"properties": {"vmSize": "standard_d2s_v3", "scaleSettings": {
                            "fixedScale": {"targetDedicatedNodes": "two"}}}},
                         "properties.scaleSettings.fixedScale.targetDedicatedNodes")):
        response = api.call("PUT", f"{base}/mp?{ARM_BATCH}", body)
        assert arm_error(response) == (400, "InvalidRequestContent", where), response.text


def test_bodies_nested_too_deep_are_refused_on_both_planes(api: Any) -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    arm = api.call("PUT", f"{api.rg}?api-version=2022-09-01", raw='{"location":"westus","tags":' + deep + "}")
    assert arm.status_code == 400 and arm.json()["error"]["code"] == "InvalidRequestContent"
    batch = api.call("POST", f"{api.bu}/jobs?{BATCH}", batch=True, raw='{"id":"deep","metadata":' + deep + "}")
    assert batch.status_code == 400 and batch.json()["code"] == "InvalidRequestBody"


@pytest.mark.parametrize("path, body, prop", [
    ("pools", {"id": "bad1", "vmSize": 5, "virtualMachineConfiguration": IMAGE}, "vmSize"),
    ("pools", {"id": "bad2", "vmSize": "standard_d2s_v3", "virtualMachineConfiguration": "x"},
     "virtualMachineConfiguration"),
    ("pools/p/resize", {"targetDedicatedNodes": 1, "resizeTimeout": "P99999999D"}, "resizeTimeout"),
    ("pools/p/resize", {"targetDedicatedNodes": "ten"}, "targetDedicatedNodes"),
    ("jobs", {"id": "bad3", "poolInfo": {"poolId": "p"}, "commonEnvironmentSettings": "x"},
     "commonEnvironmentSettings"),
    ("jobs/j/tasks", {"id": "t1", "commandLine": "true", "environmentSettings": "abc"}, "environmentSettings"),
    ("jobs/j/tasks", {"id": "t2", "commandLine": "true", "userIdentity": "x"}, "userIdentity"),
    ("jobs/j/tasks", {"id": "t3", "commandLine": "true", "constraints": "x"}, "constraints"),
    ("jobs/j/tasks", {"id": "t4", "commandLine": "true", "constraints": {"maxTaskRetryCount": "y"}},
     "constraints.maxTaskRetryCount"),
    ("jobs/j/tasks", {"id": "t5", "commandLine": "true", "dependsOn": {"taskIdRanges": [{"start": "a", "end": 2}]}},
     "dependsOn.taskIdRanges[0].start"),
])
def test_wrongly_typed_batch_bodies_name_the_property(api: Any, path: str, body: Any, prop: str) -> None:
    response = api.call("POST", f"{api.bu}/{path}?{BATCH}", body, batch=True)
    status, code, values = batch_error(response)
    assert (status, code, values.get("PropertyName")) == (400, "InvalidPropertyValue", prop), response.text
    if "id" in body:  # nothing was stored
        kind = path.split("/")[-1]
        assert api.call("GET", f"{api.bu}/{path}/{body['id']}?{BATCH}", batch=True).status_code == 404, kind


def test_integers_as_digit_strings_are_read_as_azure_reads_them(api: Any) -> None:
    """`az batch` sends its integer options as JSON strings of digits; Azure's deserializer accepts those."""
    response = api.call("POST", f"{api.bu}/jobs?{BATCH}", {"id": "digits", "poolInfo": {"poolId": "p"},
                                                          "priority": "10"}, batch=True)
    assert response.status_code == 201, response.text
    assert api.call("GET", f"{api.bu}/jobs/digits?{BATCH}", batch=True).json()["priority"] == 10


@pytest.mark.parametrize("select", [",,(", "id,,", "id)", "a b"])
def test_malformed_select_is_400_on_lists_and_gets(api: Any, select: str) -> None:
    for url in (f"{api.bu}/pools?{BATCH}&$select={select}", f"{api.bu}/pools/p?{BATCH}&$select={select}",
                f"{api.bu}/jobs/j?{BATCH}&$select={select}"):
        status, code, values = batch_error(api.call("GET", url, batch=True))
        assert (status, code, values.get("QueryParameterName")) == (400, "InvalidQueryParameterValue", "$select")


def test_role_assignments_at_a_scope_naming_dot_dot_are_refused(api: Any) -> None:
    role = f"/subscriptions/{api.shoal.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/" \
           "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    for scope in ("resourceGroups/%2e%2e", f"resourceGroups/{api.group}/%2e%2e"):
        response = api.call("PUT", f"{api.sub}/{scope}/providers/Microsoft.Authorization/roleAssignments/"
                                   f"{uuid.uuid4()}?api-version=2022-04-01",
                            {"properties": {"roleDefinitionId": role, "principalId": api.shoal.client_id}})
        assert response.status_code == 400, response.text
