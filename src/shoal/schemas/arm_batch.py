"""Wire models of the ``Microsoft.Batch`` management-plane request bodies: Batch accounts (create, update,
regenerate keys) and pools in ARM's spelling (``deploymentConfiguration``, ``scaleSettings``, ...).

Names, types and enums are Azure's (``azure-rest-api-specs``, ``batch/resource-manager``). Pool values that the
Batch rules judge (node counts, task slots per VM size, resize timeouts of at least 5 minutes, inbound NAT
pools, the image) keep their Batch error codes and messages there; here a pool body must have Azure's shape.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from shoal.schemas.arm_bodies import (
    DiskSizeGB,
    Duration,
    Int32,
    Lun,
    SubResource,
    Tags,
    TrackedResource,
    Wire,
    one_of,
)

# --- accounts -----------------------------------------------------------------------------------------------
PoolAllocationMode = Annotated[str, AfterValidator(one_of("BatchService", "UserSubscription"))]
AuthenticationMode = Annotated[str, AfterValidator(one_of("SharedKey", "AAD", "TaskAuthenticationToken"))]
PublicNetworkAccess = Annotated[str, AfterValidator(one_of("Enabled", "Disabled", "SecuredByPerimeter"))]


class ComputeNodeIdentityReference(Wire):
    resourceId: str | None = None


class AutoStorage(Wire):
    storageAccountId: str
    authenticationMode: Annotated[str, AfterValidator(one_of("StorageKeys", "BatchAccountManagedIdentity"))] | None \
        = None
    nodeIdentityReference: ComputeNodeIdentityReference | None = None


class KeyVaultReference(Wire):
    id: str
    url: str


class KeyVaultProperties(Wire):
    keyIdentifier: str | None = None


class AccountEncryption(Wire):
    keySource: Annotated[str, AfterValidator(one_of("Microsoft.Batch", "Microsoft.KeyVault"))] | None = None
    keyVaultProperties: KeyVaultProperties | None = None


class IPRule(Wire):
    action: Annotated[str, AfterValidator(one_of("Allow"))]
    value: str


class EndpointAccessProfile(Wire):
    defaultAction: Annotated[str, AfterValidator(one_of("Allow", "Deny"))]
    ipRules: list[IPRule] | None = None


class AccountNetworkProfile(Wire):
    accountAccess: EndpointAccessProfile | None = None
    nodeManagementAccess: EndpointAccessProfile | None = None


class AccountProperties(Wire):
    """``properties`` of a Batch account create (``poolAllocationMode`` and ``keyVaultReference`` are fixed
    then) and update."""

    autoStorage: AutoStorage | None = None
    poolAllocationMode: PoolAllocationMode | None = None
    keyVaultReference: KeyVaultReference | None = None
    publicNetworkAccess: PublicNetworkAccess | None = None
    networkProfile: AccountNetworkProfile | None = None
    encryption: AccountEncryption | None = None
    allowedAuthenticationModes: list[AuthenticationMode] | None = None


class Account(TrackedResource):
    """``PUT`` (BatchAccountCreateParameters) and ``PATCH`` (BatchAccountUpdateParameters) of an account."""

    properties: AccountProperties | None = None


class RegenerateKey(Wire):
    """``POST .../regenerateKeys``."""

    keyName: Annotated[str, AfterValidator(one_of("Primary", "Secondary"))]


# --- pools --------------------------------------------------------------------------------------------------
Caching = Annotated[str, AfterValidator(one_of("None", "ReadOnly", "ReadWrite"))]
StorageAccountType = Annotated[str, AfterValidator(one_of("Standard_LRS", "Premium_LRS", "StandardSSD_LRS"))]
ElevationLevel = Annotated[str, AfterValidator(one_of("NonAdmin", "Admin"))]


class FixedScale(Wire):
    resizeTimeout: Duration | None = None
    targetDedicatedNodes: Int32 | None = None  # counts below zero: the Batch rules say so
    targetLowPriorityNodes: Int32 | None = None
    nodeDeallocationOption: Annotated[str, AfterValidator(one_of(
        "Requeue", "Terminate", "TaskCompletion", "RetainedData"))] | None = None


class AutoScale(Wire):
    formula: str | None = None  # Azure requires it; the Batch rules say so
    evaluationInterval: Duration | None = None


class ScaleSettings(Wire):
    fixedScale: FixedScale | None = None
    autoScale: AutoScale | None = None


class ImageReference(Wire):
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    id: str | None = None
    sharedGalleryImageId: str | None = None
    communityGalleryImageId: str | None = None


class ManagedDisk(Wire):
    storageAccountType: StorageAccountType | None = None
    securityProfile: dict[str, Any] | None = None
    diskEncryptionSet: SubResource | None = None


class DataDisk(Wire):
    lun: Lun
    caching: Caching | None = None
    diskSizeGB: DiskSizeGB
    storageAccountType: StorageAccountType | None = None
    managedDisk: ManagedDisk | None = None


class PoolOSDisk(Wire):
    ephemeralOSDiskSettings: dict[str, Any] | None = None
    caching: Caching | None = None
    managedDisk: ManagedDisk | None = None
    diskSizeGB: DiskSizeGB | None = None
    writeAcceleratorEnabled: bool | None = None


class ContainerRegistry(Wire):
    username: str | None = None
    password: str | None = None
    registryServer: str | None = None
    identityReference: ComputeNodeIdentityReference | None = None


class ContainerConfiguration(Wire):
    type: Annotated[str, AfterValidator(one_of("DockerCompatible", "CriCompatible"))]
    containerImageNames: list[str] | None = None
    containerRegistries: list[ContainerRegistry] | None = None


class DiskEncryptionConfiguration(Wire):
    targets: list[Annotated[str, AfterValidator(one_of("OsDisk", "TemporaryDisk"))]] | None = None
    customerManagedKey: dict[str, Any] | None = None


class NodePlacementConfiguration(Wire):
    policy: Annotated[str, AfterValidator(one_of("Regional", "Zonal"))] | None = None


class VMExtension(Wire):
    name: str
    publisher: str
    type: str
    typeHandlerVersion: str | None = None
    autoUpgradeMinorVersion: bool | None = None
    enableAutomaticUpgrade: bool | None = None
    settings: Any = None
    protectedSettings: Any = None
    provisionAfterExtensions: list[str] | None = None


class PoolSecurityProfile(Wire):
    securityType: Annotated[str, AfterValidator(one_of("trustedLaunch", "confidentialVM"))] | None = None
    encryptionAtHost: bool | None = None
    uefiSettings: dict[str, Any] | None = None
    proxyAgentSettings: dict[str, Any] | None = None


class VirtualMachineConfiguration(Wire):
    imageReference: ImageReference | None = None  # Azure requires both; the Batch rules say so
    nodeAgentSkuId: str | None = None
    windowsConfiguration: dict[str, Any] | None = None
    dataDisks: list[DataDisk] | None = None
    licenseType: str | None = None
    containerConfiguration: ContainerConfiguration | None = None
    diskEncryptionConfiguration: DiskEncryptionConfiguration | None = None
    nodePlacementConfiguration: NodePlacementConfiguration | None = None
    extensions: list[VMExtension] | None = None
    osDisk: PoolOSDisk | None = None
    securityProfile: PoolSecurityProfile | None = None
    serviceArtifactReference: SubResource | None = None


class DeploymentConfiguration(Wire):
    virtualMachineConfiguration: VirtualMachineConfiguration | None = None


class NetworkSecurityGroupRule(Wire):
    priority: Int32 | None = None  # required, and its range, are the inbound NAT pool rules' to say
    access: Annotated[str, AfterValidator(one_of("Allow", "Deny"))] | None = None
    sourceAddressPrefix: str | None = None
    sourcePortRanges: list[str] | None = None


class InboundNatPool(Wire):
    name: str | None = None
    protocol: Annotated[str, AfterValidator(one_of("TCP", "UDP"))] | None = None
    backendPort: Int32 | None = None
    frontendPortRangeStart: Int32 | None = None
    frontendPortRangeEnd: Int32 | None = None
    networkSecurityGroupRules: list[NetworkSecurityGroupRule] | None = None


class PoolEndpointConfiguration(Wire):
    inboundNatPools: list[InboundNatPool] | None = None


class PublicIPAddressConfiguration(Wire):
    provision: Annotated[str, AfterValidator(one_of("BatchManaged", "UserManaged", "NoPublicIPAddresses"))] | None \
        = None
    ipAddressIds: list[str] | None = None
    ipFamilies: list[Annotated[str, AfterValidator(one_of("IPv4", "IPv6"))]] | None = None
    ipTags: list[dict[str, Any]] | None = None


class NetworkConfiguration(Wire):
    subnetId: str | None = None
    dynamicVnetAssignmentScope: Annotated[str, AfterValidator(one_of("none", "job"))] | None = None
    endpointConfiguration: PoolEndpointConfiguration | None = None
    publicIPAddressConfiguration: PublicIPAddressConfiguration | None = None
    enableAcceleratedNetworking: bool | None = None


class EnvironmentSetting(Wire):
    name: str
    value: str | None = None


class ResourceFile(Wire):
    autoStorageContainerName: str | None = None
    storageContainerUrl: str | None = None
    httpUrl: str | None = None
    blobPrefix: str | None = None
    filePath: str | None = None
    fileMode: str | None = None
    identityReference: ComputeNodeIdentityReference | None = None


class AutoUser(Wire):
    scope: Annotated[str, AfterValidator(one_of("Task", "Pool"))] | None = None
    elevationLevel: ElevationLevel | None = None


class UserIdentity(Wire):
    userName: str | None = None
    autoUser: AutoUser | None = None


class TaskContainerSettings(Wire):
    containerRunOptions: str | None = None
    imageName: str
    registry: ContainerRegistry | None = None
    workingDirectory: Annotated[str, AfterValidator(one_of(
        "TaskWorkingDirectory", "ContainerImageDefault"))] | None = None
    containerHostBatchBindMounts: list[dict[str, Any]] | None = None


class StartTask(Wire):
    commandLine: str | None = None  # required when a start task is given: the Batch rules say so
    resourceFiles: list[ResourceFile] | None = None
    environmentSettings: list[EnvironmentSetting] | None = None
    userIdentity: UserIdentity | None = None
    maxTaskRetryCount: Annotated[int, Field(ge=-1, le=2**31 - 1)] | None = None
    waitForSuccess: bool | None = None
    containerSettings: TaskContainerSettings | None = None


class TaskSchedulingPolicy(Wire):
    nodeFillType: Annotated[str, AfterValidator(one_of("Spread", "Pack"))] | None = None
    jobDefaultOrder: Annotated[str, AfterValidator(one_of("None", "CreationTime"))] | None = None


class MetadataItem(Wire):
    name: str
    value: str


class LinuxUserConfiguration(Wire):
    uid: Int32 | None = None
    gid: Int32 | None = None
    sshPrivateKey: str | None = None


class WindowsUserConfiguration(Wire):
    loginMode: Annotated[str, AfterValidator(one_of("Batch", "Interactive"))] | None = None


class UserAccount(Wire):
    name: str
    password: str | None = None
    elevationLevel: ElevationLevel | None = None
    linuxUserConfiguration: LinuxUserConfiguration | None = None
    windowsUserConfiguration: WindowsUserConfiguration | None = None


class ApplicationPackageReference(Wire):
    id: str
    version: str | None = None


class UpgradePolicy(Wire):
    mode: Annotated[str, AfterValidator(one_of("automatic", "manual", "rolling"))]
    automaticOSUpgradePolicy: dict[str, Any] | None = None
    rollingUpgradePolicy: dict[str, Any] | None = None


class PoolProperties(Wire):
    displayName: str | None = Field(default=None, max_length=1024)
    vmSize: str | None = None
    deploymentConfiguration: DeploymentConfiguration | None = None
    scaleSettings: ScaleSettings | None = None
    interNodeCommunication: Annotated[str, AfterValidator(one_of("Enabled", "Disabled"))] | None = None
    networkConfiguration: NetworkConfiguration | None = None
    taskSlotsPerNode: Int32 | None = None  # its range depends on the VM size: the Batch rules say so
    maxTasksPerNode: Int32 | None = None  # its name before api-version 2020-09-01
    taskSchedulingPolicy: TaskSchedulingPolicy | None = None
    userAccounts: list[UserAccount] | None = None
    metadata: list[MetadataItem] | None = None
    startTask: StartTask | None = None
    applicationPackages: list[ApplicationPackageReference] | None = None
    certificates: list[dict[str, Any]] | None = None
    mountConfiguration: list[dict[str, Any]] | None = None
    upgradePolicy: UpgradePolicy | None = None
    resourceTags: Tags | None = None
    targetNodeCommunicationMode: Annotated[str, AfterValidator(one_of(
        "Default", "Classic", "Simplified"))] | None = None


class PoolIdentity(Wire):
    type: Annotated[str, AfterValidator(one_of("UserAssigned", "None"))] | None = None
    userAssignedIdentities: dict[str, dict[str, Any] | None] | None = None


class Pool(Wire):
    """``PUT`` (create or replace) and ``PATCH`` of a pool."""

    properties: PoolProperties | None = None
    identity: PoolIdentity | None = None
    tags: Tags | None = None
    etag: str | None = None  # read-only

