"""The official az CLI's Batch commands against Shoal."""

from __future__ import annotations

import time
import uuid

import pytest

from batch_fixtures import NODE_AGENT, prepare_image
from conftest import AzCli
from shoal.azure import Shoal

pytestmark = pytest.mark.az


def test_az_batch_account_pool_and_nodes(az: AzCli, shoal: Shoal) -> None:
    image = prepare_image(shoal)
    name = f"azb{uuid.uuid4().hex[:10]}"
    account = az.json("batch", "account", "create", "-g", image.group, "-n", name, "-l", "westus")
    assert account["accountEndpoint"].endswith(f"/batch/{name}")
    keys = az.json("batch", "account", "keys", "list", "-g", image.group, "-n", name)
    assert keys["primary"] and keys["secondary"]

    az.run("batch", "account", "login", "-g", image.group, "-n", name)  # Entra ID
    az.run("batch", "pool", "create", "--id", "azpool", "--vm-size", "STANDARD_D2S_V3", "--image", image.version_id,
           "--node-agent-sku-id", NODE_AGENT, "--target-dedicated-nodes", "1")
    deadline = time.monotonic() + 120
    while az.json("batch", "pool", "show", "--pool-id", "azpool")["allocationState"] != "steady":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    az.run("batch", "pool", "resize", "--pool-id", "azpool", "--target-dedicated-nodes", "2")
    while True:
        pool = az.json("batch", "pool", "show", "--pool-id", "azpool")
        if pool["allocationState"] == "steady":
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert pool["currentDedicatedNodes"] == 2 and pool["targetDedicatedNodes"] == 2
    nodes = az.json("batch", "node", "list", "--pool-id", "azpool")
    assert len(nodes) == 2 and all(n["vmSize"].lower() == "standard_d2s_v3" for n in nodes)

    # With Shared Key the same custom-image pool is refused (Entra ID is required for custom images).
    az.run("batch", "account", "login", "-g", image.group, "-n", name, "--shared-key-auth")
    assert az.json("batch", "pool", "show", "--pool-id", "azpool")["id"] == "azpool"
    refused = az.run("batch", "pool", "create", "--id", "skpool", "--vm-size", "STANDARD_D2S_V3", "--image",
                     image.version_id, "--node-agent-sku-id", NODE_AGENT, check=False)
    assert refused.returncode != 0 and "Entra ID" in refused.stderr
    az.run("batch", "pool", "delete", "--pool-id", "azpool", "--yes")
