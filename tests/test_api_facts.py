"""Shoal against Azure's own API descriptions (``tests/facts/azure_api_facts.json``, written by
``scripts/azure_facts.py`` from Azure/azure-rest-api-specs).

- Operations: every operation of a plane the facts describe (method + normalised path) that Shoal does not serve,
  and every one Shoal serves that Azure does not describe, is a difference.
- Request bodies of the Batch data plane: property names, JSON types and enums, as deep as Shoal's wire models
  describe them (an open object in Shoal, ``dict[str, Any]``, takes anything below it).
- api-versions: the versions Azure publishes are accepted; others are refused the way Azure refuses them, naming
  the versions the resource type supports.

Differences that are known and intended are in ``ALLOWED``, grouped by reason. The test fails on a difference that
is not listed, and on a listed one that is no longer a difference (so the list cannot go stale).
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import ShoalServer
from shoal.azure import Shoal
from shoal.core import apiversion
from shoal.core.azure_versions import VERSIONS

FACTS = json.loads((Path(__file__).parent / "facts" / "azure_api_facts.json").read_text())
BATCH_VERSION = "2025-06-01"

# Known and intended differences (fnmatch patterns), by reason. Each pattern must still match a difference.
ALLOWED: dict[str, list[str]] = {
    "request-body properties of features Shoal does not serve: upgrade policies (nodes are never upgraded in "
    "place)": [
        "batch: POST /pools body.upgradePolicy: Azure property not in Shoal",
        "batch: PATCH /pools/{} body.upgradePolicy: Azure property not in Shoal",
    ],
    "one wire model for create, update and replace (Shoal refuses what an operation cannot change, by name)": [
        "batch: PATCH /pools/{} body.*: Shoal property not in Azure",
        "batch: POST /pools/{}/updateproperties body.*: Shoal property not in Azure",
        "batch: PATCH /jobs/{} body.*: Shoal property not in Azure",
        "batch: PUT /jobs/{} body.*: Shoal property not in Azure",
    ],
    "one wire model for enable and evaluate autoscale": [
        "batch: POST /pools/{}/evaluateautoscale body.autoScaleEvaluationInterval: Shoal property not in Azure",
    ],
    "one wire model for the job manager, preparation and release tasks, and a task base with id/displayName": [
        "batch: POST /jobs body.job*Task.*: Shoal property not in Azure",
        "batch: * /jobschedules* body.jobSpecification.job*Task.*: Shoal property not in Azure",
        "batch: * /pools* body.startTask.displayName: Shoal property not in Azure",
        "batch: * /pools* body.startTask.id: Shoal property not in Azure",
    ],
    "properties of older api-versions (removed by 2025-06-01), kept so that older clients work": [
        "batch: * /pools* body.certificateReferences: Shoal property not in Azure",
        "batch: * /pools* body.targetNodeCommunicationMode: Shoal property not in Azure",
        "batch: POST /jobs/{}/* body.*authenticationTokenSettings: Shoal property not in Azure",
    ],
    "option bodies the routes read themselves, not yet in Shoal's OpenAPI description": [
        "batch: POST /jobs/{}/disable: Azure takes a body, Shoal's description has none",
        "batch: POST /jobs/{}/terminate: Azure takes a body, Shoal's description has none",
        "batch: POST /pools/{}/nodes/{}/*: Azure takes a body, Shoal's description has none",
        "batch: PUT /pools/{}/nodes/{}/users/{}: Azure takes a body, Shoal's description has none",
    ],
    "operations of older api-versions, refused as Azure refused them (upgradeos: PoolNotEligibleForOSVersionUpgrade)": [
        "batch: Shoal operation not in Azure: POST /pools/{}/upgradeos",
    ],
}


def normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path).lower().rstrip("/") or "/"


def shoal_description(server: ShoalServer) -> dict[str, Any]:
    return requests.get(f"{server.base_url}/openapi.json", verify=server.ca, timeout=30).json()


def shoal_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, normalised path below /batch/{account}) -> operation, for the Batch data plane."""
    ops = {}
    for path, item in spec["paths"].items():
        if path.startswith("/batch/{account}"):
            for method, op in item.items():
                ops[(method.upper(), normalise(path[len("/batch/{account}"):]))] = op
    return ops


def compact(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """A JSON schema of Shoal's (pydantic) in the facts' shape: type, enum, items, properties."""
    if "$ref" in schema:
        return compact(components[schema["$ref"].split("/")[-1]], components, depth)
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if options:
        return compact(options[0], components, depth)
    out: dict[str, Any] = {}
    if "type" in schema:
        out["type"] = schema["type"]
    if "enum" in schema:
        out["enum"] = sorted(str(v) for v in schema["enum"])
    if "items" in schema:
        out["items"] = compact(schema["items"], components, depth)
    if "properties" in schema:
        out["type"] = "object"
        out["properties"] = {k: compact(v, components, depth + 1) for k, v in schema["properties"].items()}
    elif schema.get("type") == "object" or schema.get("additionalProperties") is True:
        out["open"] = True
    return out


def body_differences(where: str, azure: dict[str, Any], shoal: dict[str, Any]) -> list[str]:
    if shoal.get("open") or not shoal:
        return []
    found = []
    a_type, s_type = azure.get("type"), shoal.get("type")
    if a_type and s_type and a_type != s_type and not (a_type == "number" and s_type == "integer"):
        found.append(f"{where}: type {a_type} in Azure, {s_type} in Shoal")
    if "enum" in azure and "enum" in shoal and set(azure["enum"]) != set(shoal["enum"]):
        found.append(f"{where}: enum {azure['enum']} in Azure, {shoal['enum']} in Shoal")
    if "items" in azure and "items" in shoal:
        found += body_differences(f"{where}[]", azure["items"], shoal["items"])
    a_props, s_props = azure.get("properties"), shoal.get("properties")
    if a_props is not None and s_props is not None:
        for name in sorted(set(a_props) | set(s_props)):
            if name not in s_props:
                found.append(f"{where}.{name}: Azure property not in Shoal")
            elif name not in a_props:
                found.append(f"{where}.{name}: Shoal property not in Azure")
            else:
                found += body_differences(f"{where}.{name}", a_props[name], s_props[name])
    return found


def differences(spec: dict[str, Any]) -> list[str]:
    azure = {(o["method"], o["path"]): o for o in FACTS["operations"]["batch"][BATCH_VERSION]}
    shoal = shoal_operations(spec)
    components = spec.get("components", {}).get("schemas", {})
    found = []
    for key in sorted(set(azure) - set(shoal)):
        found.append(f"batch: Azure operation not served: {key[0]} {key[1]}")
    for key in sorted(set(shoal) - set(azure)):
        found.append(f"batch: Shoal operation not in Azure: {key[0]} {key[1]}")
    for key in sorted(set(azure) & set(shoal)):
        a_body = azure[key].get("body")
        s_body = shoal[key].get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if a_body and not s_body:
            found.append(f"batch: {key[0]} {key[1]}: Azure takes a body, Shoal's description has none")
        elif a_body and s_body:
            found += [f"batch: {key[0]} {key[1]} {d}" for d in
                      body_differences("body", a_body, compact(s_body, components))]
    return found


def test_shoal_matches_azure_descriptions(server: ShoalServer) -> None:
    found = differences(shoal_description(server))
    patterns = [p for group in ALLOWED.values() for p in group]
    unexpected = [d for d in found if not any(fnmatch.fnmatchcase(d, p) for p in patterns)]
    stale = [p for p in patterns if not any(fnmatch.fnmatchcase(d, p) for d in found)]
    print(f"{len(found)} differences from Azure's descriptions:", *found, sep="\n  ")
    assert not unexpected, "differences that are not in ALLOWED:\n" + "\n".join(unexpected)
    assert not stale, "ALLOWED entries that are no longer differences:\n" + "\n".join(stale)


def test_the_runtime_table_is_the_facts_table() -> None:
    assert {k: list(v) for k, v in VERSIONS.items()} == FACTS["apiVersions"]


# (path, api-version) the pinned az 2.91.0 and the installed SDKs send for what Shoal serves (read from their
# request builders and az's command models), and versions older tools send.
CLIENT_VERSIONS = [
    ("/batch/a/pools", "2025-06-01"), ("/batch/a/pools", "2024-02-01.19.0"), ("/batch/a/pools", "2024-07-01.20.0"),
    ("/batch/a/pools", "2020-03-01.11.0"), ("/batch/a/pools", "2019-08-01.10.0"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Batch/batchAccounts/a", "2025-06-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Batch/batchAccounts/a", "2024-02-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Batch/batchAccounts/a/pools/p", "2020-03-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d", "2026-03-02"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d", "2023-04-02"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d/beginGetAccess", "2025-01-02"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/snapshots/s", "2023-10-02"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/i", "2026-04-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/i", "2024-11-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images", "2024-07-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/g", "2026-03-03"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/g/images/d", "2021-10-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/g/images/d/versions/1", "2024-03-03"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v", "2026-04-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v/deallocate", "2025-11-01"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v/generalize", "2022-11-01"),
    ("/subscriptions/s/providers/Microsoft.Compute/locations/westus/publishers", "2024-11-01"),
    ("/subscriptions/s/providers/Microsoft.Compute/locations/westus/usages", "2024-11-01"),
    ("/subscriptions/s/providers/Microsoft.Compute/locations/westus/operations/o", "2026-03-02"),
    ("/subscriptions/s/resourcegroups/g", "2025-04-01"), ("/subscriptions/s/resourcegroups/g", "2024-11-01"),
    ("/subscriptions/s/resourcegroups/g/providers/Microsoft.Resources/deployments/d", "2025-04-01"),
    ("/subscriptions/s/resourcegroups/g/deployments/d/operations", "2025-04-01"),
    ("/subscriptions/s/resourcegroups", "2022-09-01"), ("/subscriptions/s/providers/Microsoft.Batch", "2025-04-01"),
    ("/subscriptions", "2022-12-01"), ("/subscriptions/s/locations", "2016-06-01"), ("/tenants", "2022-12-01"),
    ("/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/r", "2022-04-01"),
    ("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/r", "2022-05-01-preview"),
    ("/providers/Microsoft.Authorization/roleDefinitions", "2022-04-01"),
]


@pytest.mark.parametrize(("path", "version"), CLIENT_VERSIONS)
def test_versions_clients_send_are_published(path: str, version: str) -> None:
    assert apiversion.parse(version, path, locations=["westus"]).text == version


def test_installed_sdks_send_published_versions() -> None:
    from azure.batch._configuration import BatchClientConfiguration
    from azure.mgmt.batch._configuration import BatchManagementClientConfiguration

    assert BatchClientConfiguration("https://a", credential=object()).api_version in VERSIONS["batch"]
    assert BatchManagementClientConfiguration(credential=object(), subscription_id="s").api_version in VERSIONS[
        "microsoft.batch"]


def call(server: ShoalServer, shoal: Shoal, path: str, version: str, *, batch_url: str | None = None) -> Any:
    scope = "https://batch.core.windows.net//.default" if batch_url else "https://management.azure.com/.default"
    token = shoal.credential().get_token(scope).token
    base = batch_url or server.base_url
    return requests.get(f"{base}{path}?api-version={version}", headers={"Authorization": f"Bearer {token}"},
                        verify=server.ca, timeout=60)


@pytest.fixture(scope="module")
def account(shoal: Shoal) -> Any:
    from azure.mgmt.resource.resources.models import ResourceGroup

    from batch_fixtures import create_account

    shoal.resource_client().resource_groups.create_or_update("facts", ResourceGroup(location="westus"))
    return create_account(shoal, "facts")


def test_arm_refuses_unpublished_versions_naming_the_supported_ones(server: ShoalServer, shoal: Shoal,
                                                                    account: Any) -> None:
    sub = f"/subscriptions/{shoal.subscription_id}"
    accounts = f"{sub}/resourceGroups/facts/providers/Microsoft.Batch/batchAccounts"
    response = call(server, shoal, accounts, "1999-01-01")
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "NoRegisteredProviderFound"), response.text
    assert error["message"].startswith("No registered resource provider found for location 'westus' and API "
                                       "version '1999-01-01' for type 'batchAccounts'. The supported api-versions "
                                       "are '2015-12-01, "), error["message"]
    assert "2025-06-01" in error["message"] and "The supported locations are '" in error["message"]
    assert call(server, shoal, accounts, "2025-06-01").status_code == 200
    assert call(server, shoal, accounts, "2020-03-01").status_code == 200

    disks = f"{sub}/resourceGroups/facts/providers/Microsoft.Compute/disks"
    response = call(server, shoal, disks, "2024-07-01")  # a Compute version, but not one of disks
    assert response.json()["error"]["code"] == "NoRegisteredProviderFound"
    assert "for type 'disks'" in response.json()["error"]["message"]
    assert "2026-03-02" in response.json()["error"]["message"]
    assert call(server, shoal, disks, "2026-03-02").status_code == 200

    response = call(server, shoal, f"{sub}/resourcegroups", "1999-01-01")
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "InvalidApiVersionParameter"), response.text
    assert error["message"].startswith("The api-version '1999-01-01' is invalid. The supported versions are "
                                       "'2025-04-01,2025-03-01,"), error["message"]
    assert call(server, shoal, f"{sub}/resourcegroups", "2025-04-01").status_code == 200
    response = call(server, shoal, "/subscriptions", "2025-04-01")  # a Resources version, not one of subscriptions
    assert response.json()["error"]["code"] == "InvalidApiVersionParameter"
    assert "'2022-12-01," in response.json()["error"]["message"]


def test_batch_refuses_unpublished_versions_naming_the_supported_ones(server: ShoalServer, shoal: Shoal,
                                                                      account: Any) -> None:
    url = f"https://{account.account_endpoint}"
    response = call(server, shoal, "/pools", "1999-01-01", batch_url=url)
    body = response.json()
    assert (response.status_code, body["code"]) == (400, "InvalidQueryParameterValue"), response.text
    message = body["message"]["value"]
    assert message.startswith("Value for one of the query parameters specified in the request URI is invalid.")
    assert "'2015-12-01.2.2, " in message and "2024-07-01.20.0, 2025-06-01'" in message, message
    values = {v["key"]: v["value"] for v in body["values"]}
    assert values["QueryParameterName"] == "api-version" and values["QueryParameterValue"] == "1999-01-01"
    assert "2025-06-01" in values["Reason"]
    for version in ("2025-06-01", "2024-07-01.20.0", "2020-03-01.11.0", "2019-08-01.10.0"):
        assert call(server, shoal, "/pools", version, batch_url=url).status_code == 200, version
