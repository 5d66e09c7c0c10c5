"""Every Microsoft.Compute resource kind, by its collection path below the provider namespace."""

from __future__ import annotations

from shoal.domain.compute import disks, extensions, galleries, images, vms
from shoal.domain.compute.kinds import ResourceKind

KINDS: dict[str, ResourceKind] = {
    "disks": disks.DiskKind(), "snapshots": disks.SnapshotKind(), "images": images.ImageKind(),
    "galleries": galleries.GalleryKind(), "galleries/images": galleries.GalleryImageKind(),
    "galleries/images/versions": galleries.GalleryImageVersionKind(),
    "virtualMachines": vms.VirtualMachineKind(), "virtualMachines/extensions": extensions.ExtensionKind(),
}
