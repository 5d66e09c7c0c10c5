"""Wire models of the ``Microsoft.Compute`` request bodies Shoal reads: virtual machines (and their PATCH,
extensions and run-command input), managed disks, snapshots (and ``beginGetAccess``), managed images,
galleries, gallery image definitions and gallery image versions.

Names, types and enums are Azure's (``azure-rest-api-specs``: ``ComputeRP``, ``DiskRP``, ``GalleryRP``);
read-only properties that a body read back from a GET carries are accepted. Required properties that the
domain rules already check with their own message (``hardwareProfile.vmSize``, ``creationData.createOption``,
an image's ``osDisk.osType``...) stay optional here; value rules that depend on state (a source exists, a LUN
is unique, a region is served) are the domain's.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from shoal.schemas.arm_bodies import (
    Base64,
    Count32,
    DiskSizeGB,
    Duration,
    Int32,
    Int64,
    Lun,
    Positive32,
    Sku,
    SubResource,
    Timestamp,
    TrackedResource,
    Wire,
    one_of,
)

MAX_DATA_DISKS = 64

# --- enums (as Azure spells them) ---------------------------------------------------------------------------
OsType = Annotated[str, AfterValidator(one_of("Windows", "Linux"))]
OsState = Annotated[str, AfterValidator(one_of("Generalized", "Specialized"))]
Caching = Annotated[str, AfterValidator(one_of("None", "ReadOnly", "ReadWrite"))]
HyperVGeneration = Annotated[str, AfterValidator(one_of("V1", "V2"))]
Architecture = Annotated[str, AfterValidator(one_of("x64", "Arm64"))]
DiskStorageAccountType = Annotated[str, AfterValidator(one_of(
    "Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "UltraSSD_LRS", "Premium_ZRS", "StandardSSD_ZRS",
    "PremiumV2_LRS"))]
SnapshotStorageAccountType = Annotated[str, AfterValidator(one_of("Standard_LRS", "Premium_LRS", "Standard_ZRS"))]
GalleryStorageAccountType = Annotated[str, AfterValidator(one_of(
    "Standard_LRS", "Standard_ZRS", "Premium_LRS", "PremiumV2_LRS"))]
VmDiskCreateOption = Annotated[str, AfterValidator(one_of("FromImage", "Empty", "Attach", "Copy", "Restore"))]
DiskCreateOption = Annotated[str, AfterValidator(one_of(
    "Empty", "Attach", "FromImage", "Import", "Copy", "Restore", "Upload", "CopyStart", "ImportSecure",
    "UploadPreparedSecure", "CopyFromSanSnapshot"))]
DeleteOption = Annotated[str, AfterValidator(one_of("Delete", "Detach"))]
NetworkAccessPolicy = Annotated[str, AfterValidator(one_of("AllowAll", "AllowPrivate", "DenyAll"))]
PublicNetworkAccess = Annotated[str, AfterValidator(one_of("Enabled", "Disabled"))]
DataAccessAuthMode = Annotated[str, AfterValidator(one_of("AzureActiveDirectory", "None"))]
EncryptionType = Annotated[str, AfterValidator(one_of(
    "EncryptionAtRestWithPlatformKey", "EncryptionAtRestWithCustomerKey",
    "EncryptionAtRestWithPlatformAndCustomerKeys"))]
AccessLevel = Annotated[str, AfterValidator(one_of("None", "Read", "Write"))]
FileFormat = Annotated[str, AfterValidator(one_of("VHD", "VHDX"))]


# --- virtual machines ---------------------------------------------------------------------------------------
class VmSizeProperties(Wire):
    vCPUsAvailable: Int32 | None = None
    vCPUsPerCore: Int32 | None = None


class HardwareProfile(Wire):
    vmSize: str | None = None
    vmSizeProperties: VmSizeProperties | None = None


class ImageReference(Wire):
    """A marketplace image (publisher/offer/sku/version) or an image by id."""

    id: str | None = None
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    exactVersion: str | None = None
    sharedGalleryImageId: str | None = None
    communityGalleryImageId: str | None = None


class ManagedDiskParameters(Wire):
    id: str | None = None
    storageAccountType: DiskStorageAccountType | None = None
    diskEncryptionSet: SubResource | None = None
    securityProfile: dict[str, Any] | None = None


class VirtualHardDisk(Wire):
    uri: str | None = None


class DiffDiskSettings(Wire):
    option: Annotated[str, AfterValidator(one_of("Local"))] | None = None
    placement: Annotated[str, AfterValidator(one_of("CacheDisk", "ResourceDisk", "NvmeDisk"))] | None = None


class VmDisk(Wire):
    """What an OS disk and a data disk of a VM share."""

    name: str | None = None
    vhd: VirtualHardDisk | None = None
    image: VirtualHardDisk | None = None
    caching: Caching | None = None
    writeAcceleratorEnabled: bool | None = None
    createOption: VmDiskCreateOption | None = None  # Azure requires it; Shoal defaults it (FromImage, Empty)
    diskSizeGB: DiskSizeGB | None = None
    managedDisk: ManagedDiskParameters | None = None
    deleteOption: DeleteOption | None = None


class OSDisk(VmDisk):
    osType: OsType | None = None
    encryptionSettings: dict[str, Any] | None = None
    diffDiskSettings: DiffDiskSettings | None = None


class DataDisk(VmDisk):
    lun: Lun
    sourceResource: SubResource | None = None
    toBeDetached: bool | None = None
    detachOption: Annotated[str, AfterValidator(one_of("ForceDetach"))] | None = None
    diskIOPSReadWrite: Int64 | None = None
    diskMBpsReadWrite: Int64 | None = None


class StorageProfile(Wire):
    imageReference: ImageReference | None = None
    osDisk: OSDisk | None = None
    dataDisks: list[DataDisk] | None = Field(default=None, max_length=MAX_DATA_DISKS)
    diskControllerType: Annotated[str, AfterValidator(one_of("SCSI", "NVMe"))] | None = None
    alignRegionalDisksToVMZone: bool | None = None


class SshPublicKey(Wire):
    path: str | None = None
    keyData: str | None = None


class SshConfiguration(Wire):
    publicKeys: list[SshPublicKey] | None = None


PatchMode = Annotated[str, AfterValidator(one_of("ImageDefault", "AutomaticByPlatform"))]


class LinuxPatchSettings(Wire):
    patchMode: PatchMode | None = None
    assessmentMode: PatchMode | None = None
    automaticByPlatformSettings: dict[str, Any] | None = None


class LinuxConfiguration(Wire):
    disablePasswordAuthentication: bool | None = None
    ssh: SshConfiguration | None = None
    provisionVMAgent: bool | None = None
    patchSettings: LinuxPatchSettings | None = None
    enableVMAgentPlatformUpdates: bool | None = None


class OSProfile(Wire):
    computerName: str | None = Field(default=None, min_length=1, max_length=64)
    adminUsername: str | None = Field(default=None, max_length=64)
    adminPassword: str | None = Field(default=None, max_length=123)
    customData: Base64 | None = None
    windowsConfiguration: dict[str, Any] | None = None
    linuxConfiguration: LinuxConfiguration | None = None
    secrets: list[dict[str, Any]] | None = None
    allowExtensionOperations: bool | None = None
    requireGuestProvisionSignal: bool | None = None


class NetworkInterfaceReferenceProperties(Wire):
    primary: bool | None = None
    deleteOption: DeleteOption | None = None


class NetworkInterfaceReference(Wire):
    id: str | None = None
    properties: NetworkInterfaceReferenceProperties | None = None


class NetworkProfile(Wire):
    networkInterfaces: list[NetworkInterfaceReference] | None = None
    networkApiVersion: str | None = None
    networkInterfaceConfigurations: list[dict[str, Any]] | None = None


class UefiSettings(Wire):
    secureBootEnabled: bool | None = None
    vTpmEnabled: bool | None = None


class SecurityProfile(Wire):
    uefiSettings: UefiSettings | None = None
    encryptionAtHost: bool | None = None
    securityType: Annotated[str, AfterValidator(one_of("TrustedLaunch", "ConfidentialVM", "Standard"))] | None = None
    encryptionIdentity: dict[str, Any] | None = None
    proxyAgentSettings: dict[str, Any] | None = None


class BootDiagnostics(Wire):
    enabled: bool | None = None
    storageUri: str | None = None


class DiagnosticsProfile(Wire):
    bootDiagnostics: BootDiagnostics | None = None


class AdditionalCapabilities(Wire):
    ultraSSDEnabled: bool | None = None
    hibernationEnabled: bool | None = None


class BillingProfile(Wire):
    maxPrice: float | None = None


class VirtualMachineProperties(Wire):
    hardwareProfile: HardwareProfile | None = None
    storageProfile: StorageProfile | None = None
    additionalCapabilities: AdditionalCapabilities | None = None
    osProfile: OSProfile | None = None
    networkProfile: NetworkProfile | None = None
    securityProfile: SecurityProfile | None = None
    diagnosticsProfile: DiagnosticsProfile | None = None
    availabilitySet: SubResource | None = None
    virtualMachineScaleSet: SubResource | None = None
    proximityPlacementGroup: SubResource | None = None
    host: SubResource | None = None
    hostGroup: SubResource | None = None
    priority: Annotated[str, AfterValidator(one_of("Regular", "Low", "Spot"))] | None = None
    evictionPolicy: Annotated[str, AfterValidator(one_of("Deallocate", "Delete"))] | None = None
    billingProfile: BillingProfile | None = None
    licenseType: str | None = None
    extensionsTimeBudget: Duration | None = None
    platformFaultDomain: Int32 | None = None
    userData: Base64 | None = None
    scheduledEventsProfile: dict[str, Any] | None = None
    capacityReservation: dict[str, Any] | None = None
    applicationProfile: dict[str, Any] | None = None


class VirtualMachine(TrackedResource):
    """``PUT`` and ``PATCH`` (VirtualMachineUpdate) of a virtual machine."""

    properties: VirtualMachineProperties | None = None


class VirtualMachineExtensionProperties(Wire):
    forceUpdateTag: str | None = None
    publisher: str | None = None
    type: str | None = None
    typeHandlerVersion: str | None = None
    autoUpgradeMinorVersion: bool | None = None
    enableAutomaticUpgrade: bool | None = None
    settings: Any = None
    protectedSettings: Any = None
    suppressFailures: bool | None = None
    provisionAfterExtensions: list[str] | None = None
    protectedSettingsFromKeyVault: dict[str, Any] | None = None


class VirtualMachineExtension(TrackedResource):
    properties: VirtualMachineExtensionProperties | None = None


class RunCommandParameter(Wire):
    name: str
    value: str


class RunCommandInput(Wire):
    """``POST .../virtualMachines/{vm}/runCommand``."""

    commandId: str | None = None  # Azure requires it; the domain names the ones Shoal runs
    script: list[str] | None = None
    parameters: list[RunCommandParameter] | None = None


# --- disks and snapshots ------------------------------------------------------------------------------------
class ImageDiskReference(Wire):
    id: str | None = None
    sharedGalleryImageId: str | None = None
    communityGalleryImageId: str | None = None
    lun: Lun | None = None


class CreationData(Wire):
    createOption: DiskCreateOption | None = None
    storageAccountId: str | None = None
    imageReference: ImageDiskReference | None = None
    galleryImageReference: ImageDiskReference | None = None
    sourceUri: str | None = None
    sourceResourceId: str | None = None
    sourceUniqueId: str | None = None
    uploadSizeBytes: Int64 | None = None
    logicalSectorSize: Int32 | None = None
    securityDataUri: str | None = None
    securityMetadataUri: str | None = None
    performancePlus: bool | None = None
    elasticSanResourceId: str | None = None
    provisionedBandwidthCopySpeed: Annotated[str, AfterValidator(one_of("None", "Enhanced"))] | None = None
    instantAccessDurationMinutes: Int64 | None = None


class EncryptionSettingsCollection(Wire):
    enabled: bool | None = None
    encryptionSettings: list[dict[str, Any]] | None = None
    encryptionSettingsVersion: str | None = None


class Encryption(Wire):
    diskEncryptionSetId: str | None = None
    type: EncryptionType | None = None


class SupportedCapabilities(Wire):
    diskControllerTypes: str | None = None
    acceleratedNetwork: bool | None = None
    architecture: Architecture | None = None


class DiskSecurityProfile(Wire):
    securityType: Annotated[str, AfterValidator(one_of(
        "TrustedLaunch", "ConfidentialVM_VMGuestStateOnlyEncryptedWithPlatformKey",
        "ConfidentialVM_DiskEncryptedWithPlatformKey", "ConfidentialVM_DiskEncryptedWithCustomerKey",
        "ConfidentialVM_NonPersistedTPM"))] | None = None
    secureVMDiskEncryptionSetId: str | None = None


class DiskProperties(Wire):
    """``properties`` of a disk (and, with ``incremental``, of a snapshot); also their PATCH."""

    osType: OsType | None = None
    hyperVGeneration: HyperVGeneration | None = None
    purchasePlan: dict[str, Any] | None = None
    supportedCapabilities: SupportedCapabilities | None = None
    creationData: CreationData | None = None
    diskSizeGB: DiskSizeGB | None = None
    encryptionSettingsCollection: EncryptionSettingsCollection | None = None
    diskIOPSReadWrite: Int64 | None = None
    diskMBpsReadWrite: Int64 | None = None
    diskIOPSReadOnly: Int64 | None = None
    diskMBpsReadOnly: Int64 | None = None
    maxShares: Positive32 | None = None
    networkAccessPolicy: NetworkAccessPolicy | None = None
    diskAccessId: str | None = None
    burstingEnabled: bool | None = None
    tier: str | None = None
    encryption: Encryption | None = None
    publicNetworkAccess: PublicNetworkAccess | None = None
    dataAccessAuthMode: DataAccessAuthMode | None = None
    optimizedForFrequentAttach: bool | None = None
    securityProfile: DiskSecurityProfile | None = None
    supportsHibernation: bool | None = None
    completionPercent: float | None = None


class DiskSku(Sku):
    name: DiskStorageAccountType | None = None
    tier: str | None = None


class Disk(TrackedResource):
    """``PUT`` and ``PATCH`` (DiskUpdate) of a managed disk."""

    sku: DiskSku | None = None
    properties: DiskProperties | None = None


class SnapshotProperties(DiskProperties):
    incremental: bool | None = None
    copyCompletionError: dict[str, Any] | None = None


class SnapshotSku(Sku):
    name: SnapshotStorageAccountType | None = None
    tier: str | None = None


class Snapshot(TrackedResource):
    sku: SnapshotSku | None = None
    properties: SnapshotProperties | None = None


class GrantAccessData(Wire):
    """``POST .../beginGetAccess`` of a disk or snapshot."""

    access: AccessLevel | None = None  # Azure requires it; the domain says which one Shoal grants
    durationInSeconds: Positive32 | None = None
    getSecureVMGuestStateSAS: bool | None = None
    fileFormat: FileFormat | None = None


# --- managed images -----------------------------------------------------------------------------------------
class ImageDisk(Wire):
    """One disk of a managed image: from a snapshot, a managed disk or a disk file (``blobUri``)."""

    snapshot: SubResource | None = None
    managedDisk: SubResource | None = None
    blobUri: str | None = None
    caching: Caching | None = None
    diskSizeGB: DiskSizeGB | None = None
    storageAccountType: DiskStorageAccountType | None = None
    diskEncryptionSet: SubResource | None = None


class ImageOSDisk(ImageDisk):
    osType: OsType | None = None  # Azure requires both; the domain checks them with its own message
    osState: OsState | None = None


class ImageDataDisk(ImageDisk):
    lun: Lun


class ImageStorageProfile(Wire):
    osDisk: ImageOSDisk | None = None
    dataDisks: list[ImageDataDisk] | None = Field(default=None, max_length=MAX_DATA_DISKS)
    zoneResilient: bool | None = None


class ImageProperties(Wire):
    sourceVirtualMachine: SubResource | None = None
    storageProfile: ImageStorageProfile | None = None
    hyperVGeneration: HyperVGeneration | None = None


class Image(TrackedResource):
    properties: ImageProperties | None = None


# --- galleries ----------------------------------------------------------------------------------------------
class SharingProfile(Wire):
    permissions: Annotated[str, AfterValidator(one_of("Private", "Groups", "Community"))] | None = None
    groups: list[dict[str, Any]] | None = None
    communityGalleryInfo: dict[str, Any] | None = None


class GalleryProperties(Wire):
    description: str | None = None
    identifier: dict[str, Any] | None = None  # read-only (uniqueName)
    sharingProfile: SharingProfile | None = None
    softDeletePolicy: dict[str, Any] | None = None


class Gallery(TrackedResource):
    properties: GalleryProperties | None = None


class GalleryImageIdentifier(Wire):
    publisher: str | None = None  # Azure requires all three; the domain says so for the whole identifier
    offer: str | None = None
    sku: str | None = None


class ResourceRange(Wire):
    min: Int32 | None = None
    max: Int32 | None = None


class RecommendedMachineConfiguration(Wire):
    vCPUs: ResourceRange | None = None
    memory: ResourceRange | None = None


class GalleryImageFeature(Wire):
    name: str | None = None
    value: str | None = None


class GalleryImageProperties(Wire):
    description: str | None = None
    eula: str | None = None
    privacyStatementUri: str | None = None
    releaseNoteUri: str | None = None
    osType: OsType | None = None
    osState: OsState | None = None
    hyperVGeneration: HyperVGeneration | None = None
    endOfLifeDate: Timestamp | None = None
    identifier: GalleryImageIdentifier | None = None
    recommended: RecommendedMachineConfiguration | None = None
    disallowed: dict[str, Any] | None = None
    purchasePlan: dict[str, Any] | None = None
    features: list[GalleryImageFeature] | None = None
    architecture: Architecture | None = None
    allowUpdateImage: bool | None = None


class GalleryImage(TrackedResource):
    properties: GalleryImageProperties | None = None


class TargetRegion(Wire):
    name: str
    regionalReplicaCount: Positive32 | None = None
    storageAccountType: GalleryStorageAccountType | None = None
    encryption: dict[str, Any] | None = None
    excludeFromLatest: bool | None = None


class PublishingProfile(Wire):
    targetRegions: list[TargetRegion] | None = None
    replicaCount: Positive32 | None = None
    excludeFromLatest: bool | None = None
    publishedDate: str | None = None  # read-only
    endOfLifeDate: Timestamp | None = None
    storageAccountType: GalleryStorageAccountType | None = None
    replicationMode: Annotated[str, AfterValidator(one_of("Full", "Shallow"))] | None = None
    targetExtendedLocations: list[dict[str, Any]] | None = None


class GalleryArtifactSource(Wire):
    id: str | None = None
    communityGalleryImageId: str | None = None
    virtualMachineId: str | None = None


class GalleryDiskImageSource(Wire):
    id: str | None = None
    uri: str | None = None
    storageAccountId: str | None = None


class GalleryDiskImage(Wire):
    hostCaching: Caching | None = None
    source: GalleryDiskImageSource | None = None
    sizeInGB: Count32 | None = None  # read-only


class GalleryDataDiskImage(GalleryDiskImage):
    lun: Lun


class GalleryImageVersionStorageProfile(Wire):
    source: GalleryArtifactSource | None = None
    osDiskImage: GalleryDiskImage | None = None
    dataDiskImages: list[GalleryDataDiskImage] | None = Field(default=None, max_length=MAX_DATA_DISKS)


class SafetyProfile(Wire):
    allowDeletionOfReplicatedLocations: bool | None = None
    blockDeletionBeforeEndOfLife: bool | None = None


class GalleryImageVersionProperties(Wire):
    publishingProfile: PublishingProfile | None = None
    storageProfile: GalleryImageVersionStorageProfile | None = None
    safetyProfile: SafetyProfile | None = None
    securityProfile: dict[str, Any] | None = None


class GalleryImageVersion(TrackedResource):
    properties: GalleryImageVersionProperties | None = None


# The body model of PUT and PATCH, by collection path below the provider (as ``domain/compute/registry.py``).
BODIES: dict[str, type[TrackedResource]] = {
    "disks": Disk, "snapshots": Snapshot, "images": Image, "galleries": Gallery,
    "galleries/images": GalleryImage, "galleries/images/versions": GalleryImageVersion,
    "virtualMachines": VirtualMachine, "virtualMachines/extensions": VirtualMachineExtension,
}
