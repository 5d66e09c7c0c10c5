"""The official az CLI against Shoal: cloud registration, login, groups and role assignments."""

from __future__ import annotations

import uuid

import pytest

from conftest import AzCli
from harness import ShoalServer

pytestmark = pytest.mark.az


def test_account_show_after_service_principal_login(az: AzCli, server: ShoalServer) -> None:
    account = az.json("account", "show")
    assert account["id"] == server.env["subscriptionId"]
    assert account["tenantId"] == server.env["tenantId"]
    assert account["user"]["type"] == "servicePrincipal"
    assert account["environmentName"] == "Shoal"


def test_group_create_show_list_exists_delete(az: AzCli) -> None:
    name = f"azrg-{uuid.uuid4().hex[:6]}"
    created = az.json("group", "create", "-n", name, "-l", "westus", "--tags", "team=batch")
    assert created["name"] == name
    assert created["properties"]["provisioningState"] == "Succeeded"
    assert az.json("group", "show", "-n", name)["tags"] == {"team": "batch"}
    assert name in [g["name"] for g in az.json("group", "list")]
    assert az.run("group", "exists", "-n", name).stdout.strip() == "true"
    az.run("group", "delete", "-n", name, "--yes")
    assert az.run("group", "exists", "-n", name).stdout.strip() == "false"
    missing = az.run("group", "show", "-n", name, check=False)
    assert missing.returncode != 0
    assert "ResourceGroupNotFound" in missing.stderr


def test_role_assignment_create_list_delete(az: AzCli, server: ShoalServer) -> None:
    app = server.cli_json("principal", "create", f"az-app-{uuid.uuid4().hex[:6]}", "--json")
    group = f"azrole-{uuid.uuid4().hex[:6]}"
    scope = az.json("group", "create", "-n", group, "-l", "eastus")["id"]

    by_app_id = az.json("role", "assignment", "create", "--assignee", app["clientId"], "--role", "Reader",
                        "--scope", scope)
    assert by_app_id["principalId"] == app["objectId"]
    assert by_app_id["roleDefinitionId"].endswith("acdd72a7-3385-48ef-bd42-f606fba81ae7")

    by_object_id = az.json("role", "assignment", "create", "--assignee-object-id", app["objectId"],
                           "--assignee-principal-type", "ServicePrincipal", "--role", "Contributor",
                           "--scope", scope)
    assert by_object_id["principalType"] == "ServicePrincipal"

    listed = az.json("role", "assignment", "list", "--scope", scope)
    assert {(a["roleDefinitionName"], a["principalId"]) for a in listed} == {
        ("Reader", app["objectId"]), ("Contributor", app["objectId"])}
    assert {a["principalName"] for a in listed} == {app["clientId"]}

    # The first-start principal is Owner of the subscription.
    owners = az.json("role", "assignment", "list", "--assignee", server.env["clientId"], "--role", "Owner")
    assert [o["scope"] for o in owners] == [f"/subscriptions/{server.env['subscriptionId']}"]

    az.run("role", "assignment", "delete", "--ids", by_object_id["id"])
    az.run("role", "assignment", "delete", "--assignee", app["clientId"], "--role", "Reader", "--scope", scope)
    assert az.json("role", "assignment", "list", "--scope", scope) == []
    az.run("group", "delete", "-n", group, "--yes")
