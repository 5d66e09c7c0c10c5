"""Signing in: azure-identity against Shoal's authority, and the token endpoint's errors."""

from __future__ import annotations

import uuid

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential

from harness import ShoalServer
from shoal.azure import Shoal


def test_client_secret_credential_gets_arm_and_batch_tokens(shoal: Shoal) -> None:
    cred = shoal.credential()
    arm = cred.get_token("https://management.azure.com/.default")
    batch = cred.get_token("https://batch.core.windows.net//.default")
    arm_claims = jwt.decode(arm.token, options={"verify_signature": False})
    batch_claims = jwt.decode(batch.token, options={"verify_signature": False})
    assert arm_claims["aud"] == "https://management.azure.com/"
    assert batch_claims["aud"] == "https://batch.core.windows.net/"
    for claims in (arm_claims, batch_claims):
        assert claims["tid"] == shoal.tenant_id
        assert claims["appid"] == shoal.client_id
        assert claims["iss"] == f"{shoal.authority}/{shoal.tenant_id}/v2.0"
        assert claims["exp"] - claims["iat"] >= 3000


def test_token_signature_verifies_against_published_jwks(server: ShoalServer, shoal: Shoal) -> None:
    token = shoal.credential().get_token("https://management.azure.com/.default").token
    conf = requests.get(f"{server.base_url}/{shoal.tenant_id}/v2.0/.well-known/openid-configuration",
                        verify=server.ca, timeout=10).json()
    assert conf["token_endpoint"].startswith(server.base_url)
    assert conf["authorization_endpoint"]
    jwks = jwt.PyJWKClient(conf["jwks_uri"], ssl_context=__import__("ssl").create_default_context(cafile=server.ca))
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://management.azure.com/",
                        issuer=conf["issuer"])
    assert claims["oid"]


def test_wrong_secret_is_refused_in_entra_format(server: ShoalServer, shoal: Shoal) -> None:
    r = requests.post(f"{server.base_url}/{shoal.tenant_id}/oauth2/v2.0/token", verify=server.ca, timeout=10,
                      data={"grant_type": "client_credentials", "client_id": shoal.client_id,
                            "client_secret": "not-the-secret", "scope": "https://management.azure.com/.default"})
    assert r.status_code == 401
    body = r.json()
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert "AADSTS7000215" in body["error_description"]

    cred = ClientSecretCredential(shoal.tenant_id, shoal.client_id, "wrong", authority=shoal.authority,
                                  disable_instance_discovery=True, connection_verify=shoal.ca_bundle)
    with pytest.raises(ClientAuthenticationError, match="7000215"):
        cred.get_token("https://management.azure.com/.default")


@pytest.mark.parametrize(("form", "status", "error"), [
    ({"grant_type": "client_credentials", "client_id": str(uuid.uuid4()), "client_secret": "x",
      "scope": "https://management.azure.com/.default"}, 400, "unauthorized_client"),
    ({"grant_type": "password", "client_id": "x", "scope": "https://management.azure.com/.default"}, 400,
     "unsupported_grant_type"),
    ({"grant_type": "client_credentials", "client_id": "x", "client_secret": "y",
      "scope": "https://storage.azure.com/.default"}, 400, "invalid_scope"),
])
def test_token_endpoint_rejects_bad_requests(server: ShoalServer, shoal: Shoal, form: dict[str, str], status: int,
                                             error: str) -> None:
    r = requests.post(f"{server.base_url}/{shoal.tenant_id}/oauth2/v2.0/token", data=form, verify=server.ca,
                      timeout=10)
    assert r.status_code == status
    assert r.json()["error"] == error


def test_a_key_vault_token_is_issued_but_no_plane_accepts_it(server: ShoalServer, shoal: Shoal) -> None:
    """Packer's azure-arm builder takes a Key Vault token (ADAL v1, ``resource``) before anything else."""
    r = requests.post(f"{server.base_url}/{shoal.tenant_id}/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": shoal.client_id, "client_secret": shoal.client_secret,
        "resource": "https://vault.azure.net"}, verify=server.ca, timeout=10)
    assert r.status_code == 200 and r.json()["resource"] == "https://vault.azure.net/", r.text
    arm = requests.get(f"{server.base_url}/subscriptions?api-version=2022-12-01", verify=server.ca, timeout=10,
                       headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert arm.status_code == 401 and arm.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_unknown_tenant_is_refused(server: ShoalServer) -> None:
    r = requests.get(f"{server.base_url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration", verify=server.ca,
                     timeout=10)
    assert r.status_code == 400
    assert "AADSTS90002" in r.json()["error_description"]


def test_env_json_has_the_documented_keys(server: ShoalServer) -> None:
    env = server.env
    for key in ("tenantId", "subscriptionId", "clientId", "clientSecret", "authorityHost", "resourceManagerUrl",
                "caBundle"):
        assert env[key], key
    assert env["authorityHost"] == server.base_url
    assert env["caBundle"] == server.ca
