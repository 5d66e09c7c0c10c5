"""The Batch request-body properties Shoal refuses, one table, and the check every data-plane body goes through.

Nothing is accepted and ignored: a property of Azure's Batch API (``tests/facts/azure_api_facts.json``) is either
honoured (stored and returned for descriptive ones such as ``displayName`` and ``metadata``; acted on for the
others) or it is here, and a request carrying it gets 400 ``InvalidPropertyValue`` naming it and saying what to do
instead. ``tests/test_spec_coverage.py`` walks the facts and holds every property to one or the other, and checks
that README.md lists what is refused.

Keys are ``"{METHOD} {path}"`` with the path's parameters written ``{}`` (as the facts write them), then the
property's dotted path within the body; lists are walked through (``userAccounts.name`` is the ``name`` of every
user account). A property "asks for something" unless it is missing, null, empty, or one of the refusal's
``accepts`` values (its default, which asks for nothing: ``dynamicVNetAssignmentScope`` ``none``). The most
specific path is checked first, so a Windows setting inside ``userAccounts`` is named as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shoal.core import errors


@dataclass(frozen=True)
class Refusal:
    why: str  # what Shoal does not support, and what to do instead (the 400's Reason)
    accepts: tuple[Any, ...] = ()  # values that ask for nothing (compared case-insensitively)


WINDOWS = "Windows settings are not supported by Shoal on Linux pools, and every Shoal pool is Linux; remove it"


def _windows(what: str) -> Refusal:
    return Refusal(f"{what}: {WINDOWS}")


def _no(what: str, instead: str, accepts: tuple[Any, ...] = ()) -> Refusal:
    return Refusal(f"{what} is not supported by Shoal; {instead}", accepts)


# --- the shapes that recur: a task's, a pool's, a job's ------------------------------------------------------
TASK_LIKE: dict[str, Refusal] = {
    "containerSettings": _no("running a task in a container", "Shoal nodes have no container runtime: run the "
                             "command in the node (its image holds the software)"),
    "resourceFiles.identityReference": _no("a managed identity for resource files", "use a signed container URL "
                                           "(storageContainerUrl or httpUrl with a SAS)"),
    "resourceFiles.autoStorageContainerName": _no(
        "autoStorageContainerName (Shoal accounts have no auto-storage account)",
        "use storageContainerUrl with a Shoal container URL (`shoal container url`)"),
    "userIdentity.username": _no("running a task as a named user account", "use userIdentity.autoUser"),
    "userIdentity.autoUser.scope": _no("an auto-user of task scope (a user of its own for each task)",
                                       "use scope pool: every non-admin task of a node runs as the pool's "
                                       "unprivileged user", accepts=("pool",)),
}
TASK_OUTPUTS: dict[str, Refusal] = {
    "outputFiles.destination.container.identityReference": _no(
        "a managed identity for output files", "use a signed container URL (containerUrl with a SAS)"),
}
POOL_SPEC: dict[str, Refusal] = {
    "virtualMachineConfiguration.windowsConfiguration": _windows("windowsConfiguration"),
    "virtualMachineConfiguration.licenseType": _windows("licenseType (Azure Hybrid Benefit for Windows)"),
    "userAccounts.windowsUserConfiguration": _windows("userAccounts.windowsUserConfiguration"),
    "userAccounts": _no("named user accounts on the nodes", "run tasks as the auto-user (userIdentity.autoUser, "
                        "elevationLevel admin for root); add a login user with the node user API"),
    "virtualMachineConfiguration.containerConfiguration": _no(
        "a container configuration", "Shoal nodes have no container runtime: build the software into the pool's "
        "image"),
    "virtualMachineConfiguration.dataDisks.managedDisk.diskEncryptionSet": _no(
        "customer-managed disk encryption", "leave it out: Shoal's disks are directories on the node host"),
    "virtualMachineConfiguration.dataDisks.managedDisk.securityProfile": _no(
        "a disk security profile (confidential VMs)", "leave it out"),
    "virtualMachineConfiguration.diskEncryptionConfiguration": _no(
        "disk encryption", "leave it out: Shoal's disks are directories on the node host, encrypt the host's "
        "storage instead"),
    "virtualMachineConfiguration.extensions": _no(
        "VM extensions (no extension handler runs in Shoal's nodes)",
        "install the software with the start task, or build it into the image"),
    "virtualMachineConfiguration.nodePlacementConfiguration.policy": _no(
        "zonal node placement (Shoal regions have no availability zones)", "use regional (the default)",
        accepts=("regional",)),
    "virtualMachineConfiguration.osDisk": _no(
        "choosing the OS disk (size, caching, storage type, ephemeral placement)",
        "leave it out: a node's OS disk is the image's layers with a volatile upper layer"),
    "virtualMachineConfiguration.securityProfile": _no(
        "a security profile (trusted launch, confidential VMs, encryption at host, proxy agent)", "leave it out"),
    "virtualMachineConfiguration.serviceArtifactReference": _no(
        "service artifact references (pinned OS image versions)", "pin the image with imageReference"),
    "virtualMachineConfiguration.imageReference.communityGalleryImageId": _no(
        "community gallery images", "use virtualMachineImageId with a gallery image or version of the account's "
        "subscription"),
    "virtualMachineConfiguration.imageReference.sharedGalleryImageId": _no(
        "directly shared gallery images", "use virtualMachineImageId with a gallery image or version of the "
        "account's subscription"),
    "networkConfiguration.dynamicVNetAssignmentScope": _no(
        "dynamic virtual network assignment (job scope)", "use none, and put the pool in a subnet with "
        "networkConfiguration.subnetId", accepts=("none",)),
    "networkConfiguration.endpointConfiguration.inboundNATPools.networkSecurityGroupRules": _no(
        "network security group rules on inbound NAT pools (they would not be enforced)",
        "filter the traffic with the network security group of the pool's subnet (networkConfiguration.subnetId)"),
    "networkConfiguration.endpointConfiguration.inboundNATPools.protocol": _no(
        "udp inbound NAT pools (only tcp endpoints are forwarded)", "use tcp", accepts=("tcp",)),
    "networkConfiguration.publicIPAddressConfiguration.provision": _no(
        "usermanaged public IP addresses", "use batchmanaged (the default) or nopublicipaddresses",
        accepts=("batchmanaged", "nopublicipaddresses")),
    "networkConfiguration.publicIPAddressConfiguration.ipAddressIds": _no(
        "public IP addresses of your own", "leave it out: Shoal gives the pool its public address"),
    "networkConfiguration.publicIPAddressConfiguration.ipFamilies": _no(
        "IPv6 public addresses", "use IPv4 (the default)", accepts=("ipv4",)),
    "networkConfiguration.publicIPAddressConfiguration.ipTags": _no("public IP address tags", "leave them out"),
    "networkConfiguration.enableAcceleratedNetworking": _no(
        "accelerated networking (SR-IOV)", "leave it false: a node's network is a virtual interface on the host",
        accepts=(False,)),
    "upgradePolicy.mode": _no("automatic or rolling OS upgrades (nodes are never upgraded in place)",
                              "use manual, and recreate the pool with a new image", accepts=("manual",)),
    "upgradePolicy.automaticOSUpgradePolicy": _no(
        "automatic OS upgrades (nodes are never upgraded in place)", "recreate the pool with a new image"),
    "upgradePolicy.rollingUpgradePolicy": _no(
        "rolling OS upgrades (nodes are never upgraded in place)", "recreate the pool with a new image"),
}
START_TASK: dict[str, Refusal] = {f"startTask.{k}": v for k, v in TASK_LIKE.items()}
POOL_CHANGES: dict[str, Refusal] = {  # PATCH: what Shoal cannot change on an existing pool
    key: _no(f"changing {key} of an existing pool", "create a new pool with it")
    for key in ("enableInterNodeCommunication", "networkConfiguration", "taskSchedulingPolicy", "taskSlotsPerNode",
                "upgradePolicy", "userAccounts")
}
JOB_SPEC: dict[str, Refusal] = {
    "poolInfo.autoPoolSpecification": _no("auto pools", "create a pool and name it in poolInfo.poolId"),
    "networkConfiguration": _no("a job's own subnet (dynamic virtual network assignment)", "put the pool in the "
                                "subnet with its networkConfiguration.subnetId"),
    "allowTaskPreemption": _no("preemption of running tasks by higher-priority jobs",
                               "leave it false: job priority orders the queue only", accepts=(False,)),
    **{f"jobManagerTask.{k}": v for k, v in TASK_LIKE.items()},
    **{f"jobPreparationTask.{k}": v for k, v in TASK_LIKE.items()},
    **{f"jobReleaseTask.{k}": v for k, v in TASK_LIKE.items()},
}
JOB_UPDATE: dict[str, Refusal] = {k: JOB_SPEC[k] for k in (
    "poolInfo.autoPoolSpecification", "networkConfiguration", "allowTaskPreemption")}
TASK: dict[str, Refusal] = {**TASK_LIKE, **TASK_OUTPUTS,
                            **{f"multiInstanceSettings.common{k[0].upper()}{k[1:]}": v for k, v in TASK_LIKE.items()
                               if k.startswith("resourceFiles.")}}


def _under(prefix: str, table: dict[str, Refusal]) -> dict[str, Refusal]:
    return {f"{prefix}{k}": v for k, v in table.items()}


REFUSED: dict[str, dict[str, Refusal]] = {
    "POST /pools": {**POOL_SPEC, **START_TASK},
    "PATCH /pools/{}": {**POOL_SPEC, **POOL_CHANGES, **START_TASK},
    "POST /pools/{}/updateproperties": START_TASK,
    "POST /jobs": JOB_SPEC,
    "PATCH /jobs/{}": JOB_UPDATE,
    "PUT /jobs/{}": {k: v for k, v in JOB_UPDATE.items() if k != "networkConfiguration"},
    "POST /jobschedules": _under("jobSpecification.", JOB_SPEC),
    "PATCH /jobschedules/{}": _under("jobSpecification.", JOB_SPEC),
    "PUT /jobschedules/{}": _under("jobSpecification.", JOB_SPEC),
    "POST /jobs/{}/tasks": TASK,
    "POST /jobs/{}/addtaskcollection": _under("value.", TASK),
    "POST /pools/{}/nodes/{}/uploadbatchservicelogs": {
        "identityReference": _no("a managed identity for the upload", "use a signed container URL "
                                 "(containerUrl with a SAS, e.g. `shoal container url`)")},
}


def operation(method: str, route: str) -> str:
    """``"POST /pools/{}"`` from a route template of the Batch data plane (``/batch/{account}/pools/{pool_id}``)."""
    path = re.sub(r"^/batch/\{account\}", "", route)
    return f"{method.upper()} {re.sub(r'{[^}]*}', '{}', path).rstrip('/') or '/'}"


def _asks(value: Any, accepts: tuple[Any, ...]) -> bool:
    if value is None or value == [] or value == {} or value == "":
        return False
    for ok in accepts:
        if (type(value) is type(ok) and value == ok) or (isinstance(value, str) and value.lower() == str(ok).lower()):
            return False
    return True


def _values(node: Any, parts: list[str]) -> Iterator[Any]:
    """The values at ``parts`` below ``node``, through lists (each item of a list at the end too)."""
    if isinstance(node, list):
        for item in node:
            yield from _values(item, parts)
        return
    if not parts:
        yield node
    elif isinstance(node, dict) and parts[0] in node:
        yield from _values(node[parts[0]], parts[1:])


def refuse(op: str, body: dict[str, Any]) -> None:
    """400 naming the first property of ``body`` that Shoal refuses for ``op``; nothing when there is none."""
    table = REFUSED.get(op)
    if not table:
        return
    for path in sorted(table, key=lambda p: -p.count(".")):
        refusal = table[path]
        for value in _values(body, path.split(".")):
            if _asks(value, refusal.accepts):
                raise errors.InvalidPropertyValue(
                    f"The value provided for one of the properties in the request body is invalid: {path} "
                    f"({refusal.why}).",
                    values={"PropertyName": path, "PropertyValue": str(value)[:200], "Reason": refusal.why})
