"""The JSON types of the ARM request properties Shoal reads, checked before anything is stored.

A body whose ``properties`` (or a nested object Shoal reads, such as ``properties.hardwareProfile``) has the
wrong JSON type is refused with ARM's ``InvalidRequestContent`` naming the property, the way ARM refuses a body
it cannot deserialize; values are the domain rules' to judge.
"""

from __future__ import annotations

from typing import Any

from shoal.core import errors

_OBJ, _LIST, _STR, _INT, _BOOL = dict, list, str, int, bool

# Property paths below ``properties`` and their JSON types (compute resources, Batch accounts and pools).
SHAPES: dict[str, type] = {
    # virtual machines
    "hardwareProfile": _OBJ, "hardwareProfile.vmSize": _STR, "storageProfile": _OBJ,
    "storageProfile.imageReference": _OBJ, "storageProfile.osDisk": _OBJ, "storageProfile.dataDisks": _LIST,
    "storageProfile.osDisk.managedDisk": _OBJ, "osProfile": _OBJ, "osProfile.linuxConfiguration": _OBJ,
    "networkProfile": _OBJ, "networkProfile.networkInterfaces": _LIST, "diagnosticsProfile": _OBJ,
    "securityProfile": _OBJ, "userData": _STR,
    # disks, snapshots, images, galleries
    "creationData": _OBJ, "creationData.createOption": _STR, "creationData.sourceUri": _STR,
    "creationData.sourceResourceId": _STR, "creationData.imageReference": _OBJ, "diskSizeGB": _INT,
    "osType": _STR, "hyperVGeneration": _STR, "encryption": _OBJ, "storageProfile.source": _OBJ,
    "storageProfile.osDiskImage": _OBJ, "storageProfile.dataDiskImages": _LIST, "publishingProfile": _OBJ,
    "publishingProfile.targetRegions": _LIST, "identifier": _OBJ, "sourceVirtualMachine": _OBJ,
    # Batch accounts
    "autoStorage": _OBJ, "poolAllocationMode": _STR, "keyVaultReference": _OBJ, "publicNetworkAccess": _STR,
    "allowedAuthenticationModes": _LIST, "networkProfile.accountAccess": _OBJ,
    # Batch pools (management plane)
    "vmSize": _STR, "scaleSettings": _OBJ, "scaleSettings.fixedScale": _OBJ, "scaleSettings.autoScale": _OBJ,
    "scaleSettings.fixedScale.targetDedicatedNodes": _INT, "scaleSettings.fixedScale.targetLowPriorityNodes": _INT,
    "scaleSettings.fixedScale.resizeTimeout": _STR, "scaleSettings.autoScale.formula": _STR,
    "scaleSettings.autoScale.evaluationInterval": _STR, "deploymentConfiguration": _OBJ,
    "deploymentConfiguration.virtualMachineConfiguration": _OBJ,
    "deploymentConfiguration.virtualMachineConfiguration.imageReference": _OBJ,
    "deploymentConfiguration.virtualMachineConfiguration.nodeAgentSkuId": _STR,
    "deploymentConfiguration.virtualMachineConfiguration.dataDisks": _LIST,
    "startTask": _OBJ, "startTask.commandLine": _STR, "startTask.environmentSettings": _LIST,
    "startTask.resourceFiles": _LIST, "startTask.userIdentity": _OBJ, "startTask.maxTaskRetryCount": _INT,
    "startTask.waitForSuccess": _BOOL, "networkConfiguration": _OBJ, "metadata": _LIST, "taskSlotsPerNode": _INT,
    "taskSchedulingPolicy": _OBJ, "interNodeCommunication": _STR, "displayName": _STR,
    "applicationPackages": _LIST, "userAccounts": _LIST, "mountConfiguration": _LIST,
}
_NAMES = {_OBJ: "an object", _LIST: "an array", _STR: "a string", _INT: "an integer", _BOOL: "true or false"}


def _has_type(value: Any, kind: type) -> bool:
    if kind is _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check(body: Any) -> dict[str, Any]:
    """The body (a JSON object whose ``tags``, ``properties`` and the properties above have their types)."""
    if not isinstance(body, dict):
        raise errors.InvalidRequestContent("The request content was invalid: expected a JSON object.")
    envelope: tuple[tuple[str, type], ...] = (("location", _STR), ("tags", _OBJ), ("properties", _OBJ),
                                              ("sku", _OBJ), ("identity", _OBJ), ("zones", _LIST))
    for key, kind in envelope:
        value = body.get(key)
        if value is not None and not _has_type(value, kind):
            raise _wrong(key, kind)
    tags = body.get("tags") or {}
    for name, value in tags.items():
        if not isinstance(value, str):
            raise errors.InvalidRequestContent(f"The request content was invalid: the tag '{name[:100]}' must have "
                                               "a string value.", target=f"tags.{name[:100]}")
    props = body.get("properties") or {}
    for path, kind in SHAPES.items():
        found: Any = props
        for part in path.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if found is not None and not _has_type(found, kind):
            raise _wrong(f"properties.{path}", kind)
    return body


def _wrong(where: str, kind: type) -> errors.AzureError:
    return errors.InvalidRequestContent(f"The request content was invalid and could not be deserialized: "
                                        f"'{where}' must be {_NAMES[kind]}.", target=where)
