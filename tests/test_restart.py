"""State survives a restart and a crash of the server: groups, principals, role assignments, operations."""

from __future__ import annotations

import time
import uuid

from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.resource.resources.models import ResourceGroup

from harness import ShoalServer
from shoal.azure import Shoal

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"




def test_everything_is_still_there_after_restart_and_kill(own_server: ShoalServer) -> None:
    shoal = Shoal.from_env_json(own_server.env)
    rm = shoal.resource_client()
    name = f"persist-{uuid.uuid4().hex[:6]}"
    rm.resource_groups.create_or_update(name, ResourceGroup(location="eastus", tags={"x": "y"}))
    app = own_server.cli_json("principal", "create", "persisted-app", "--json")
    scope = f"/subscriptions/{shoal.subscription_id}/resourceGroups/{name}"
    ra = shoal.authorization_client().role_assignments.create(scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
        role_definition_id=f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
        principal_id=app["objectId"]))

    own_server.restart()
    assert own_server.env["clientSecret"] == shoal.client_secret  # same dev principal and secret
    shoal = Shoal.from_env_json(own_server.env)
    rm = shoal.resource_client()
    assert rm.resource_groups.get(name).tags == {"x": "y"}
    assignments = list(shoal.authorization_client().role_assignments.list_for_scope(scope, filter="atScope()"))
    assert ra.name in [a.name for a in assignments]
    reader = shoal.resource_client(credential=shoal.credential(app["clientId"], app["clientSecret"]))
    assert reader.resource_groups.get(name).name == name

    # A deletion accepted just before a crash completes after the restart.
    doomed = f"doomed-{uuid.uuid4().hex[:6]}"
    rm.resource_groups.create_or_update(doomed, ResourceGroup(location="westus"))
    rm.resource_groups.begin_delete(doomed)
    own_server.kill()
    own_server.start()
    shoal = Shoal.from_env_json(own_server.env)
    rm = shoal.resource_client()
    assert rm.resource_groups.get(name).name == name
    for _ in range(200):
        if not rm.resource_groups.check_existence(doomed):
            break
        time.sleep(0.1)
    assert rm.resource_groups.check_existence(doomed) is False
