"""Rule 12: pools of UserSubscription accounts live in the user's subscription (a Batch-managed resource group
with a scale set per pool) and their nodes count against the subscription's regional vCPU quota, with the VMs;
pools of BatchService accounts do neither."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.batch.models import KeyVaultReference
from azure.mgmt.compute.models import HardwareProfile, StorageProfile, VirtualMachine

from batch_fixtures import HOST, LOCATION, NODE_AGENT, create_account, prepare_image, wait_for
from harness import ShoalServer, database_of_its_own
from shoal.azure import Shoal


@pytest.fixture
def small_quota(database_url: str | None) -> Iterator[ShoalServer]:
    srv = ShoalServer(database_of_its_own(database_url), extra_args=["--subscription-core-quota", "8"]).start()
    yield srv
    srv.cleanup()


def cores(shoal: Shoal) -> tuple[int, int]:
    usage = {u.name.value: u for u in shoal.compute_client().usage.list(LOCATION)}
    return usage["cores"].current_value, usage["cores"].limit


def vm(shoal: Shoal, group: str, name: str) -> Any:
    return shoal.compute_client().virtual_machines.begin_create_or_update(group, name, VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=HOST))).result()


def make_pool(client: Any, pool_id: str, image_id: str, nodes: int) -> None:
    client.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image_id),
            node_agent_sku_id=NODE_AGENT)))


def test_user_subscription_pools_use_the_subscriptions_quota_and_resources(small_quota: ShoalServer) -> None:
    shoal = Shoal.from_env_json(small_quota.env)
    image = prepare_image(shoal)  # its preparation VM (2 vCPUs, with a data disk) still exists
    prep = shoal.compute_client().virtual_machines.get(image.group, "prep")
    assert prep.hardware_profile.vm_size == "Standard_D2s_v3"  # not the data disk's size
    assert cores(shoal) == (2, 8)
    user = create_account(shoal, image.group, pool_allocation_mode="UserSubscription",
                          key_vault_reference=KeyVaultReference(
                              id=f"/subscriptions/{shoal.subscription_id}/resourceGroups/{image.group}/providers/"
                                 "Microsoft.KeyVault/vaults/kv1", url="https://kv1.vault.azure.net/"))
    client = shoal.batch_client(user.account_endpoint)
    make_pool(client, "mine", image.version_id, 4)  # 8 vCPUs wanted, 6 left
    pool = wait_for(lambda: (p := client.get_pool("mine")).allocation_state == "steady" and p, "steady")
    assert pool.current_dedicated_nodes == 3
    assert [e.code for e in pool.resize_errors] == ["SubscriptionCoreQuotaReached"]
    assert cores(shoal) == (8, 8)

    # The pool's machines show in the subscription: a resource group managed by the pool, with a scale set.
    resources = shoal.resource_client()
    group = resources.resource_groups.get(f"batch-{user.name}-mine")
    assert group.managed_by.lower() == f"{user.id}/pools/mine".lower()
    sets = list(resources.resources.list_by_resource_group(group.name))
    assert [(r.type, r.name, r.sku.capacity) for r in sets] == [("Microsoft.Compute/virtualMachineScaleSets",
                                                                 "mine", 4)]

    # The quota is the subscription's: a new VM does not fit either.
    with pytest.raises(HttpResponseError) as info:
        vm(shoal, image.group, "one-more")
    assert info.value.status_code == 409 and "Total Regional Cores quota" in info.value.message

    # BatchService accounts have their own quotas: their nodes do not count in the subscription.
    service = create_account(shoal, image.group)
    other = shoal.batch_client(service.account_endpoint)
    make_pool(other, "theirs", image.version_id, 2)
    wait_for(lambda: other.get_pool("theirs").current_dedicated_nodes == 2, "BatchService nodes")
    assert cores(shoal) == (8, 8)
    with pytest.raises(HttpResponseError):
        resources.resource_groups.get(f"batch-{service.name}-theirs")

    # Deleting the pool frees the quota and removes its managed resource group.
    client.begin_delete_pool("mine", polling_interval=1).result()
    wait_for(lambda: cores(shoal) == (2, 8), "quota freed")
    assert not resources.resource_groups.check_existence(f"batch-{user.name}-mine")
    vm(shoal, image.group, f"fits-{uuid.uuid4().hex[:4]}")
    assert cores(shoal) == (4, 8)
