"""The file API cannot be raced out of a task's directory.

A nonadmin task swaps ``f`` between a file and a symlink to the server's ``credentials.json``, and ``d``
between a directory and a symlink to the state directory, as fast as it can, while 2,000 requests read
``f`` and ``d/credentials.json`` through the Batch file API. Every answer is the task's own file (200) or
"not found" (404): never the secret, never a 5xx, never an aborted response. Paths with ``..`` or a NUL are
400s. (Before the agent read files from a descriptor opened beneath the task directory, a check-then-open
leaked the secret in about 3% of such requests.)
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
import requests
from azure.batch import models as bm

from batch_fixtures import HOST, LOCATION, NODE_AGENT, create_account, wait_for
from harness import ShoalServer
from shoal.azure import Shoal

API = "api-version=2025-06-01"
REQUESTS = 2000


@pytest.fixture(scope="module")
def racing(server: ShoalServer, shoal: Shoal) -> Any:
    from azure.mgmt.resource.resources.models import ResourceGroup

    group = f"race-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="race", vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher=HOST.publisher, offer=HOST.offer, sku=HOST.sku,
                                                     version=HOST.version), node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: [n for n in client.list_nodes("race") if n.state == "idle"], "an idle node")
    secret_file, secret_dir = server.state_dir / "credentials.json", server.state_dir
    swapper = (
        "mkdir -p d; echo safe > d/credentials.json; "
        "while :; do "
        "echo safe > f.new; mv -f f.new f; "
        f"ln -sfn {secret_file} f.lnk; mv -Tf f.lnk f; "
        "rm -rf d.new; mkdir d.new; echo safe > d.new/credentials.json; mv -Tf d.new d 2>/dev/null || "
        "{ rm -rf d; mv d.new d; }; "
        f"ln -sfn {secret_dir} d.lnk; rm -rf d; mv -Tf d.lnk d; "
        "done")
    client.create_job(bm.BatchJobCreateOptions(id="race-job", pool_info=bm.BatchPoolInfo(pool_id="race")))
    client.create_task("race-job", bm.BatchTaskCreateOptions(id="swapper", command_line=f"/bin/sh -c '{swapper}'"))
    wait_for(lambda: client.get_task("race-job", "swapper").state == "running", "the swapper runs")
    yield {"client": client, "account": account, "secret": json.loads(secret_file.read_text())["clientSecret"]}
    client.terminate_task("race-job", "swapper")


def test_a_task_swapping_links_never_gets_a_host_file_served(shoal: Shoal, racing: dict[str, Any]) -> None:
    token = shoal.credential().get_token("https://batch.core.windows.net//.default").token
    base = f"https://{racing['account'].account_endpoint}/jobs/race-job/tasks/swapper/files"
    statuses: Counter[int] = Counter()
    leaks = []
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        for i in range(REQUESTS):
            path = "wd/f" if i % 2 else "wd/d/credentials.json"
            r = http.get(f"{base}/{path}?{API}", timeout=30, verify=shoal.ca_bundle)
            statuses[r.status_code] += 1
            if racing["secret"] in r.text or "clientSecret" in r.text:
                leaks.append(path)
            elif r.status_code == 200:
                assert r.content == b"safe\n", (path, r.content[:200])
            else:
                assert r.status_code == 404 and r.json()["code"] == "FileNotFound", (r.status_code, r.text[:300])
        listing = http.get(f"{base}?{API}&recursive=true", timeout=30, verify=shoal.ca_bundle)
    assert leaks == [] and set(statuses) <= {200, 404}, (statuses, leaks[:5])
    assert statuses[200] > 0  # the race was run against files that were there
    assert listing.status_code == 200 and racing["secret"] not in listing.text
    assert all(not e["name"].endswith("credentials.json") or e["name"].startswith("wd/d")
               for e in listing.json()["value"])


@pytest.mark.parametrize("path", ["wd/%2e%2e/%2e%2e/%2e%2e/x", "wd/a%00b", "..%00", "%2e%2e"])
def test_paths_that_leave_the_directory_or_hold_nul_are_400(shoal: Shoal, racing: dict[str, Any],
                                                            path: str) -> None:
    token = shoal.credential().get_token("https://batch.core.windows.net//.default").token
    r = requests.get(f"https://{racing['account'].account_endpoint}/jobs/race-job/tasks/swapper/files/{path}?{API}",
                     headers={"Authorization": f"Bearer {token}"}, verify=shoal.ca_bundle, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "InvalidPropertyValue", r.text
