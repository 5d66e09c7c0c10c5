"""Batch data-plane conventions: OData queries and paging, ETags and conditions, Shared Key freshness, ids."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.batch import models as bm
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceModifiedError

from batch_fixtures import LOCATION, NODE_AGENT, create_account
from shoal.azure import Shoal


@pytest.fixture(scope="module")
def setup(shoal: Shoal) -> tuple[Any, Any, str]:
    from azure.mgmt.resource.resources.models import ResourceGroup

    group = f"conv-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(shoal, group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="conv", vm_size="standard_d2s_v3", target_dedicated_nodes=5, resize_timeout=timedelta(minutes=20),
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest"),
            node_agent_sku_id=NODE_AGENT)))
    deadline = time.monotonic() + 60
    while not (client.get_pool("conv").allocation_state == "steady" and
               all(n.state == "idle" for n in client.list_nodes("conv"))):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return account, client, group


def test_filter_select_and_paging(setup: tuple[Any, Any, str]) -> None:
    _, client, _ = setup
    assert len(list(client.list_nodes("conv", filter="state eq 'idle'"))) == 5
    assert list(client.list_nodes("conv", filter="state eq 'running'")) == []
    selected = list(client.list_nodes("conv", select=["id", "state"]))
    assert selected and all(n.ip_address is None and n.state == "idle" for n in selected)
    # The SDK follows odata.nextLink across pages of 2.
    assert len(list(client.list_nodes("conv", max_results=2))) == 5
    with pytest.raises(HttpResponseError) as info:
        list(client.list_nodes("conv", filter="state eq"))
    assert info.value.status_code == 400


def test_etags_and_conditions(setup: tuple[Any, Any, str]) -> None:
    _, client, _ = setup
    pool = client.get_pool("conv")
    assert pool.etag.startswith("0x")
    assert pool.resize_timeout == timedelta(minutes=20)  # sent as PT20M00S by the SDK, answered canonically
    with pytest.raises(ResourceModifiedError):
        client.get_pool("conv", etag=pool.etag, match_condition=MatchConditions.IfModified)
    with pytest.raises(ResourceModifiedError):
        client.update_pool("conv", bm.BatchPoolUpdateOptions(metadata=[bm.BatchMetadataItem(name="a", value="1")]),
                           etag="0x1", match_condition=MatchConditions.IfNotModified)
    client.update_pool("conv", bm.BatchPoolUpdateOptions(metadata=[bm.BatchMetadataItem(name="a", value="1")]),
                       etag=pool.etag, match_condition=MatchConditions.IfNotModified)
    updated = client.get_pool("conv")
    assert updated.etag != pool.etag and updated.metadata[0].value == "1"


def test_stale_ocp_date_is_refused(shoal: Shoal, setup: tuple[Any, Any, str]) -> None:
    account, _, group = setup
    keys = shoal.batch_mgmt_client().batch_account.get_keys(group, account.name)
    client = shoal.batch_client(account.account_endpoint, credential=AzureNamedKeyCredential(account.name,
                                                                                            keys.primary))
    assert client.get_pool("conv").id == "conv"
    with pytest.raises(HttpResponseError) as info:
        client.get_pool("conv", ocp_date=datetime.now(UTC) - timedelta(minutes=20))
    assert info.value.status_code == 403 and info.value.error.code == "AuthenticationFailed"


def test_request_ids_and_error_envelope(shoal: Shoal, setup: tuple[Any, Any, str]) -> None:
    account, _, _ = setup
    token = shoal.credential().get_token("https://batch.core.windows.net//.default").token
    cid = str(uuid.uuid4())
    r = requests.get(f"https://{account.account_endpoint}/pools/missing?api-version=2025-06-01",
                     headers={"Authorization": f"Bearer {token}", "client-request-id": cid},
                     verify=shoal.ca_bundle, timeout=30)
    assert r.status_code == 404
    assert r.headers["client-request-id"] == cid and r.headers["request-id"]
    body = r.json()
    assert body["code"] == "PoolNotFound" and body["message"]["lang"] == "en-US"
    r = requests.get(f"https://{account.account_endpoint}/pools", headers={"Authorization": f"Bearer {token}"},
                     verify=shoal.ca_bundle, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "MissingRequiredQueryParameter"
