"""Bad input to Microsoft.Compute gets clear ARM errors and changes nothing; the import path works."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute.models import (
    CreationData,
    DataDisk,
    Disk,
    HardwareProfile,
    Image,
    ImageDataDisk,
    ImageOSDisk,
    ImageReference,
    ImageStorageProfile,
    RunCommandInput,
    Snapshot,
    StorageProfile,
    SubResource,
    VirtualMachine,
)
from azure.mgmt.resource.resources.models import ResourceGroup

from harness import ShoalServer
from shoal.azure import Shoal

LOCATION = "westus"
HOST = ImageReference(publisher="shoal", offer="host", sku="host", version="latest")


@pytest.fixture(scope="module")
def group(shoal: Shoal) -> str:
    name = f"rules-{uuid.uuid4().hex[:6]}"
    shoal.resource_client().resource_groups.create_or_update(name, ResourceGroup(location=LOCATION))
    return name


def snapshot_ids(shoal: Shoal, group: str) -> dict[str, str]:
    """An OS-disk snapshot and a data-disk snapshot made from a host-based VM."""
    compute = shoal.compute_client()
    vm = compute.virtual_machines.begin_create_or_update(group, "src", VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=HOST, data_disks=[
            DataDisk(lun=0, create_option="Empty", disk_size_gb=4)]))).result()
    out = {}
    for key, disk_id in (("os", vm.storage_profile.os_disk.managed_disk.id),
                         ("data", vm.storage_profile.data_disks[0].managed_disk.id)):
        snap = compute.snapshots.begin_create_or_update(group, f"{key}-snap", Snapshot(
            location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk_id))).result()
        out[key] = snap.id
    return out


@pytest.fixture(scope="module")
def snaps(shoal: Shoal, group: str) -> dict[str, str]:
    return snapshot_ids(shoal, group)


def expect_error(fn: Any, status: int | None, code: str, fragment: str = "") -> HttpResponseError:
    """``status`` None: the request was accepted and its long-running operation failed."""
    with pytest.raises(HttpResponseError) as info:
        fn()
    if status is not None:
        assert info.value.status_code == status, info.value
    assert info.value.error.code == code, info.value
    assert fragment in info.value.error.message
    return info.value


def test_snapshot_of_a_missing_disk(shoal: Shoal, group: str) -> None:
    compute = shoal.compute_client()
    missing = f"/subscriptions/{shoal.subscription_id}/resourceGroups/{group}/providers/Microsoft.Compute/disks/nope"
    expect_error(lambda: compute.snapshots.begin_create_or_update(group, "s1", Snapshot(
        location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=missing))).result(),
        404, "NotFound", "disks/nope")
    with pytest.raises(ResourceNotFoundError):
        compute.snapshots.get(group, "s1")


def test_image_from_a_missing_snapshot(shoal: Shoal, group: str) -> None:
    compute = shoal.compute_client()
    missing = f"/subscriptions/{shoal.subscription_id}/resourceGroups/{group}/providers/Microsoft.Compute/snapshots/no"
    expect_error(lambda: compute.images.begin_create_or_update(group, "i1", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", snapshot=SubResource(id=missing))))).result(), 404, "NotFound")
    with pytest.raises(ResourceNotFoundError):
        compute.images.get(group, "i1")


@pytest.mark.parametrize(("luns", "fragment"), [([0, 0], "Duplicate LUN"), ([-1], "lun"), ([64], "lun")])
def test_wrong_and_duplicate_luns(shoal: Shoal, group: str, snaps: dict[str, str], luns: list[int],
                                  fragment: str) -> None:
    compute = shoal.compute_client()
    expect_error(lambda: compute.images.begin_create_or_update(group, "bad-luns", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snaps["os"])),
            data_disks=[ImageDataDisk(lun=lun, snapshot=SubResource(id=snaps["data"])) for lun in luns]))).result(),
        400, "InvalidParameter", fragment)


def test_snapshots_of_the_wrong_kind(shoal: Shoal, group: str, snaps: dict[str, str]) -> None:
    compute = shoal.compute_client()
    # A data-disk snapshot as the OS disk, and an OS snapshot as a data disk.
    expect_error(lambda: compute.images.begin_create_or_update(group, "wrong-kind", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snaps["data"]))))).result(),
        400, "InvalidParameter", "data disk")
    expect_error(lambda: compute.images.begin_create_or_update(group, "wrong-kind", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snaps["os"])),
            data_disks=[ImageDataDisk(lun=0, snapshot=SubResource(id=snaps["os"]))]))).result(),
        400, "InvalidParameter", "OS disk")
    # A disk id where a snapshot id belongs.
    disk_id = snaps["os"].replace("/snapshots/os-snap", "/disks/whatever")
    expect_error(lambda: compute.images.begin_create_or_update(group, "wrong-kind", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", snapshot=SubResource(id=disk_id))))).result(),
        400, "InvalidParameter", "Microsoft.Compute/disks")
    with pytest.raises(ResourceNotFoundError):
        compute.images.get(group, "wrong-kind")


@pytest.mark.parametrize("bad_id", ["not-an-id", "/subscriptions/x/resourceGroups", "/subscriptions/x/foo/bar/baz"])
def test_malformed_resource_ids(shoal: Shoal, group: str, bad_id: str) -> None:
    compute = shoal.compute_client()
    expect_error(lambda: compute.snapshots.begin_create_or_update(group, "malformed", Snapshot(
        location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=bad_id))).result(),
        400, "InvalidParameter")


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("evil", ["traversal", "absolute", "device"])
def test_disk_file_with_traversal_or_devices_is_refused(shoal: Shoal, server: ShoalServer, group: str,
                                                         evil: str) -> None:
    work = server.import_dir / f"evil-{uuid.uuid4().hex}"
    work.mkdir()
    victim = work / "outside.txt"
    if evil == "traversal":
        member = _file(f"../{work.name}/outside.txt", b"pwned")
    elif evil == "absolute":
        member = _file(str(victim), b"pwned")
    else:
        dev = tarfile.TarInfo("dev/sda")
        dev.type, dev.devmajor, dev.devminor = tarfile.BLKTYPE, 8, 0
        member = (dev, None)
    tar = _tarball(work / "evil.tar", [_file("etc/os-release", b"ID=evil\n"), member])
    compute = shoal.compute_client()
    expect_error(lambda: compute.disks.begin_create_or_update(group, f"evil-{evil}", Disk(
        location=LOCATION, os_type="Linux", creation_data=CreationData(create_option="Import",
                                                                      source_uri=tar.as_uri()))).result(),
        None, "InvalidParameter", "refused")
    assert not victim.exists()
    assert compute.disks.get(group, f"evil-{evil}").provisioning_state == "Failed"


def test_import_rootfs_tarball_snapshot_and_image(shoal: Shoal, server: ShoalServer, group: str) -> None:
    work = server.import_dir
    tar = _tarball(work / "rootfs.tar", [_file("etc/os-release", b"ID=imported\nVERSION_ID=1\n"),
                                          _file("opt/app/README", b"imported application\n")])
    compute = shoal.compute_client()
    disk = compute.disks.begin_create_or_update(group, "imported", Disk(
        location=LOCATION, os_type="Linux", creation_data=CreationData(create_option="Import",
                                                                      source_uri=tar.as_uri()))).result()
    assert disk.provisioning_state == "Succeeded"
    snap = compute.snapshots.begin_create_or_update(group, "imported-snap", Snapshot(
        location=LOCATION, creation_data=CreationData(create_option="Copy", source_resource_id=disk.id))).result()
    image = compute.images.begin_create_or_update(group, "imported-img", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", snapshot=SubResource(id=snap.id))))).result()
    assert image.provisioning_state == "Succeeded"
    # And straight from the disk file (blobUri), as `az image create --source <vhd uri>` does.
    direct = compute.images.begin_create_or_update(group, "imported-direct", Image(
        location=LOCATION, storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", blob_uri=tar.as_uri())))).result()
    assert direct.provisioning_state == "Succeeded"


def test_local_disk_files_are_read_only_below_the_import_directory(shoal: Shoal, server: ShoalServer, group: str,
                                                                     tmp_path: Path) -> None:
    compute = shoal.compute_client()
    outside = _tarball(tmp_path / "outside.tar", [_file("etc/os-release", b"ID=outside\n")])
    link = server.import_dir / f"link-{uuid.uuid4().hex[:6]}.tar"
    link.symlink_to(outside)  # a link placed in the import directory leads nowhere either
    for name, uri in (("host-file", "/etc/passwd"), ("host-url", outside.as_uri()), ("via-link", link.as_uri()),
                      ("metadata", "http://169.254.169.254/metadata/instance"),
                      ("own-api", f"{server.base_url}/healthz")):
        expect_error(lambda uri=uri, name=name: compute.disks.begin_create_or_update(group, f"imp-{name}", Disk(
            location=LOCATION, os_type="Linux", creation_data=CreationData(create_option="Import",
                                                                          source_uri=uri))).result(),
            None, "InvalidParameter", "")
        assert compute.disks.get(group, f"imp-{name}").provisioning_state == "Failed"


def test_vm_cannot_see_host_private_directories(shoal: Shoal, server: ShoalServer, group: str) -> None:
    if server.env.get("isolation") != "namespaces":
        pytest.skip("isolation is the point of this test: it needs the namespace runtime")
    compute = shoal.compute_client()
    compute.virtual_machines.begin_create_or_update(group, "iso", VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=HOST))).result()
    marker = Path.home() / f".shoal-isolation-{uuid.uuid4().hex}"
    marker.write_text("secret")
    try:
        result = compute.virtual_machines.begin_run_command(group, "iso", RunCommandInput(
            command_id="RunShellScript", script=[
                f"ls -a {Path.home()} | grep -c shoal-isolation || true",
                f"test -e {server.state_dir}/shoal.db && echo STATE-VISIBLE || echo state-hidden",
                "rm -rf /usr/share/doc && echo removed"])).result()
        message = result.value[0].message
        assert "STATE-VISIBLE" not in message and "state-hidden" in message
        assert message.split("[stdout]\n", 1)[1].startswith("0")
        assert "removed" in message
        assert Path("/usr/share/doc").is_dir() and any(Path("/usr/share/doc").iterdir())
    finally:
        marker.unlink()
