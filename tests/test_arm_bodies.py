"""The management plane's wire models: every ARM request body has Azure's names, types, enums and ranges; a body
that does not fit is a 400 in ARM's envelope naming the property path, and nothing is stored.

Fast unit tests of the models (bodies the official SDKs build pass through unchanged; enums are read without
regard to case; strings are not numbers; arbitrary JSON never raises anything but a 400), then one bad body per
resource type against a running server over raw HTTPS."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
import requests
from azure.mgmt.batch import models as bmm
from azure.mgmt.compute import models as cm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import ShoalServer
from shoal.azure import Shoal
from shoal.core import errors
from shoal.domain.compute.kinds import ArmBody
from shoal.schemas import arm, arm_batch, arm_bodies, arm_compute

LOCATION = "westus"
SUB = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/g/providers/Microsoft.Compute"


def refused(body: Any, model: type[arm_bodies.Wire]) -> tuple[str, str | None, str]:
    with pytest.raises(errors.AzureError) as info:
        arm_bodies.parse(body, model)
    assert info.value.status == 400
    return info.value.code, info.value.target, info.value.message


# --- bodies as the official SDKs build them -----------------------------------------------------------------
def sdk_bodies() -> list[tuple[type[arm_bodies.Wire], dict[str, Any]]]:
    ref = cm.ImageReference(publisher="shoal", offer="host", sku="host", version="latest")
    vm = cm.VirtualMachine(
        location=LOCATION, tags={"team": "batch"}, hardware_profile=cm.HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=cm.StorageProfile(
            image_reference=ref, os_disk=cm.OSDisk(create_option="FromImage", disk_size_gb=30, caching="ReadWrite",
                                                   managed_disk=cm.ManagedDiskParameters(
                                                       storage_account_type="Premium_LRS"), delete_option="Delete"),
            data_disks=[cm.DataDisk(lun=0, create_option="Empty", disk_size_gb=4),
                        cm.DataDisk(lun=63, create_option="Attach", managed_disk=cm.ManagedDiskParameters(
                            id=f"{SUB}/disks/d"))]),
        os_profile=cm.OSProfile(computer_name="vm1", admin_username="azure", custom_data="ZWNobyBoaQ==",
                                linux_configuration=cm.LinuxConfiguration(
                                    disable_password_authentication=True, ssh=cm.SshConfiguration(public_keys=[
                                        cm.SshPublicKey(path="/home/azure/.ssh/authorized_keys",
                                                        key_data="ssh-ed25519 AAAA")]))),
        network_profile=cm.NetworkProfile(network_interfaces=[cm.NetworkInterfaceReference(
            id=f"{SUB}/networkInterfaces/nic", primary=True)]),
        security_profile=cm.SecurityProfile(security_type="TrustedLaunch", uefi_settings=cm.UefiSettings(
            secure_boot_enabled=True, v_tpm_enabled=True)),
        diagnostics_profile=cm.DiagnosticsProfile(boot_diagnostics=cm.BootDiagnostics(enabled=True)),
        priority="Spot", eviction_policy="Deallocate", billing_profile=cm.BillingProfile(max_price=-1),
        extensions_time_budget="PT1H30M", user_data="aGVsbG8=")
    disk = cm.Disk(location=LOCATION, sku=cm.DiskSku(name="StandardSSD_LRS"), disk_size_gb=8, os_type="Linux",
                   hyper_v_generation="V2", creation_data=cm.CreationData(create_option="Empty"),
                   network_access_policy="AllowAll", public_network_access="Enabled",
                   encryption=cm.Encryption(type="EncryptionAtRestWithPlatformKey"))
    snapshot = cm.Snapshot(location=LOCATION, incremental=True, sku=cm.SnapshotSku(name="Standard_ZRS"),
                           creation_data=cm.CreationData(create_option="Copy", source_resource_id=f"{SUB}/disks/d"))
    image = cm.Image(location=LOCATION, hyper_v_generation="V1", storage_profile=cm.ImageStorageProfile(
        os_disk=cm.ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=cm.SubResource(
            id=f"{SUB}/snapshots/os"), caching="ReadWrite", storage_account_type="Standard_LRS"),
        data_disks=[cm.ImageDataDisk(lun=1, managed_disk=cm.SubResource(id=f"{SUB}/disks/d"), disk_size_gb=4),
                    cm.ImageDataDisk(lun=2, blob_uri="https://example.org/d.vhd")], zone_resilient=False))
    gallery = cm.Gallery(location=LOCATION, description="images")
    definition = cm.GalleryImage(
        location=LOCATION, os_type="Linux", os_state="Generalized", hyper_v_generation="V1",
        end_of_life_date="2030-01-01T00:00:00Z", architecture="x64",
        identifier=cm.GalleryImageIdentifier(publisher="me", offer="batch", sku="host"),
        recommended=cm.RecommendedMachineConfiguration(v_cp_us=cm.ResourceRange(min=1, max=16)),
        features=[cm.GalleryImageFeature(name="SecurityType", value="TrustedLaunch")])
    version = cm.GalleryImageVersion(
        location=LOCATION, publishing_profile=cm.GalleryImageVersionPublishingProfile(
            replica_count=1, exclude_from_latest=False, storage_account_type="Standard_LRS",
            target_regions=[cm.TargetRegion(name="West US", regional_replica_count=2,
                                            storage_account_type="Standard_ZRS")]),
        storage_profile=cm.GalleryImageVersionStorageProfile(
            source=cm.GalleryArtifactVersionFullSource(id=f"{SUB}/images/img"),
            os_disk_image=cm.GalleryOSDiskImage(host_caching="ReadOnly"),
            data_disk_images=[cm.GalleryDataDiskImage(lun=0, source=cm.GalleryDiskImageSource(
                id=f"{SUB}/snapshots/data"))]))
    extension = cm.VirtualMachineExtension(location=LOCATION, properties=cm.VirtualMachineExtensionProperties(
        publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1",
        auto_upgrade_minor_version=True, settings={"commandToExecute": "true"}))
    command = cm.RunCommandInput(command_id="RunShellScript", script=["echo hi"],
                                 parameters=[cm.RunCommandInputParameter(name="A", value="1")])
    access = cm.GrantAccessData(access="Read", duration_in_seconds=3600, file_format="VHD")
    account = bmm.BatchAccountCreateParameters(
        location=LOCATION, tags={"a": "b"}, properties=bmm.BatchAccountCreateProperties(
            pool_allocation_mode="BatchService", public_network_access="Enabled",
            allowed_authentication_modes=["AAD", "SharedKey"],
            auto_storage=bmm.AutoStorageBaseProperties(storage_account_id="/subscriptions/s/x"),
            network_profile=bmm.NetworkProfile(account_access=bmm.EndpointAccessProfile(
                default_action="Deny", ip_rules=[bmm.IPRule(action="Allow", value="10.0.0.0/24")]))))
    pool = bmm.Pool(
        display_name="p", vm_size="STANDARD_D2S_V3", task_slots_per_node=2, inter_node_communication="Disabled",
        deployment_configuration=bmm.DeploymentConfiguration(
            virtual_machine_configuration=bmm.VirtualMachineConfiguration(
                image_reference=bmm.ImageReference(id=f"{SUB}/galleries/g/images/i/versions/1.0.0"),
                node_agent_sku_id="batch.node.debian 12",
                data_disks=[bmm.DataDisk(lun=0, disk_size_gb=4, caching="ReadWrite")])),
        scale_settings=bmm.ScaleSettings(fixed_scale=bmm.FixedScaleSettings(
            target_dedicated_nodes=2, resize_timeout="PT15M", node_deallocation_option="TaskCompletion")),
        start_task=bmm.StartTask(command_line="/bin/true", wait_for_success=True, max_task_retry_count=-1,
                                 environment_settings=[bmm.EnvironmentSetting(name="A", value="1")],
                                 user_identity=bmm.UserIdentity(auto_user=bmm.AutoUserSpecification(
                                     scope="Pool", elevation_level="Admin"))),
        task_scheduling_policy=bmm.TaskSchedulingPolicy(node_fill_type="Pack"),
        metadata=[bmm.MetadataItem(name="k", value="v")],
        network_configuration=bmm.NetworkConfiguration(endpoint_configuration=bmm.PoolEndpointConfiguration(
            inbound_nat_pools=[bmm.InboundNatPool(
                name="ssh", protocol="TCP", backend_port=22, frontend_port_range_start=15000,
                frontend_port_range_end=15100, network_security_group_rules=[bmm.NetworkSecurityGroupRule(
                    priority=150, access="Allow", source_address_prefix="*", source_port_ranges=["*"])])])))
    auto = bmm.Pool(vm_size="STANDARD_D2S_V3", scale_settings=bmm.ScaleSettings(auto_scale=bmm.AutoScaleSettings(
        formula="$TargetDedicatedNodes = 1;", evaluation_interval="PT5M")))
    return [(arm_compute.VirtualMachine, vm.as_dict()), (arm_compute.Disk, disk.as_dict()),
            (arm_compute.Snapshot, snapshot.as_dict()), (arm_compute.Image, image.as_dict()),
            (arm_compute.Gallery, gallery.as_dict()), (arm_compute.GalleryImage, definition.as_dict()),
            (arm_compute.GalleryImageVersion, version.as_dict()),
            (arm_compute.VirtualMachineExtension, extension.as_dict()),
            (arm_compute.RunCommandInput, command.as_dict()), (arm_compute.GrantAccessData, access.as_dict()),
            (arm_batch.Account, account.as_dict()), (arm_batch.Pool, pool.as_dict()), (arm_batch.Pool, auto.as_dict()),
            (arm_batch.RegenerateKey, bmm.BatchAccountRegenerateKeyParameters(key_name="Primary").as_dict())]


@pytest.mark.parametrize("model, body", sdk_bodies(), ids=lambda x: getattr(x, "__name__", ""))
def test_bodies_the_sdks_build_pass_through_unchanged(model: type[arm_bodies.Wire], body: dict[str, Any]) -> None:
    assert arm_bodies.normalised(copy.deepcopy(body), model) == json.loads(json.dumps(body))


def test_compute_bodies_become_the_domains_envelope() -> None:
    for model, body in sdk_bodies():
        if model in arm_compute.BODIES.values():
            envelope = ArmBody.model_validate(arm_bodies.normalised(body, model))
            assert envelope.properties == body.get("properties", {})
    assert ArmBody.model_validate(arm_bodies.normalised({"properties": None}, arm_compute.Disk)).properties == {}


def test_read_only_and_unknown_properties_are_kept() -> None:
    """A body read back from a GET (provisioningState, timeCreated, diskSizeBytes...) is accepted as it is."""
    echoed = {"id": f"{SUB}/disks/d", "name": "d", "type": "Microsoft.Compute/disks", "location": LOCATION,
              "managedBy": None, "sku": {"name": "Standard_LRS", "tier": "Standard"},
              "properties": {"provisioningState": "Succeeded", "timeCreated": "2024-01-01T00:00:00.0000000Z",
                             "diskSizeBytes": 8 * 1024**3 * 1024, "diskState": "Unattached", "uniqueId": "u",
                             "diskSizeGB": 8, "creationData": {"createOption": "Empty"}, "futureProperty": [1]}}
    assert arm_bodies.normalised(echoed, arm_compute.Disk) == echoed


def test_enums_are_read_without_regard_to_case_and_stored_in_azures_spelling() -> None:
    body = {"location": LOCATION, "properties": {"osType": "linux", "osState": "GENERALIZED",
                                                 "hyperVGeneration": "v2",
                                                 "identifier": {"publisher": "p", "offer": "o", "sku": "s"}}}
    props = arm_bodies.normalised(body, arm_compute.GalleryImage)["properties"]
    assert (props["osType"], props["osState"], props["hyperVGeneration"]) == ("Linux", "Generalized", "V2")
    modes = arm_bodies.normalised({"properties": {"allowedAuthenticationModes": ["aad", "sharedkey"]}},
                                  arm_batch.Account)["properties"]["allowedAuthenticationModes"]
    assert modes == ["AAD", "SharedKey"]
    assert arm_bodies.normalised({"keyName": "secondary"}, arm_batch.RegenerateKey) == {"keyName": "Secondary"}


@pytest.mark.parametrize("model, body, code, target", [
    # wrong JSON types: strings are not numbers or booleans, and the other way round
    (arm_compute.Disk, {"properties": {"diskSizeGB": "30"}}, "InvalidRequestContent", "properties.diskSizeGB"),
    (arm_compute.VirtualMachine, {"properties": {"storageProfile": {"osDisk": {"diskSizeGB": 30.5}}}},
     "InvalidRequestContent", "properties.storageProfile.osDisk.diskSizeGB"),
    (arm_compute.VirtualMachine, {"properties": {"storageProfile": {"dataDisks": [{"lun": True}]}}},
     "InvalidRequestContent", "properties.storageProfile.dataDisks[0].lun"),
    (arm_compute.VirtualMachine, {"properties": {"hardwareProfile": {"vmSize": 2}}}, "InvalidRequestContent",
     "properties.hardwareProfile.vmSize"),
    (arm_compute.VirtualMachine, {"properties": {"osProfile": {"linuxConfiguration": {
        "disablePasswordAuthentication": "true"}}}}, "InvalidRequestContent",
     "properties.osProfile.linuxConfiguration.disablePasswordAuthentication"),
    (arm_compute.GalleryImageVersion, {"properties": {"publishingProfile": {"targetRegions": {"name": "westus"}}}},
     "InvalidRequestContent", "properties.publishingProfile.targetRegions"),
    (arm_compute.Image, {"properties": {"storageProfile": {"osDisk": {"snapshot": "/subscriptions/x"}}}},
     "InvalidRequestContent", "properties.storageProfile.osDisk.snapshot"),
    (arm_compute.Snapshot, {"tags": {"a": 1}}, "InvalidRequestContent", "tags.a"),
    (arm_compute.Disk, {"zones": "1"}, "InvalidRequestContent", "zones"),
    (arm_batch.Pool, {"properties": {"scaleSettings": {"fixedScale": {"targetDedicatedNodes": "2"}}}},
     "InvalidRequestContent", "properties.scaleSettings.fixedScale.targetDedicatedNodes"),
    (arm_batch.Pool, {"properties": {"startTask": {"waitForSuccess": 1}}}, "InvalidRequestContent",
     "properties.startTask.waitForSuccess"),
    (arm_batch.Account, {"properties": {"allowedAuthenticationModes": "AAD"}}, "InvalidRequestContent",
     "properties.allowedAuthenticationModes"),
    (arm_compute.RunCommandInput, {"commandId": "RunShellScript", "script": "ls"}, "InvalidRequestContent",
     "script"),
    (arm_compute.GrantAccessData, {"access": "Read", "durationInSeconds": "3600"}, "InvalidRequestContent",
     "durationInSeconds"),
    # Azure's ranges
    (arm_compute.VirtualMachine, {"properties": {"storageProfile": {"dataDisks": [{"lun": 64}]}}},
     "InvalidParameter", "properties.storageProfile.dataDisks[0].lun"),
    (arm_compute.Image, {"properties": {"storageProfile": {"dataDisks": [{"lun": -1}]}}}, "InvalidParameter",
     "properties.storageProfile.dataDisks[0].lun"),
    (arm_compute.VirtualMachine, {"properties": {"storageProfile": {"osDisk": {"diskSizeGB": 0}}}},
     "InvalidParameter", "properties.storageProfile.osDisk.diskSizeGB"),
    (arm_compute.Disk, {"properties": {"diskSizeGB": 2**31}}, "InvalidParameter", "properties.diskSizeGB"),
    (arm_compute.GalleryImageVersion, {"properties": {"publishingProfile": {"targetRegions": [
        {"name": "westus", "regionalReplicaCount": 0}]}}}, "InvalidParameter",
     "properties.publishingProfile.targetRegions[0].regionalReplicaCount"),
    (arm_compute.GrantAccessData, {"access": "Read", "durationInSeconds": 0}, "InvalidParameter",
     "durationInSeconds"),
    (arm_compute.VirtualMachine, {"properties": {"storageProfile": {"dataDisks": [
        {"lun": n} for n in range(65)]}}}, "InvalidParameter", "properties.storageProfile.dataDisks"),
    (arm_batch.Pool, {"properties": {"startTask": {"maxTaskRetryCount": -2}}}, "InvalidParameter",
     "properties.startTask.maxTaskRetryCount"),
    # Azure's enums
    (arm_compute.Disk, {"properties": {"creationData": {"createOption": "Clone"}}}, "InvalidParameter",
     "properties.creationData.createOption"),
    (arm_compute.Snapshot, {"sku": {"name": "UltraSSD_LRS"}}, "InvalidParameter", "sku.name"),
    (arm_compute.Image, {"properties": {"storageProfile": {"osDisk": {"osState": "Sleeping"}}}},
     "InvalidParameter", "properties.storageProfile.osDisk.osState"),
    (arm_compute.VirtualMachine, {"properties": {"storageProfile": {"osDisk": {"caching": "WriteBack"}}}},
     "InvalidParameter", "properties.storageProfile.osDisk.caching"),
    (arm_compute.GrantAccessData, {"access": "Everything"}, "InvalidParameter", "access"),
    (arm_batch.Pool, {"properties": {"interNodeCommunication": "Sometimes"}}, "InvalidParameter",
     "properties.interNodeCommunication"),
    (arm_batch.Account, {"properties": {"poolAllocationMode": "Shared"}}, "InvalidParameter",
     "properties.poolAllocationMode"),
    (arm_batch.RegenerateKey, {"keyName": "Tertiary"}, "InvalidParameter", "keyName"),
    # formats: durations, timestamps, base64
    (arm_batch.Pool, {"properties": {"scaleSettings": {"fixedScale": {"resizeTimeout": "15 minutes"}}}},
     "InvalidParameter", "properties.scaleSettings.fixedScale.resizeTimeout"),
    (arm_batch.Pool, {"properties": {"scaleSettings": {"autoScale": {"evaluationInterval": "P99999999D"}}}},
     "InvalidParameter", "properties.scaleSettings.autoScale.evaluationInterval"),
    (arm_compute.GalleryImage, {"properties": {"endOfLifeDate": "next year"}}, "InvalidParameter",
     "properties.endOfLifeDate"),
    (arm_compute.VirtualMachine, {"properties": {"osProfile": {"customData": "not base64!"}}},
     "InvalidParameter", "properties.osProfile.customData"),
    # required properties
    (arm_compute.VirtualMachine, {"properties": {"storageProfile": {"dataDisks": [{"createOption": "Empty"}]}}},
     "InvalidParameter", "properties.storageProfile.dataDisks[0].lun"),
    (arm_batch.RegenerateKey, {}, "InvalidParameter", "keyName"),
    (arm.ResourceGroupPut, {}, "InvalidRequestContent", "location"),
    (arm.RoleAssignmentPut, {"properties": {"principalId": "p"}}, "InvalidRequestContent",
     "properties.roleDefinitionId"),
    # tags
    (arm.ResourceGroupPut, {"location": LOCATION, "tags": {f"t{i}": "v" for i in range(51)}}, "InvalidParameter",
     "tags"),
    (arm.ResourceGroupPatch, {"tags": {"t": "v" * 257}}, "InvalidParameter", "tags"),
])
def test_bad_bodies_name_the_property(model: type[arm_bodies.Wire], body: dict[str, Any], code: str,
                                      target: str) -> None:
    assert refused(body, model)[:2] == (code, target)


def test_messages_say_what_is_wrong() -> None:
    _, _, message = refused({"properties": {"storageProfile": {"dataDisks": [{"lun": 64}]}}},
                            arm_compute.VirtualMachine)
    assert message == ("The value '64' of parameter 'properties.storageProfile.dataDisks[0].lun' is invalid: it "
                       "must be at most 63.")
    _, _, message = refused({"properties": {"diskSizeGB": "30"}}, arm_compute.Disk)
    assert message.endswith("'properties.diskSizeGB' must be an integer.")
    _, _, message = refused({"properties": {"osType": "Solaris"}}, arm_compute.GalleryImage)
    assert "it must be one of: Windows, Linux" in message
    _, _, message = refused({}, arm_batch.RegenerateKey)
    assert message == "Required parameter 'keyName' is missing (null)."


@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_a_body_that_is_not_an_object_is_invalid_request_content(body: Any) -> None:
    assert refused(body, arm_compute.Disk)[0] == "InvalidRequestContent"


def test_text_that_is_not_unicode_is_refused_before_it_could_be_stored() -> None:
    """JSON can escape half a surrogate pair (``\\ud800``); such text could never be rendered back."""
    code, _, message = refused(json.loads('{"tags": {"a": "\\ud800"}}'), arm_compute.Disk)
    assert code == "InvalidRequestContent" and "Unicode" in message


# --- properties ---------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
PATHS = [("properties", "diskSizeGB"), ("properties", "creationData", "createOption"), ("sku", "name"),
         ("properties", "storageProfile", "dataDisks"), ("properties", "storageProfile", "osDisk"),
         ("properties", "hardwareProfile"), ("properties", "osProfile", "linuxConfiguration", "ssh"),
         ("properties", "publishingProfile", "targetRegions"), ("tags",), ("location",), ("properties",),
         ("properties", "scaleSettings", "fixedScale"), ("properties", "startTask", "environmentSettings"),
         ("properties", "deploymentConfiguration", "virtualMachineConfiguration", "dataDisks"), ("sku",),
         ("plan",), ("identity",), ("zones",), ("extendedLocation",)]
MODELS = [*arm_compute.BODIES.values(), arm_batch.Account, arm_batch.Pool, arm_compute.RunCommandInput,
          arm_compute.GrantAccessData, arm.ResourceGroupPut, arm.RoleAssignmentPut]


def _put(body: dict[str, Any], where: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = body
    for part in where[:-1]:
        inner = node.get(part)
        if not isinstance(inner, dict):
            inner = node[part] = {}
        node = inner
    node[where[-1]] = value
    return body


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODELS), st.sampled_from(PATHS), json_values)
def test_any_json_is_accepted_or_refused_with_a_400_never_an_exception(model: type[arm_bodies.Wire],
                                                                       where: tuple[str, ...], value: Any) -> None:
    body = _put({"location": LOCATION}, where, value)
    try:
        checked = arm_bodies.normalised(body, model)
    except errors.AzureError as exc:
        assert exc.status == 400 and exc.code in ("InvalidRequestContent", "InvalidParameter"), exc.code
        assert exc.target is None or exc.target.split(".")[0].split("[")[0], exc.target
        return
    json.dumps(checked)  # what the routes store is plain JSON
    if model in arm_compute.BODIES.values():
        ArmBody.model_validate(checked)


@given(st.sampled_from([("properties", "diskSizeGB"), ("properties", "maxShares"),
                        ("properties", "creationData", "uploadSizeBytes")]),
       st.one_of(st.text(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_integers_are_never_read_from_other_json_types(where: tuple[str, ...], value: Any) -> None:
    code, target, _ = refused(_put({}, where, value), arm_compute.Disk)
    assert (code, target) == ("InvalidRequestContent", ".".join(where))


@given(st.integers(min_value=0, max_value=63), st.sampled_from(["fromimage", "EMPTY", "Attach", "copy"]))
def test_data_disks_with_azures_luns_and_options_are_accepted(lun: int, option: str) -> None:
    body = {"properties": {"storageProfile": {"dataDisks": [{"lun": lun, "createOption": option}]}}}
    disk = arm_bodies.normalised(body, arm_compute.VirtualMachine)["properties"]["storageProfile"]["dataDisks"][0]
    assert disk["lun"] == lun and disk["createOption"].lower() == option.lower() and disk["createOption"][0].isupper()


# --- against a server ---------------------------------------------------------------------------------------
ARM = "api-version=2024-07-01"
COMPUTE = "api-version=2024-07-01"
DISKS = "api-version=2024-03-02"  # disks and snapshots have their own api-versions (DiskRP)
GALLERY = "api-version=2023-07-03"
GROUPS = "api-version=2022-09-01"
AUTH = "api-version=2022-04-01"


class Api:
    def __init__(self, server: ShoalServer, shoal: Shoal) -> None:
        self.server, self.shoal = server, shoal
        token = shoal.credential().get_token("https://management.azure.com/.default").token
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.group = f"bodies-{uuid.uuid4().hex[:6]}"
        self.sub = f"{server.base_url}/subscriptions/{shoal.subscription_id}"
        self.rg = f"{self.sub}/resourceGroups/{self.group}"
        self.compute = f"{self.rg}/providers/Microsoft.Compute"
        self.account = ""

    def call(self, method: str, url: str, body: Any = None) -> requests.Response:
        return requests.request(method, url, json=body, headers=self.headers, verify=self.server.ca, timeout=60)


@pytest.fixture(scope="module")
def api(server: ShoalServer, shoal: Shoal) -> Api:
    from batch_fixtures import create_account

    api = Api(server, shoal)
    assert api.call("PUT", f"{api.rg}?{GROUPS}", {"location": LOCATION, "tags": {"keep": "me"}}).status_code == 201
    api.account = create_account(shoal, api.group).name
    return api


def arm_error(response: requests.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error.get("target")


def test_bad_resource_group_bodies_change_nothing(api: Api) -> None:
    url = f"{api.sub}/resourceGroups/{api.group}-new?{GROUPS}"
    response = api.call("PUT", url, {"location": LOCATION, "tags": {"team": 7}})
    assert arm_error(response) == (400, "InvalidRequestContent", "tags.team"), response.text
    assert api.call("GET", url).status_code == 404
    response = api.call("PATCH", f"{api.rg}?{GROUPS}", {"tags": {"keep": "x" * 300}})
    assert arm_error(response) == (400, "InvalidParameter", "tags"), response.text
    response = api.call("PATCH", f"{api.rg}?{GROUPS}", {"managedBy": 5})
    assert arm_error(response) == (400, "InvalidRequestContent", "managedBy"), response.text
    response = requests.patch(f"{api.rg}?{GROUPS}", data=b'{"tags": {"keep": "\\ud800"}}', headers=api.headers,
                              verify=api.server.ca, timeout=60)
    assert arm_error(response)[:2] == (400, "InvalidRequestContent"), response.text
    assert api.call("GET", f"{api.rg}?{GROUPS}").json()["tags"] == {"keep": "me"}


@pytest.mark.parametrize("path, version, body, code, target", [
    ("virtualMachines/vm", COMPUTE, {"location": LOCATION, "properties": {
        "hardwareProfile": {"vmSize": "Standard_D2s_v3"}, "storageProfile": {
            "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
            "dataDisks": [{"lun": 64, "createOption": "Empty", "diskSizeGB": 4}]}}},
     "InvalidParameter", "properties.storageProfile.dataDisks[0].lun"),
    ("virtualMachines/vm", COMPUTE, {"location": LOCATION, "properties": {
        "hardwareProfile": {"vmSize": "Standard_D2s_v3"}, "storageProfile": {
            "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
            "osDisk": {"createOption": "FromImage", "diskSizeGB": "30"}}}},
     "InvalidRequestContent", "properties.storageProfile.osDisk.diskSizeGB"),
    ("disks/d", DISKS, {"location": LOCATION, "properties": {"creationData": {"createOption": "Clone"},
                                                               "diskSizeGB": 4}},
     "InvalidParameter", "properties.creationData.createOption"),
    ("disks/d", DISKS, {"location": LOCATION, "properties": {"creationData": {"createOption": "Empty"},
                                                               "diskSizeGB": 0}},
     "InvalidParameter", "properties.diskSizeGB"),
    ("snapshots/s", DISKS, {"location": LOCATION, "sku": {"name": "UltraSSD_LRS"}, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": "/subscriptions/x"}}},
     "InvalidParameter", "sku.name"),
    ("images/i", COMPUTE, {"location": LOCATION, "properties": {"storageProfile": {"osDisk": {
        "osType": "Linux", "osState": "Sleeping", "blobUri": "https://example.org/os.vhd"}}}},
     "InvalidParameter", "properties.storageProfile.osDisk.osState"),
    ("galleries/gal2", GALLERY, {"location": LOCATION, "properties": {"sharingProfile": {"permissions": "Public"}}},
     "InvalidParameter", "properties.sharingProfile.permissions"),
    ("galleries/gal/images/def2", GALLERY, {"location": LOCATION, "properties": {
        "osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V3",
        "identifier": {"publisher": "p", "offer": "o", "sku": "s"}}},
     "InvalidParameter", "properties.hyperVGeneration"),
    ("galleries/gal/images/def/versions/1.0.0", GALLERY, {"location": LOCATION, "properties": {
        "publishingProfile": {"targetRegions": [{"name": LOCATION, "regionalReplicaCount": 0}]},
        "storageProfile": {"source": {"id": "/subscriptions/x"}}}},
     "InvalidParameter", "properties.publishingProfile.targetRegions[0].regionalReplicaCount"),
    ("galleries/gal/images/def/versions/1.0.1", GALLERY, {"location": LOCATION, "properties": {
        "publishingProfile": {"excludeFromLatest": "false"}, "storageProfile": {"source": {"id": "/x"}}}},
     "InvalidRequestContent", "properties.publishingProfile.excludeFromLatest"),
])
def test_bad_compute_bodies_are_refused_and_nothing_is_stored(api: Api, path: str, version: str, body: Any,
                                                              code: str, target: str) -> None:
    if "galleries/gal/" in path:  # the parents exist, so a 404 afterwards means the bad body stored nothing
        assert api.call("PUT", f"{api.compute}/galleries/gal?{GALLERY}", {"location": LOCATION}).status_code in (
            200, 201)
        created = api.call("PUT", f"{api.compute}/galleries/gal/images/def?{GALLERY}", {
            "location": LOCATION, "properties": {"osType": "Linux", "osState": "Generalized",
                                                 "identifier": {"publisher": "p", "offer": "o", "sku": "s"}}})
        assert created.status_code in (200, 201), created.text
    url = f"{api.compute}/{path}?{version}"
    response = api.call("PUT", url, body)
    assert arm_error(response) == (400, code, target), response.text
    assert api.call("GET", url).status_code == 404


def test_bad_patches_and_actions_change_nothing(api: Api) -> None:
    url = f"{api.compute}/disks/keep?{DISKS}"
    created = api.call("PUT", url, {"location": LOCATION, "tags": {"v": "1"}, "properties": {
        "creationData": {"createOption": "Empty"}, "diskSizeGB": 4}})
    assert created.status_code in (200, 201, 202), created.text
    response = api.call("PATCH", url, {"tags": {"v": 2}})
    assert arm_error(response) == (400, "InvalidRequestContent", "tags.v"), response.text
    response = api.call("PATCH", url, {"properties": {"diskSizeGB": -4}})
    assert arm_error(response) == (400, "InvalidParameter", "properties.diskSizeGB"), response.text
    shown = api.call("GET", url).json()
    assert shown["tags"] == {"v": "1"} and shown["properties"]["diskSizeGB"] == 4
    response = api.call("POST", f"{api.compute}/disks/keep/beginGetAccess?{DISKS}",
                        {"access": "Read", "durationInSeconds": "3600"})
    assert arm_error(response) == (400, "InvalidRequestContent", "durationInSeconds"), response.text
    response = api.call("POST", f"{api.compute}/disks/keep/beginGetAccess?{DISKS}", {"access": "Everything"})
    assert arm_error(response) == (400, "InvalidParameter", "access"), response.text
    assert api.call("GET", url).json()["properties"]["diskState"] == "Unattached"  # no access was granted
    response = api.call("POST", f"{api.compute}/virtualMachines/none/runCommand?{COMPUTE}",
                        {"commandId": "RunShellScript", "script": "uname"})
    assert arm_error(response) == (400, "InvalidRequestContent", "script"), response.text
    response = api.call("PUT", f"{api.compute}/virtualMachines/none/extensions/x?{COMPUTE}", {
        "location": LOCATION, "properties": {"publisher": "p", "type": "t", "typeHandlerVersion": "1.0",
                                             "autoUpgradeMinorVersion": "yes"}})
    assert arm_error(response) == (400, "InvalidRequestContent", "properties.autoUpgradeMinorVersion"), response.text


def test_bad_batch_account_bodies_change_nothing(api: Api) -> None:
    accounts = f"{api.rg}/providers/Microsoft.Batch/batchAccounts"
    new = f"{accounts}/bad{uuid.uuid4().hex[:8]}?{ARM}"
    response = api.call("PUT", new, {"location": LOCATION, "properties": {"allowedAuthenticationModes": ["Pin"]}})
    assert arm_error(response) == (400, "InvalidParameter", "properties.allowedAuthenticationModes[0]"), response.text
    assert api.call("GET", new).status_code == 404
    existing = f"{accounts}/{api.account}?{ARM}"
    before = api.call("GET", existing).json()
    response = api.call("PATCH", existing, {"properties": {"publicNetworkAccess": 1}})
    assert arm_error(response) == (400, "InvalidRequestContent", "properties.publicNetworkAccess"), response.text
    response = api.call("PATCH", existing, {"properties": {"autoStorage": {"authenticationMode": "StorageKeys"}}})
    assert arm_error(response) == (400, "InvalidParameter", "properties.autoStorage.storageAccountId"), response.text
    assert api.call("GET", existing).json()["properties"] == before["properties"]
    keys = api.call("POST", f"{accounts}/{api.account}/listKeys?{ARM}").json()
    response = api.call("POST", f"{accounts}/{api.account}/regenerateKeys?{ARM}", {"keyName": "Tertiary"})
    assert arm_error(response) == (400, "InvalidParameter", "keyName"), response.text
    assert api.call("POST", f"{accounts}/{api.account}/listKeys?{ARM}").json() == keys


@pytest.mark.parametrize("properties, code, target", [
    ({"deploymentConfiguration": {"virtualMachineConfiguration": {"dataDisks": [{"lun": 99, "diskSizeGB": 4}]}}},
     "InvalidParameter", "properties.deploymentConfiguration.virtualMachineConfiguration.dataDisks[0].lun"),
    ({"startTask": {"commandLine": "true", "waitForSuccess": "true"}}, "InvalidRequestContent",
     "properties.startTask.waitForSuccess"),
    ({"scaleSettings": {"fixedScale": {"targetDedicatedNodes": 1, "resizeTimeout": "15 minutes"}}},
     "InvalidParameter", "properties.scaleSettings.fixedScale.resizeTimeout"),
    ({"taskSchedulingPolicy": {"nodeFillType": "Random"}}, "InvalidParameter",
     "properties.taskSchedulingPolicy.nodeFillType"),
    ({"metadata": [{"name": "k"}]}, "InvalidParameter", "properties.metadata[0].value"),
])
def test_bad_management_plane_pool_bodies_are_refused_and_nothing_is_stored(
        api: Api, properties: dict[str, Any], code: str, target: str) -> None:
    url = f"{api.rg}/providers/Microsoft.Batch/batchAccounts/{api.account}/pools/bad?{ARM}"
    body = {"properties": {"vmSize": "STANDARD_D2S_V3", "deploymentConfiguration": {
        "virtualMachineConfiguration": {"imageReference": {"publisher": "shoal", "offer": "host", "sku": "host",
                                                           "version": "latest"},
                                        "nodeAgentSkuId": "batch.node.debian 12"}}}}
    for key, value in properties.items():
        if key == "deploymentConfiguration":
            body["properties"][key]["virtualMachineConfiguration"].update(value["virtualMachineConfiguration"])
        else:
            body["properties"][key] = value
    response = api.call("PUT", url, body)
    assert arm_error(response) == (400, code, target), response.text
    assert api.call("GET", url).status_code == 404


def test_bad_role_assignment_bodies_are_refused(api: Api) -> None:
    url = f"{api.rg}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}?{AUTH}"
    role = f"/subscriptions/{api.shoal.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/" \
           "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    response = api.call("PUT", url, {"properties": {"roleDefinitionId": role, "principalId": str(uuid.uuid4()),
                                                    "principalType": "Robot"}})
    assert arm_error(response) == (400, "InvalidParameter", "properties.principalType"), response.text
    response = api.call("PUT", url, {"properties": {"roleDefinitionId": role, "principalId": 42}})
    assert arm_error(response) == (400, "InvalidRequestContent", "properties.principalId"), response.text
    assert api.call("GET", url).status_code == 404
