"""Every API request is authenticated (401) and authorized against role assignments (403)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
import uuid

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.resource.resources.models import ResourceGroup
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import ShoalServer
from shoal.auth import at_rest
from shoal.azure import Shoal
from shoal.store.db import Database
from shoal.store.models import SigningKey

API = "api-version=2024-11-01"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"


def groups_url(server: ShoalServer, shoal: Shoal) -> str:
    return f"{server.base_url}/subscriptions/{shoal.subscription_id}/resourcegroups?{API}"


def signed_token(server: ShoalServer, shoal: Shoal, **overrides: object) -> str:
    """A token signed with the server's real key, with chosen claims (to test expiry and audience)."""
    pem = (server.state_dir / "signing-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    kid = at_rest.key_id(key)
    now = int(time.time())
    claims = {"aud": "https://management.azure.com/", "iss": f"{shoal.authority}/{shoal.tenant_id}/v2.0",
              "iat": now, "nbf": now - 60, "exp": now + 3600, "tid": shoal.tenant_id, "oid": str(uuid.uuid4()),
              "appid": shoal.client_id}
    claims.update(overrides)
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


def get_with(server: ShoalServer, shoal: Shoal, authorization: str | None) -> requests.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.get(groups_url(server, shoal), headers=headers, verify=server.ca, timeout=10)


def test_missing_token_is_401_with_challenge(server: ShoalServer, shoal: Shoal) -> None:
    r = get_with(server, shoal, None)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "AuthenticationFailed"
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")


def test_expired_token_is_401(server: ShoalServer, shoal: Shoal) -> None:
    r = get_with(server, shoal, "Bearer " + signed_token(server, shoal, exp=int(time.time()) - 10))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "ExpiredAuthenticationToken"


def test_time_claims_are_checked_and_nbf_is_enforced_with_azures_clock_skew(server: ShoalServer,
                                                                           shoal: Shoal) -> None:
    now = int(time.time())
    later = get_with(server, shoal, "Bearer " + signed_token(server, shoal, nbf=now + 3600))
    assert later.status_code == 401 and later.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "not yet valid" in later.json()["error"]["message"]
    within_skew = get_with(server, shoal, "Bearer " + signed_token(server, shoal, nbf=now + 120))
    assert within_skew.status_code == 403  # authenticated; this made-up principal just holds no role
    assert within_skew.json()["error"]["code"] == "AuthorizationFailed"
    for claim, value in (("exp", "tomorrow"), ("exp", 1e20), ("exp", True), ("exp", -5), ("nbf", "0"),
                         ("iat", [1]), ("exp", None)):
        r = get_with(server, shoal, "Bearer " + signed_token(server, shoal, **{claim: value}))
        assert r.status_code == 401, (claim, value, r.text)
        assert r.json()["error"]["code"] == "InvalidAuthenticationToken", (claim, value)


def test_the_database_holds_no_signing_key_and_secrets_are_the_server_users_alone(server: ShoalServer) -> None:
    db = Database(server.database_url or f"sqlite:///{server.state_dir / 'shoal.db'}")
    with db.read() as s:
        assert s.query(SigningKey).count() == 0  # reading the database does not let anyone mint tokens
    db.dispose()
    assert stat.S_IMODE(server.state_dir.stat().st_mode) == 0o700
    secret_files = [server.state_dir / name for name in ("signing-key.pem", "credentials.json", "tls/ca-key.pem",
                                                         "tls/server-key.pem")]
    if not server.database_url:
        secret_files.append(server.state_dir / "shoal.db")
    for path in secret_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # Another user of the host reads none of them (nor lists the directory).
    if os.geteuid() == 0:
        for path in [server.state_dir, *secret_files]:
            probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat" if
                                    path.is_file() else "ls", str(path)], capture_output=True, text=True)
            assert probe.returncode != 0 and "Permission denied" in probe.stderr, (path, probe.stdout)


def test_token_for_another_audience_is_401(server: ShoalServer, shoal: Shoal) -> None:
    batch_token = shoal.credential().get_token("https://batch.core.windows.net//.default").token
    r = get_with(server, shoal, f"Bearer {batch_token}")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_bad_signature_is_401(server: ShoalServer, shoal: Shoal) -> None:
    token = shoal.credential().get_token("https://management.azure.com/.default").token
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["oid"] = str(uuid.uuid4())
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (f"{header}.{forged}.{sig}", "not-a-jwt", f"{header}.{payload}.{sig[:-4]}AAAA"):
        r = get_with(server, shoal, f"Bearer {bad}")
        assert r.status_code == 401, bad
        assert r.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_sdk_raises_client_authentication_error_on_401(shoal: Shoal) -> None:
    from azure.core.credentials import AccessToken

    class Stale:
        def get_token(self, *scopes: str, **kw: object) -> AccessToken:
            return AccessToken("expired.or.bogus", int(time.time()) + 3600)

    with pytest.raises(ClientAuthenticationError):
        list(shoal.resource_client(credential=Stale()).resource_groups.list())


def test_principal_without_role_gets_403_then_reader_can_only_read(server: ShoalServer, shoal: Shoal) -> None:
    created = server.cli_json("principal", "create", f"app-{uuid.uuid4().hex[:6]}", "--json")
    cred = shoal.credential(created["clientId"], created["clientSecret"])
    rm = shoal.resource_client(credential=cred)
    with pytest.raises(HttpResponseError) as info:
        list(rm.resource_groups.list())
    assert info.value.status_code == 403
    assert info.value.error.code == "AuthorizationFailed"
    assert created["objectId"] in info.value.error.message
    assert "Microsoft.Resources/subscriptions/resourceGroups/read" in info.value.error.message

    authz = shoal.authorization_client()
    scope = f"/subscriptions/{shoal.subscription_id}"
    ra = authz.role_assignments.create(scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
        role_definition_id=f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
        principal_id=created["objectId"], principal_type="ServicePrincipal"))
    assert ra.principal_id == created["objectId"]
    assert [r.name for r in authz.role_assignments.list_for_scope(scope, filter="atScope()")
            if r.principal_id == created["objectId"]] == [ra.name]

    list(rm.resource_groups.list())  # Reader may read now
    with pytest.raises(HttpResponseError) as info:
        rm.resource_groups.create_or_update("reader-cannot-write", ResourceGroup(location="westus"))
    assert info.value.status_code == 403
    assert "resourceGroups/write" in info.value.error.message

    authz.role_assignments.delete(scope, ra.name)
    with pytest.raises(HttpResponseError) as info:
        list(rm.resource_groups.list())
    assert info.value.status_code == 403


def test_contributor_cannot_assign_roles(server: ShoalServer, shoal: Shoal) -> None:
    created = server.cli_json("principal", "create", f"contrib-{uuid.uuid4().hex[:6]}", "--json")
    server.cli("role-assignment", "create", "--assignee", created["clientId"], "--role", "Contributor")
    cred = shoal.credential(created["clientId"], created["clientSecret"])
    name = f"rg-{uuid.uuid4().hex[:6]}"
    shoal.resource_client(credential=cred).resource_groups.create_or_update(name, ResourceGroup(location="westus"))
    scope = f"/subscriptions/{shoal.subscription_id}/resourceGroups/{name}"
    with pytest.raises(HttpResponseError) as info:
        shoal.authorization_client(credential=cred).role_assignments.create(
            scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
                role_definition_id=f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
                principal_id=created["objectId"]))
    assert info.value.status_code == 403
    assert "Microsoft.Authorization/roleAssignments/write" in info.value.error.message


def test_role_assignment_at_group_scope_applies_below_only(server: ShoalServer, shoal: Shoal) -> None:
    created = server.cli_json("principal", "create", f"scoped-{uuid.uuid4().hex[:6]}", "--json")
    rm_admin = shoal.resource_client()
    mine, other = f"mine-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    for n in (mine, other):
        rm_admin.resource_groups.create_or_update(n, ResourceGroup(location="westus"))
    scope = f"/subscriptions/{shoal.subscription_id}/resourceGroups/{mine}"
    shoal.authorization_client().role_assignments.create(scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
        role_definition_id=f"/subscriptions/{shoal.subscription_id}/providers/Microsoft.Authorization/"
                           f"roleDefinitions/{CONTRIBUTOR}", principal_id=created["objectId"]))
    rm = shoal.resource_client(credential=shoal.credential(created["clientId"], created["clientSecret"]))
    assert rm.resource_groups.get(mine).name == mine
    assert [g.name for g in rm.resource_groups.list()] == [mine]
    with pytest.raises(HttpResponseError) as info:
        rm.resource_groups.get(other)
    assert info.value.status_code == 403


def test_bad_role_assignment_requests(shoal: Shoal) -> None:
    authz = shoal.authorization_client()
    scope = f"/subscriptions/{shoal.subscription_id}"
    role = f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    with pytest.raises(HttpResponseError) as info:
        authz.role_assignments.create(scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
            role_definition_id=role, principal_id=str(uuid.uuid4())))
    assert info.value.error.code == "PrincipalNotFound"
    with pytest.raises(HttpResponseError) as info:
        authz.role_assignments.create(scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
            role_definition_id=f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{uuid.uuid4()}",
            principal_id=str(uuid.uuid4())))
    assert info.value.error.code == "RoleDefinitionDoesNotExist"
