"""`shoal proxy`: clients keep Azure's default endpoints and reach Shoal through HTTPS_PROXY.

The clients here get no endpoint configuration at all: only ``HTTPS_PROXY`` and Shoal's CA
(``REQUESTS_CA_BUNDLE``), in processes of their own so nothing leaks into other tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import az_executable
from harness import ShoalServer, free_port
from shoal.core import azure_hosts

PROXY_PORT = free_port()


@pytest.fixture(scope="module")
def proxied() -> Iterator[ShoalServer]:
    """A server of this module's own with `--proxy-port`."""
    srv = ShoalServer(extra_args=["--proxy-port", str(PROXY_PORT)]).start()
    yield srv
    srv.cleanup()


def proxy_url() -> str:
    return f"http://127.0.0.1:{PROXY_PORT}"


def client_env(srv: ShoalServer, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a client that knows nothing of Shoal but the proxy and the CA."""
    drop = ("AZURE_", "ARM_", "NO_PROXY", "no_proxy", "SSL_CERT", "REQUESTS_CA", "CURL_CA", "HTTP_PROXY",
            "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update({"HTTPS_PROXY": proxy_url(), "REQUESTS_CA_BUNDLE": srv.ca, **(extra or {})})
    return env


def connect(target: str, port: int = PROXY_PORT) -> tuple[socket.socket, bytes]:
    """A raw CONNECT through the proxy: the socket and the proxy's answer head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def proxies() -> dict[str, str]:
    return {"https": proxy_url()}


@pytest.mark.az
def test_az_group_list_through_https_proxy_without_cloud_register(proxied: ShoalServer, tmp_path: Path) -> None:
    exe = az_executable()
    if exe is None:
        pytest.skip("az CLI not installed (make test installs it into .venv-az)")
    env = client_env(proxied, {"AZURE_CONFIG_DIR": str(tmp_path / "az"), "AZURE_CORE_COLLECT_TELEMETRY": "false",
                               "AZURE_CORE_ONLY_SHOW_ERRORS": "true", "AZURE_CORE_NO_COLOR": "true"})

    def az(*args: str) -> str:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, f"az {' '.join(args)}: {proc.stderr}\n{proc.stdout}"
        return proc.stdout

    e = proxied.env
    az("login", "--service-principal", "-u", e["clientId"], f"--password={e['clientSecret']}", "--tenant",
       e["tenantId"])
    account = json.loads(az("account", "show", "-o", "json"))
    assert account["environmentName"] == "AzureCloud"  # no cloud registered: Azure's own endpoints
    assert account["id"] == e["subscriptionId"]
    name = f"proxyrg-{uuid.uuid4().hex[:6]}"
    az("group", "create", "-n", name, "-l", "eastus")
    assert name in [g["name"] for g in json.loads(az("group", "list", "-o", "json"))]
    az("group", "delete", "-n", name, "--yes")  # a long-running operation polled at its Location
    assert az("group", "exists", "-n", name).strip() == "false"


SDK_SCRIPT = textwrap.dedent("""
    import json, sys, uuid
    from azure.identity import ClientSecretCredential
    from azure.mgmt.resource.resources import ResourceManagementClient
    from azure.mgmt.batch import BatchManagementClient
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    tenant, client, secret, sub = sys.argv[1:5]
    cred = ClientSecretCredential(tenant, client, secret)  # the default authority: login.microsoftonline.com
    arm = ResourceManagementClient(cred, sub)  # the default base URL: management.azure.com
    name = "sdkrg-" + uuid.uuid4().hex[:6]
    arm.resource_groups.create_or_update(name, {"location": "eastus"})
    listed = [g.name for g in arm.resource_groups.list()]
    batch_mgmt = BatchManagementClient(cred, sub)
    account = "px" + uuid.uuid4().hex[:8]
    created = batch_mgmt.batch_account.begin_create(name, account, {"location": "eastus"}).result()
    shown = batch_mgmt.batch_account.get(name, account)
    keys = batch_mgmt.batch_account.get_keys(name, account)
    endpoint = "https://" + shown.account_endpoint
    aad_pools = [p.id for p in BatchClient(endpoint, cred).list_pools()]
    key_pools = [p.id for p in BatchClient(endpoint, AzureNamedKeyCredential(account, keys.primary)).list_pools()]
    batch_mgmt.batch_account.begin_delete(name, account).result()
    arm.resource_groups.begin_delete(name).result()
    print(json.dumps({"listed": name in listed, "created": created.account_endpoint, "shown": shown.account_endpoint,
                      "account": account, "aad": aad_pools, "key": key_pools,
                      "gone": name not in [g.name for g in arm.resource_groups.list()]}))
""")


def test_python_sdk_with_default_authority_and_base_url(proxied: ShoalServer) -> None:
    e = proxied.env
    proc = subprocess.run([sys.executable, "-c", SDK_SCRIPT, e["tenantId"], e["clientId"], e["clientSecret"],
                           e["subscriptionId"]], capture_output=True, text=True, env=client_env(proxied), timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["listed"] and out["gone"]
    # Batch accounts are reached at Azure's hostname for them, through the proxy, with Entra ID and Shared Key.
    assert out["created"] == out["shown"] == f"{out['account']}.eastus.batch.azure.com"
    assert out["aad"] == out["key"] == []


def test_tenant_discovery_challenge_and_adal_v1_token(proxied: ShoalServer) -> None:
    e = proxied.env
    r = requests.get(f"https://management.azure.com/subscriptions/{e['subscriptionId']}?api-version=2022-12-01",
                     proxies=proxies(), verify=proxied.ca, timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (
        f'Bearer authorization_uri="https://login.microsoftonline.com/{e["tenantId"]}", error="invalid_token", '
        "error_description=\"The authentication failed because of missing 'Authorization' header.\"")
    assert r.json()["error"]["code"] == "AuthenticationFailed"

    # ADAL v1: /{tenant}/oauth2/token with resource=, numeric expires_on; the token is good at ARM's hostname.
    t = requests.post(f"https://login.microsoftonline.com/{e['tenantId']}/oauth2/token",
                      data={"grant_type": "client_credentials", "client_id": e["clientId"],
                            "client_secret": e["clientSecret"], "resource": "https://management.core.windows.net/"},
                      proxies=proxies(), verify=proxied.ca, timeout=30)
    assert t.status_code == 200, t.text
    token = t.json()
    assert token["resource"] == "https://management.core.windows.net/"
    assert int(token["expires_on"]) > time.time()
    sub = requests.get(f"https://management.azure.com/subscriptions/{e['subscriptionId']}?api-version=2022-12-01",
                       headers={"Authorization": f"Bearer {token['access_token']}"}, proxies=proxies(),
                       verify=proxied.ca, timeout=30)
    assert sub.status_code == 200, sub.text
    assert sub.json()["tenantId"] == e["tenantId"]

    # A long-running operation's Location names the host the client came to.
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    group = f"https://management.azure.com/subscriptions/{e['subscriptionId']}/resourcegroups/px-{uuid.uuid4().hex[:6]}"
    put = requests.put(f"{group}?api-version=2024-11-01", json={"location": "eastus"}, headers=auth,
                       proxies=proxies(), verify=proxied.ca, timeout=30)
    assert put.status_code == 201, put.text
    deleted = requests.delete(f"{group}?api-version=2024-11-01", headers=auth, proxies=proxies(),
                              verify=proxied.ca, timeout=30)
    assert deleted.status_code == 202
    assert deleted.headers["Location"].startswith("https://management.azure.com/subscriptions/")

    # Discovery documents name the host the client came to.
    doc = requests.get(f"https://login.microsoftonline.com/{e['tenantId']}/v2.0/.well-known/openid-configuration",
                       proxies=proxies(), verify=proxied.ca, timeout=30).json()
    assert doc["token_endpoint"] == f"https://login.microsoftonline.com/{e['tenantId']}/oauth2/v2.0/token"
    # ...and Shoal's own address still answers with its own.
    direct = requests.get(f"{proxied.base_url}/{e['tenantId']}/v2.0/.well-known/openid-configuration",
                          verify=proxied.ca, timeout=30).json()
    assert direct["token_endpoint"].startswith(proxied.base_url + "/")


def test_azure_hostnames() -> None:
    assert azure_hosts.normalize("Management.Azure.com:443") == "management.azure.com"
    assert azure_hosts.role("management.azure.com") == azure_hosts.role("management.core.windows.net") == "arm"
    assert azure_hosts.role("login.microsoftonline.com") == "login"
    assert azure_hosts.role("acct1.eastus.batch.azure.com") == "batch"
    assert azure_hosts.batch_account("acct1.eastus.batch.azure.com") == "acct1"
    assert azure_hosts.batch_host("acct1", "East US") == "acct1.eastus.batch.azure.com"
    for other in ("management.azure.com:8443", "evil.management.azure.com", "example.com", "batch.azure.com",
                  "a.b.c.batch.azure.com.evil", "login.microsoftonline.com.evil"):
        assert azure_hosts.role(azure_hosts.normalize(other)) is None, other


def test_other_hosts_are_refused_without_a_connection(proxied: ShoalServer) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(1.0)
    port = listener.getsockname()[1]
    try:
        for target in ("example.com:443", f"127.0.0.1:{port}", "management.azure.com:80"):
            sock, head = connect(target)
            sock.close()
            assert head.startswith(b"HTTP/1.1 403 "), (target, head)
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing was connected to on the client's behalf
    finally:
        listener.close()
    # Not a forward proxy for plain HTTP either.
    r = requests.get("http://example.com/", proxies={"http": proxy_url()}, timeout=30)
    assert r.status_code == 405


@pytest.fixture
def echo_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = conn.recv(1024)
                conn.sendall(b"echo:" + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    listener.close()


def test_standalone_proxy_passes_other_hosts_through_when_allowed(proxied: ShoalServer, echo_server: int) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "proxy", "--port", str(port), "--state-dir",
                             str(proxied.state_dir), "--proxy-passthrough"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else b""
                time.sleep(0.1)
        sock, head = connect(f"127.0.0.1:{echo_server}", port)
        assert head.startswith(b"HTTP/1.1 200 "), head
        sock.sendall(b"hello")
        assert sock.recv(1024) == b"echo:hello"
        sock.close()
        # Azure's names are still answered by Shoal, not passed through.
        r = requests.get("https://management.azure.com/metadata/endpoints?api-version=2022-09-01",
                         proxies={"https": f"http://127.0.0.1:{port}"}, verify=proxied.ca, timeout=30)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
