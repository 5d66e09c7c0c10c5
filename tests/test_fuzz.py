"""Fuzzing every operation Shoal describes (``GET /openapi.json``) with schemathesis against a live server and
real tokens: no response may be a 5xx. The example budget and seed are fixed so CI stays bounded and
repeatable; `make fuzz` runs a longer campaign (SHOAL_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from harness import ShoalServer
from shoal.azure import Shoal

EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "6"))


@pytest.fixture
def described(own_server: ShoalServer) -> Any:
    """A server of the fuzzing's own: what random requests create or delete touches no other test."""
    spec = requests.get(f"{own_server.base_url}/openapi.json", verify=own_server.ca, timeout=30).json()
    return schemathesis.openapi.from_dict(spec)


@pytest.fixture
def real(own_server: ShoalServer) -> dict[str, Any]:
    """Real names half of the requests use for the ids in their path, so that they get past the 404s."""
    from azure.mgmt.resource.resources.models import ResourceGroup

    from batch_fixtures import create_account

    shoal = Shoal.from_env_json(own_server.env)
    group = "fuzz"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location="westus"))
    account = create_account(shoal, group)
    cred = shoal.credential()
    return {"subscription_id": shoal.subscription_id, "group": group, "account": account.name,
            "tenant": shoal.tenant_id,
            "arm": cred.get_token("https://management.azure.com/.default").token,
            "batch": cred.get_token("https://batch.core.windows.net//.default").token}


def test_no_operation_answers_with_a_server_error(described: Any, own_server: ShoalServer,
                                                  real: dict[str, Any]) -> None:
    server = own_server
    failures: list[tuple[Any, ...]] = []
    broken: list[tuple[Any, ...]] = []  # responses that do not match the description (status, type, schema)
    operations = examples = 0
    with requests.Session() as http:
        for result in described.get_all_operations():
            operation = result.ok()
            operations += 1

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def probe(case: Any) -> None:
                nonlocal examples
                examples += 1
                chooser = random.Random(repr(sorted((case.path_parameters or {}).items())))
                for name in list(case.path_parameters or {}):
                    if name in real and chooser.random() < 0.5:
                        case.path_parameters[name] = real[name]
                token = real["batch"] if case.path.startswith("/batch/") else real["arm"]
                response = case.call(base_url=server.base_url, session=http, verify=server.ca, timeout=60,
                                     headers={"Authorization": f"Bearer {token}"})
                if response.status_code >= 500:
                    failures.append((case.method, case.formatted_path, case.query, case.body, response.status_code,
                                     response.text[:300]))
                try:
                    case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                             response_schema_conformance])
                except (Exception, BaseExceptionGroup) as exc:  # every mismatch found, in one exception
                    broken.append((case.method, case.formatted_path, response.status_code,
                                   response.headers.get("content-type"), str(exc)[:300]))

            probe()
    print(f"fuzzing: {operations} operations, {examples} requests, {len(failures)} answered 5xx, {len(broken)} "
          "broke the description")
    assert not failures, failures[:10]
    assert not broken, broken[:10]
