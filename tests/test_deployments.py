"""ARM template deployments through the official azure-mgmt-resource-deployments SDK and ``az deployment group``:
a template with ``copy``, ``reference()`` and ``outputs`` deploys three VMs; template errors are ``InvalidTemplate``
with their position; a failing resource makes ``DeploymentFailed`` with details; bad input is a clear 400."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource.resources.models import ResourceGroup

from conftest import AzCli
from shoal.azure import Shoal

LOCATION = "westus"
HOST = {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"}


def client(shoal: Shoal) -> Any:
    from azure.mgmt.resource.deployments import DeploymentsMgmtClient

    # 2.0.0 of the package sends 2026-06-01, newer than the api-versions of Shoal's facts table
    # (scripts/azure_facts.py); az sends 2025-04-01.
    return shoal._mgmt(DeploymentsMgmtClient, polling_interval=1, api_version="2025-04-01")


def deployment(template: dict[str, Any], parameters: dict[str, Any] | None = None, mode: str = "Incremental") -> Any:
    from azure.mgmt.resource.deployments.models import Deployment, DeploymentProperties

    return Deployment(properties=DeploymentProperties(
        mode=mode, template=template, parameters={k: {"value": v} for k, v in (parameters or {}).items()}))


def vm(name: str, image: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "Microsoft.Compute/virtualMachines", "apiVersion": "2024-07-01", "name": name,
            "location": "[resourceGroup().location]", **extra, "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
                "storageProfile": {"imageReference": image or HOST},
                "osProfile": {"computerName": "prep", "adminUsername": "azureuser"}}}


def three_vms() -> dict[str, Any]:
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"prefix": {"type": "string"}, "count": {"type": "int", "defaultValue": 3}},
        "variables": {"first": "[concat(parameters('prefix'), '0')]"},
        "resources": [vm("[concat(parameters('prefix'), copyIndex())]",
                         copy={"name": "vms", "count": "[parameters('count')]"})],
        "outputs": {
            "size": {"type": "string", "value": "[reference(variables('first')).hardwareProfile.vmSize]"},
            "location": {"type": "string", "value": "[reference(resourceId('Microsoft.Compute/virtualMachines', "
                                                    "variables('first')), '2024-07-01', 'Full').location]"},
            "names": {"type": "array", "copy": {"count": "[parameters('count')]",
                                                "input": "[concat(parameters('prefix'), copyIndex())]"}},
        },
    }


@pytest.fixture(scope="module")
def group(shoal: Shoal) -> str:
    name = f"deploy-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(name, ResourceGroup(location=LOCATION))
    return name


def test_a_template_with_copy_reference_and_outputs_deploys_three_vms(shoal: Shoal, group: str) -> None:
    deployments = client(shoal)
    poller = deployments.deployments.begin_create_or_update(group, "vms", deployment(three_vms(), {"prefix": "web"}))
    result = poller.result()
    assert result.properties.provisioning_state == "Succeeded"
    assert result.properties.outputs["size"] == {"type": "String", "value": "Standard_D2s_v3"}
    assert result.properties.outputs["location"]["value"] == LOCATION
    assert result.properties.outputs["names"]["value"] == ["web0", "web1", "web2"]
    assert result.properties.parameters["prefix"]["value"] == "web"
    vms = {v.name: v for v in shoal.compute_client().virtual_machines.list(group)}
    assert {"web0", "web1", "web2"} <= set(vms)
    assert all(vms[n].provisioning_state == "Succeeded" for n in ("web0", "web1", "web2"))
    assert len(result.properties.output_resources) == 3
    # get, list, operations
    got = deployments.deployments.get(group, "vms")
    assert got.properties.provisioning_state == "Succeeded" and got.properties.mode == "Incremental"
    assert "vms" in [d.name for d in deployments.deployments.list_by_resource_group(group)]
    ops = list(deployments.deployment_operations.list(group, "vms"))
    assert sorted(o.properties.target_resource.resource_name for o in ops) == ["web0", "web1", "web2"]
    assert all(o.properties.provisioning_state == "Succeeded" for o in ops)
    one = deployments.deployment_operations.get(group, "vms", ops[0].operation_id)
    assert one.properties.target_resource.id == ops[0].properties.target_resource.id
    # A deployment is not a resource of its group.
    listed = [r.type for r in shoal.resource_client().resources.list_by_resource_group(group)]
    assert "Microsoft.Resources/deployments" not in listed
    # Deleting the deployment keeps what it deployed.
    deployments.deployments.begin_delete(group, "vms").result()
    with pytest.raises(ResourceNotFoundError) as missing:
        deployments.deployments.get(group, "vms")
    assert missing.value.error.code == "DeploymentNotFound"
    assert shoal.compute_client().virtual_machines.get(group, "web1").name == "web1"


def test_a_template_error_is_invalid_template_with_its_position(shoal: Shoal, group: str) -> None:
    template = three_vms()
    template["resources"][0]["name"] = "[concat(parameters('prefix'), ]"
    with pytest.raises(HttpResponseError) as caught:
        client(shoal).deployments.begin_create_or_update(group, "broken", deployment(template, {"prefix": "x"}))
    assert caught.value.status_code == 400
    assert caught.value.error.code == "InvalidTemplate"
    message = caught.value.error.message
    assert "at line '1' and column '" in message and "at position '" in message
    assert caught.value.error.target == "properties.template.resources[0].name"


def test_a_failing_resource_gives_deployment_failed_with_details(shoal: Shoal, group: str) -> None:
    template = {"resources": [
        vm("good"),
        vm("noimage", image={"publisher": "nobody", "offer": "nothing", "sku": "none", "version": "latest"}),
        {"type": "Microsoft.Web/sites", "apiVersion": "2023-01-01", "name": "site", "location": "westus"},
        vm("after", dependsOn=["noimage"]),
    ]}
    deployments = client(shoal)
    with pytest.raises(HttpResponseError) as caught:
        deployments.deployments.begin_create_or_update(group, "fails", deployment(template)).result()
    assert caught.value.error.code == "DeploymentFailed"
    details = {d.target.rsplit("/", 1)[-1]: d for d in caught.value.error.details}
    assert set(details) == {"noimage", "site"}
    assert "Microsoft.Web/sites" in details["site"].message and details["site"].code == "InvalidResourceType"
    got = deployments.deployments.get(group, "fails")
    assert got.properties.provisioning_state == "Failed"
    assert got.properties.error.code == "DeploymentFailed"
    ops = {o.properties.target_resource.resource_name: o for o in deployments.deployment_operations.list(group,
                                                                                                       "fails")}
    assert "after" not in ops  # its dependency failed: never started
    assert ops["noimage"].properties.provisioning_state == "Failed"


@pytest.mark.parametrize(("template", "parameters", "expected"), [
    ({"resources": [{"type": "Microsoft.Compute/disks", "apiVersion": "2023-04-02", "name": "[nosuch(1)]"}]}, {},
     "The template function 'nosuch' is not found"),
    ({"resources": [
        {"type": "Microsoft.Compute/disks", "apiVersion": "2023-04-02", "name": "a", "dependsOn": ["b"]},
        {"type": "Microsoft.Compute/disks", "apiVersion": "2023-04-02", "name": "b", "dependsOn": ["a"]}]}, {},
     "Circular dependency detected on resource"),
    ({"parameters": {"size": {"type": "int"}}, "resources": []}, {},
     "The value for the template parameter 'size' is not provided"),
    ({"parameters": {"size": {"type": "int"}}, "resources": []}, {"size": "big"},
     "Expected a value of type 'Int'"),
    ({"resources": [{"type": "Microsoft.Compute/disks", "apiVersion": "2023-04-02", "name": "a",
                     "dependsOn": ["ghost"]}]}, {}, "The resource 'ghost' is not defined in the template"),
    ({"resources": [{"type": "Microsoft.Compute/disks", "name": "a"}]}, {}, "has no 'apiVersion'"),
    ({"resources": {"a": {}}}, {}, "'resources' must be an array"),
])
def test_bad_input_is_a_clear_invalid_template(shoal: Shoal, group: str, template: dict[str, Any],
                                               parameters: dict[str, Any], expected: str) -> None:
    deployments = client(shoal)
    for call in (deployments.deployments.begin_create_or_update, deployments.deployments.begin_validate):
        with pytest.raises(HttpResponseError) as caught:
            call(group, "bad", deployment(template, parameters)).result()
        assert caught.value.status_code == 400, caught.value.message
        assert caught.value.error.code == "InvalidTemplate"
        assert expected in caught.value.error.message


def test_validate_answers_the_deployment_it_would_make(shoal: Shoal, group: str) -> None:
    result = client(shoal).deployments.begin_validate(group, "check", deployment(three_vms(), {"prefix": "v"})).result()
    assert result.properties.provisioning_state == "Succeeded"
    assert len(result.properties.validated_resources) == 3
    with pytest.raises(ResourceNotFoundError):
        client(shoal).deployments.get(group, "check")


def test_complete_mode_deletes_what_the_template_does_not_name(shoal: Shoal, group: str) -> None:
    from azure.mgmt.compute.models import CreationData, Disk

    compute = shoal.compute_client()
    compute.disks.begin_create_or_update(group, "stray", Disk(
        location=LOCATION, disk_size_gb=1, creation_data=CreationData(create_option="Empty"))).result()
    other = f"complete-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(other, ResourceGroup(location=LOCATION))
    compute.disks.begin_create_or_update(other, "stray", Disk(
        location=LOCATION, disk_size_gb=1, creation_data=CreationData(create_option="Empty"))).result()
    template = {"resources": [{"type": "Microsoft.Compute/disks", "apiVersion": "2023-04-02", "name": "kept",
                               "location": "westus", "properties": {"diskSizeGB": 1,
                                                                    "creationData": {"createOption": "Empty"}}}]}
    client(shoal).deployments.begin_create_or_update(other, "complete", deployment(template, mode="Complete")).result()
    assert [d.name for d in compute.disks.list_by_resource_group(other)] == ["kept"]
    assert "stray" in [d.name for d in compute.disks.list_by_resource_group(group)]


def test_what_if_is_refused_clearly(shoal: Shoal, group: str) -> None:
    from azure.mgmt.resource.deployments.models import DeploymentWhatIf, DeploymentWhatIfProperties

    with pytest.raises(HttpResponseError) as caught:
        client(shoal).deployments.begin_what_if(group, "w", DeploymentWhatIf(properties=DeploymentWhatIfProperties(
            mode="Incremental", template={"resources": []}))).result()
    assert caught.value.status_code == 400 and "What-if is not supported" in caught.value.message


@pytest.mark.az
def test_az_deployment_group_create_with_a_template_file(az: AzCli, group: str, tmp_path: Path) -> None:
    path = tmp_path / "vms.json"
    path.write_text(json.dumps(three_vms(), indent=2))
    out = az.json("deployment", "group", "create", "-g", group, "-n", "azvms", "--template-file", str(path),
                  "--parameters", "prefix=az", "count=2")
    assert out["properties"]["provisioningState"] == "Succeeded"
    assert out["properties"]["outputs"]["names"]["value"] == ["az0", "az1"]
    shown = az.json("deployment", "group", "show", "-g", group, "-n", "azvms")
    assert shown["properties"]["outputs"]["size"]["value"] == "Standard_D2s_v3"
    path.write_text(json.dumps({"resources": [{"type": "Microsoft.Compute/disks", "apiVersion": "2023-04-02",
                                               "name": "[nosuch()]"}]}))
    failed = az.run("deployment", "group", "create", "-g", group, "-n", "azbad", "--template-file", str(path),
                    check=False)
    assert failed.returncode != 0 and "InvalidTemplate" in failed.stderr
