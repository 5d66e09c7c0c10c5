"""The source document's rules for pools from custom images, through the official clients (issue rules 2, 5, 7,
8, 9, 10): each refusal has Azure's status and error code, a message that says what to do, and leaves nothing
behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.mgmt.batch.models import (
    DeploymentConfiguration,
    FixedScaleSettings,
    ImageReference,
    Pool,
    ScaleSettings,
    VirtualMachineConfiguration,
)
from azure.mgmt.compute.models import (
    CreationData,
    EncryptionSettingsCollection,
    Gallery,
    GalleryArtifactVersionFullSource,
    GalleryImage,
    GalleryImageIdentifier,
    GalleryImageVersion,
    GalleryImageVersionPublishingProfile,
    GalleryImageVersionStorageProfile,
    HardwareProfile,
    Image,
    ImageOSDisk,
    ImageStorageProfile,
    Plan,
    Snapshot,
    StorageProfile,
    SubResource,
    TargetRegion,
    VirtualMachine,
    VirtualMachineExtension,
    VirtualMachineExtensionProperties,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from batch_fixtures import HOST, LOCATION, NODE_AGENT, create_account
from harness import ShoalServer, database_of_its_own
from shoal.azure import Shoal

LIMITS = ["--image-dedicated-limit", "3", "--image-low-priority-limit", "2", "--captured-image-limit", "1"]


@pytest.fixture(scope="module")
def limited(database_url: str | None) -> Iterator[ShoalServer]:
    """A server of this module's own, with node limits small enough to reach."""
    srv = ShoalServer(database_of_its_own(database_url), extra_args=LIMITS).start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def world(limited: ShoalServer) -> dict[str, Any]:
    """Images with every property the rules look at, made the way a user would, and two accounts."""
    shoal = Shoal.from_env_json(limited.env)
    group = f"rules-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    compute = shoal.compute_client()

    def vm(name: str, image: Any = HOST, plan: Any = None) -> Any:
        return compute.virtual_machines.begin_create_or_update(group, name, VirtualMachine(
            location=LOCATION, plan=plan, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
            storage_profile=StorageProfile(image_reference=image))).result()

    def image_from_snapshot(name: str, machine: Any, *, encrypted: bool = False) -> str:
        snap = compute.snapshots.begin_create_or_update(group, f"{name}-snap", Snapshot(
            location=LOCATION, creation_data=CreationData(
                create_option="Copy", source_resource_id=machine.storage_profile.os_disk.managed_disk.id),
            encryption_settings_collection=EncryptionSettingsCollection(enabled=True) if encrypted else None)
        ).result()
        return str(compute.images.begin_create_or_update(group, name, Image(location=LOCATION, storage_profile=(
            ImageStorageProfile(os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized",
                                                    snapshot=SubResource(id=snap.id)))))).result().id)

    def capture(name: str, machine: Any) -> str:
        compute.virtual_machines.begin_deallocate(group, machine.name).result()
        compute.virtual_machines.generalize(group, machine.name)
        compute.gallery_images.begin_create_or_update(group, "gal", name, GalleryImage(
            location=LOCATION, os_type="Linux", os_state="Generalized",
            identifier=GalleryImageIdentifier(publisher="me", offer=name, sku="host"))).result()
        return str(compute.gallery_image_versions.begin_create_or_update(group, "gal", name, "1.0.0",
                                                                         GalleryImageVersion(
            location=LOCATION, storage_profile=GalleryImageVersionStorageProfile(
                source=GalleryArtifactVersionFullSource(id=machine.id)))).result().id)

    compute.galleries.begin_create_or_update(group, "gal", Gallery(location=LOCATION)).result()
    plain = vm("plain")
    images = {"plain": image_from_snapshot("plain", plain), "encrypted": image_from_snapshot("enc", plain,
                                                                                           encrypted=True)}
    licensed = vm("licensed", image={"publisher": "example-isv", "offer": "licensed-app", "sku": "standard",
                                     "version": "latest"},
                  plan=Plan(name="standard", product="licensed-app", publisher="example-isv"))
    images["third-party"] = image_from_snapshot("licensed", licensed)
    extended = vm("extended")
    compute.virtual_machine_extensions.begin_create_or_update(group, "extended", "custom", VirtualMachineExtension(
        location=LOCATION, properties=VirtualMachineExtensionProperties(
            publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1",
            settings={"commandToExecute": "true"}))).result()
    images["extensions"] = capture("ext", extended)
    images["captured"] = capture("cap", vm("captured"))
    compute.gallery_images.begin_create_or_update(group, "gal", "west", GalleryImage(
        location=LOCATION, os_type="Linux", os_state="Generalized",
        identifier=GalleryImageIdentifier(publisher="me", offer="west", sku="host"))).result()
    images["west-only"] = str(compute.gallery_image_versions.begin_create_or_update(group, "gal", "west", "1.0.0",
                                                                                  GalleryImageVersion(
        location=LOCATION, publishing_profile=GalleryImageVersionPublishingProfile(
            target_regions=[TargetRegion(name=LOCATION, regional_replica_count=1)]),
        storage_profile=GalleryImageVersionStorageProfile(source=GalleryArtifactVersionFullSource(
            id=images["plain"])))).result().id)
    west = create_account(shoal, group)
    east = shoal.batch_mgmt_client().batch_account.begin_create(group, f"east{uuid.uuid4().hex[:8]}", {
        "location": "eastus"}).result()
    return {"shoal": shoal, "group": group, "images": images, "west": west, "east": east, "server": limited}


def data_client(world: dict[str, Any], account: str = "west") -> Any:
    return world["shoal"].batch_client(world[account].account_endpoint)


def pool(pool_id: str, image_id: str, dedicated: int = 0, low: int = 0, agent: str = NODE_AGENT) -> Any:
    return bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=dedicated, target_low_priority_nodes=low,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image_id), node_agent_sku_id=agent))


def refused(client: Any, options: Any) -> Any:
    """A data-plane pool create that must fail and leave the account's pools as they were."""
    before = sorted(p.id for p in client.list_pools())
    with pytest.raises(HttpResponseError) as info:
        client.create_pool(options)
    assert sorted(p.id for p in client.list_pools()) == before
    return info.value


def mgmt_pool(image_id: str, dedicated: int = 0, low: int = 0, agent: str = NODE_AGENT) -> Pool:
    """The seed's management-plane pool: a managed image id in deploymentConfiguration."""
    return Pool(vm_size="STANDARD_D2S_V3", deployment_configuration=DeploymentConfiguration(
        virtual_machine_configuration=VirtualMachineConfiguration(
            image_reference=ImageReference(id=image_id), node_agent_sku_id=agent)),
        scale_settings=ScaleSettings(fixed_scale=FixedScaleSettings(target_dedicated_nodes=dedicated,
                                                                    target_low_priority_nodes=low)))


def mgmt_refused(world: dict[str, Any], account: str, pool_id: str, model: Pool) -> Any:
    mgmt, group, name = world["shoal"].batch_mgmt_client(), world["group"], world[account].name
    before = sorted(p.name for p in mgmt.pool.list_by_batch_account(group, name))
    with pytest.raises(HttpResponseError) as info:
        mgmt.pool.create(group, name, pool_id, model)
    assert sorted(p.name for p in mgmt.pool.list_by_batch_account(group, name)) == before
    return info.value


def values(error: Any) -> dict[str, str]:
    return {d.code: d.message for d in error.error.details}


@pytest.mark.parametrize("which, words", [("third-party", "third-party"), ("encrypted", "encrypted")])
def test_managed_images_from_the_wrong_kind_of_vm_are_refused(world: dict[str, Any], which: str, words: str) -> None:
    error = mgmt_refused(world, "west", f"p-{which}", mgmt_pool(world["images"][which]))
    assert error.status_code == 400 and error.error.code == "InvalidPropertyValue"
    assert words in error.error.message and world["images"][which] in error.error.message


def test_gallery_versions_from_a_vm_with_extensions_are_refused(world: dict[str, Any]) -> None:
    error = refused(data_client(world), pool("p-ext", world["images"]["extensions"]))
    assert error.status_code == 400 and error.error.code == "InvalidPropertyValue"
    assert "extensions" in error.error.message and "CustomScript" in error.error.message


def test_node_agent_must_match_the_base_image(world: dict[str, Any]) -> None:
    error = refused(data_client(world), pool("p-agent", world["images"]["west-only"], agent="batch.node.ubuntu 22.04"))
    assert error.status_code == 400 and error.error.code == "InvalidPropertyValue"
    assert values(error)["PropertyName"] == "virtualMachineConfiguration.nodeAgentSKUId"
    assert NODE_AGENT in error.error.message
    error = mgmt_refused(world, "west", "m-agent", mgmt_pool(world["images"]["plain"], agent="batch.node.ubuntu 22.04"))
    assert error.status_code == 400 and NODE_AGENT in error.error.message


def test_the_image_must_be_in_the_accounts_region(world: dict[str, Any]) -> None:
    error = refused(data_client(world, "east"), pool("p-west", world["images"]["west-only"]))
    assert error.status_code == 400 and error.error.code == "InvalidPropertyValue"
    assert "no replica in the Batch account's region 'eastus'" in error.error.message
    error = mgmt_refused(world, "east", "m-west", mgmt_pool(world["images"]["plain"]))
    assert error.status_code == 400 and "'westus'" in error.error.message and "'eastus'" in error.error.message


def test_captured_images_back_small_pools_only(world: dict[str, Any]) -> None:
    client = data_client(world)
    error = refused(client, pool("p-captured-big", world["images"]["captured"], dedicated=2))
    assert error.status_code == 400 and "at most 1 dedicated" in error.error.message
    assert "snapshots" in error.error.message
    client.create_pool(pool("p-captured", world["images"]["captured"], dedicated=0))
    with pytest.raises(HttpResponseError) as info:
        client.begin_resize_pool("p-captured", bm.BatchPoolResizeOptions(target_dedicated_nodes=2),
                                 polling_interval=1).result()
    assert info.value.status_code == 400 and "at most 1 dedicated" in info.value.error.message
    assert client.get_pool("p-captured").target_dedicated_nodes == 0  # unchanged
    client.begin_delete_pool("p-captured", polling_interval=1).result()


def test_pools_of_one_image_lineage_share_the_node_limit(world: dict[str, Any]) -> None:
    mgmt, group = world["shoal"].batch_mgmt_client(), world["group"]
    west = world["west"]
    mgmt.pool.create(group, west.name, "lineage-a", mgmt_pool(world["images"]["plain"], dedicated=2))
    # A gallery version made from that image shares its limit (3 dedicated here), in any account.
    second = create_account(world["shoal"], group)
    world["second"] = second
    error = refused(world["shoal"].batch_client(second.account_endpoint),
                    pool("lineage-b", world["images"]["west-only"], dedicated=2))
    assert error.status_code == 400 and "'lineage-a' (2)" in error.error.message
    assert "at most 1" in error.error.message
    error = mgmt_refused(world, "second", "lineage-m", mgmt_pool(world["images"]["plain"], dedicated=2))
    assert error.status_code == 400 and "lineage-a" in error.error.message
    client = data_client(world)
    client.create_pool(pool("lineage-c", world["images"]["west-only"], dedicated=1, low=2))  # exactly the limits
    with pytest.raises(HttpResponseError) as info:
        client.begin_resize_pool("lineage-c", bm.BatchPoolResizeOptions(
            target_dedicated_nodes=1, target_low_priority_nodes=3), polling_interval=1).result()
    assert info.value.status_code == 400 and "low-priority" in info.value.error.message
    assert client.get_pool("lineage-c").target_low_priority_nodes == 2
    with pytest.raises(HttpResponseError) as info:
        mgmt.pool.update(group, west.name, "lineage-a", Pool(scale_settings=ScaleSettings(
            fixed_scale=FixedScaleSettings(target_dedicated_nodes=3))))
    assert info.value.status_code == 400 and "lineage-c" in info.value.message
    mgmt.pool.begin_delete(group, west.name, "lineage-a").result()
    client.begin_delete_pool("lineage-c", polling_interval=1).result()


def test_the_caller_must_be_able_to_read_the_image(world: dict[str, Any]) -> None:
    shoal, server = world["shoal"], world["server"]
    principal = server.cli_json("principal", "create", f"pool-maker-{uuid.uuid4().hex[:6]}", "--json")
    account = world["west"]
    server.cli("role-assignment", "create", "--assignee", principal["clientId"], "--role", "Contributor",
               "--scope", account.id)
    credential = shoal.credential(principal["clientId"], principal["clientSecret"])
    client = shoal.batch_client(account.account_endpoint, credential=credential)
    version = world["images"]["west-only"]
    error = refused(client, pool("p-unreadable", version))
    assert error.status_code == 403 and error.error.code == "AuthorizationFailed"
    assert version in error.error.message and "galleries/images/versions/read" in error.error.message
    server.cli("role-assignment", "create", "--assignee", principal["clientId"], "--role", "Reader",
               "--scope", version.rsplit("/images/", 1)[0])  # the gallery
    client.create_pool(pool("p-readable", version))
    client.begin_delete_pool("p-readable", polling_interval=1).result()


def test_an_image_of_another_subscription_is_refused() -> None:
    # One Shoal has one subscription, so no client can name an image in another one: the rule itself is checked.
    from types import SimpleNamespace

    from shoal.core import errors
    from shoal.domain.batch import image_rules

    account = SimpleNamespace(subscription_id="11111111-1111-1111-1111-111111111111", location="westus", name="a")
    image = "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/g/providers/Microsoft.Compute/images/i"
    with pytest.raises(errors.AzureError) as info:
        image_rules.same_subscription_and_region(account, {"location": "westus"}, image)  # type: ignore[arg-type]
    assert info.value.status == 400 and "22222222-2222-2222-2222-222222222222" in info.value.message
    assert "11111111-1111-1111-1111-111111111111" in info.value.message


def test_data_plane_managed_images_need_api_version_2019_08_01(world: dict[str, Any]) -> None:
    image = world["images"]["plain"]
    error = refused(data_client(world), pool("p-managed", image))
    assert error.status_code == 400 and error.error.code == "InvalidPropertyValue"
    assert "2019-08-01.10.0" in error.error.message and "Gallery" in error.error.message
    old = world["shoal"].batch_client(world["west"].account_endpoint, api_version="2019-08-01.10.0")
    old.create_pool(pool("p-managed-old", image))
    assert old.get_pool("p-managed-old").virtual_machine_configuration.image_reference.virtual_machine_image_id \
        .lower() == image.lower()
    old.begin_delete_pool("p-managed-old", polling_interval=1).result()
