"""Marketplace catalog, its API renderings, and bases built from tarballs and (for real) with debootstrap."""

from __future__ import annotations

import fcntl
import io
import json
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness import scratch_root
from shoal.cli.marketplace import app as marketplace_app
from shoal.runtime import debootstrap
from shoal.runtime.debootstrap import DebootstrapError, PhaseTracker, finalize_rootfs
from shoal.runtime.layers import LayerStore
from shoal.runtime.marketplace import (
    BaseError,
    BaseProvider,
    Catalog,
    CatalogError,
    MarketplaceImage,
    browse_tree,
    default_images,
    node_agent_for_os,
    parse_urn,
    supported_images,
    vm_image_properties,
)

DEBIAN_12 = {"ID": "debian", "VERSION_ID": "12"}


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="shoal-mkt-", dir=scratch_root()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_rootfs_tarball(path: Path, marker: str = "tiny 1") -> Path:
    """A tiny root filesystem: enough files, a symlink and a dir to be recognisable after import."""
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, target: str = "",
                mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 1_700_000_000
            if kind == tarfile.SYMTYPE:
                info.linkname = target
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("etc", kind=tarfile.DIRTYPE, mode=0o755)
        add("etc/os-release", f'ID=tiny\nVERSION_ID="1"\nPRETTY_NAME="{marker}"\n'.encode())
        add("bin", kind=tarfile.DIRTYPE, mode=0o755)
        add("bin/hello", b"#!/bin/sh\necho hello\n", mode=0o755)
        add("usr", kind=tarfile.DIRTYPE, mode=0o755)
        add("usr/bin", kind=tarfile.SYMTYPE, target="../bin")
    return path


def tarball_image(path: Path, version: str = "1.0.0") -> MarketplaceImage:
    return MarketplaceImage(publisher="acme", offer="tiny", sku="1", version=version, os_type="Linux",
                            node_agent_sku_id="batch.node.tiny 1", verification_type="unverified", first_party=True,
                            plan=None, source=f"tarball:{path}")


# --- catalog ------------------------------------------------------------------------------------------------

def test_default_catalog_has_debian_host_and_a_third_party_image() -> None:
    catalog = Catalog.load(None, os_release=DEBIAN_12)
    by_urn = {image.urn: image for image in catalog.images()}
    assert set(by_urn) == {"debian:debian-12:12:1.0.0", "shoal:host:host:1.0.0",
                           "example-isv:licensed-app:standard:1.0.0"}
    debian = by_urn["debian:debian-12:12:1.0.0"]
    assert (debian.source, debian.node_agent_sku_id, debian.verification_type, debian.first_party) == \
        ("debootstrap:bookworm", "batch.node.debian 12", "verified", True)
    assert debian.plan is None and debian.os_type == "Linux"
    host = by_urn["shoal:host:host:1.0.0"]
    assert host.source == "host" and host.first_party and host.node_agent_sku_id == "batch.node.debian 12"
    isv = by_urn["example-isv:licensed-app:standard:1.0.0"]
    assert not isv.first_party and isv.source == "host"
    assert isv.plan == {"name": "standard", "product": "licensed-app", "publisher": "example-isv"}
    # The host entries follow the host's OS.
    ubuntu_host = Catalog.load(None, os_release={"ID": "ubuntu", "VERSION_ID": "22.04"}).find("shoal", "host", "host")
    assert ubuntu_host is not None and ubuntu_host.node_agent_sku_id == "batch.node.ubuntu 22.04"


@pytest.mark.parametrize(("os_release", "expected"), [
    ({"ID": "debian", "VERSION_ID": "12"}, "batch.node.debian 12"),
    ({"ID": "ubuntu", "VERSION_ID": "24.04"}, "batch.node.ubuntu 24.04"),
    ({"ID": "rocky", "VERSION_ID": "9.3"}, "batch.node.el 9"),
    ({"ID": "almalinux", "VERSION_ID": "8.10"}, "batch.node.el 8"),
    ({}, "batch.node.linux unknown"),
])
def test_node_agent_follows_the_os(os_release: dict[str, str], expected: str) -> None:
    assert node_agent_for_os(os_release) == expected


def test_operator_json_extends_overrides_and_removes(work: Path) -> None:
    (work / "images").mkdir()
    config = work / "catalog.json"
    config.write_text(json.dumps({"images": [
        # A newer Debian 12 version from a prebuilt tarball (relative to the file).
        {"publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "1.10.0",
         "nodeAgentSKUId": "batch.node.debian 12", "verificationType": "verified",
         "source": "tarball:images/debian.tar.zst", "capabilities": ["DockerCompatible"],
         "batchSupportEndOfLife": "2028-06-30"},
        # Override a default (same URN, different case): the host image becomes verified.
        {"publisher": "SHOAL", "offer": "Host", "sku": "host", "version": "1.0.0",
         "node_agent_sku_id": "batch.node.debian 12", "verification_type": "verified", "source": "host"},
        # Drop the demo third-party image.
        {"publisher": "example-isv", "offer": "licensed-app", "sku": "standard", "version": "1.0.0", "remove": True},
        # A new third-party image: no first_party flag needed when a plan is given.
        {"publisher": "acme", "offer": "solver", "sku": "pro", "version": "2.0.0",
         "node_agent_sku_id": "batch.node.debian 12", "source": "debootstrap:bookworm",
         "plan": {"name": "pro", "product": "solver", "publisher": "acme"}},
    ]}))
    catalog = Catalog.load(config, os_release=DEBIAN_12)
    urns = [image.urn for image in catalog.images()]
    assert urns == ["acme:solver:pro:2.0.0", "debian:debian-12:12:1.0.0", "Debian:debian-12:12:1.10.0",
                    "SHOAL:Host:host:1.0.0"]
    newer = catalog.find("debian", "debian-12", "12", "latest")
    assert newer is not None and newer.version == "1.10.0"
    assert newer.source == f"tarball:{(work / 'images' / 'debian.tar.zst').resolve()}"
    assert newer.capabilities == ("DockerCompatible",)
    assert newer.batch_support_end_of_life == "2028-06-30T00:00:00Z"
    assert newer.verification_type == "verified" and newer.first_party
    host = catalog.find("shoal", "host", "host", "1.0.0")
    assert host is not None and host.verification_type == "verified"
    assert catalog.find("example-isv", "licensed-app", "standard") is None
    acme = catalog.find("ACME", "Solver", "PRO")
    assert acme is not None and not acme.first_party and acme.verification_type == "unverified"


def test_operator_toml_can_replace_the_defaults(work: Path) -> None:
    config = work / "catalog.toml"
    config.write_text(
        'replace_defaults = true\n\n'
        '[[images]]\npublisher = "acme"\noffer = "tiny"\nsku = "1"\nversion = "3.1.4"\n'
        'node_agent_sku_id = "batch.node.tiny 1"\nsource = "tarball:/srv/tiny.tar"\n'
        'batch_support_end_of_life = 2030-01-31\n')
    images = Catalog.load(config, os_release=DEBIAN_12).images()
    assert [image.urn for image in images] == ["acme:tiny:1:3.1.4"]
    assert images[0].source == "tarball:/srv/tiny.tar"
    assert images[0].batch_support_end_of_life == "2030-01-31T00:00:00Z"


@pytest.mark.parametrize(("entry", "complaint"), [
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "latest", "node_agent_sku_id": "batch.node.x 1",
      "source": "host"}, "must be numbers joined by dots"),
    ({"publisher": "a:b", "offer": "b", "sku": "c", "version": "1.0.0", "node_agent_sku_id": "batch.node.x 1",
      "source": "host"}, "'publisher' must be a name"),
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "1.0.0", "source": "host"}, "node_agent_sku_id"),
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "1.0.0", "node_agent_sku_id": "batch.node.x 1",
      "source": "docker:debian"}, "source 'docker:debian'"),
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "1.0.0", "node_agent_sku_id": "batch.node.x 1",
      "source": "host", "os_type": "Windows"}, "machines run Linux only"),
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "1.0.0", "node_agent_sku_id": "batch.node.x 1",
      "source": "host", "first_party": False}, "needs a 'plan'"),
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "1.0.0", "node_agent_sku_id": "batch.node.x 1",
      "source": "host", "plan": {"name": "x"}}, "exactly the string fields"),
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "1.0.0", "node_agent_sku_id": "batch.node.x 1",
      "source": "host", "colour": "blue"}, "unknown field 'colour'"),
    ({"publisher": "a", "offer": "b", "sku": "c", "version": "1.0.0", "remove": True}, "not in the catalog"),
])
def test_operator_entries_are_validated(work: Path, entry: dict[str, Any], complaint: str) -> None:
    config = work / "bad.json"
    config.write_text(json.dumps([entry]))
    with pytest.raises(CatalogError, match="image #1") as caught:
        Catalog.load(config, os_release=DEBIAN_12)
    assert complaint in str(caught.value)


def test_unreadable_or_malformed_catalog_files(work: Path) -> None:
    with pytest.raises(CatalogError, match="Cannot read"):
        Catalog.load(work / "missing.json")
    broken = work / "broken.toml"
    broken.write_text("[[images]\n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        Catalog.load(broken)


def test_find_is_case_insensitive_and_resolves_latest_numerically() -> None:
    base = default_images(DEBIAN_12)[0]
    catalog = Catalog()
    for version in ("1.9.0", "1.10.0", "1.2.3"):
        image = MarketplaceImage(**{**base.__dict__, "version": version})
        catalog.entries[image.key] = image
    def version(*args: str) -> str | None:
        found = catalog.find(*args)
        return found.version if found else None

    assert version("DEBIAN", "Debian-12", "12", "LATEST") == "1.10.0"
    assert version("debian", "debian-12", "12") == "1.10.0"
    assert version("debian", "debian-12", "12", "1.9.0") == "1.9.0"
    assert catalog.find("debian", "debian-12", "12", "1.9.1") is None
    assert catalog.find("debian", "debian-11", "11") is None
    assert catalog.find_urn("Debian:debian-12:12") == catalog.find("debian", "debian-12", "12", "1.10.0")


def test_parse_urn() -> None:
    assert parse_urn("debian:debian-12:12:1.0.0") == ("debian", "debian-12", "12", "1.0.0")
    assert parse_urn("debian:debian-12:12") == ("debian", "debian-12", "12", "latest")
    for bad in ("debian", "a:b", "a::c:d", "a:b:c:d:e"):
        with pytest.raises(ValueError, match="not an image URN"):
            parse_urn(bad)


# --- API renderings -----------------------------------------------------------------------------------------

def test_supported_images_rows_look_like_the_batch_service() -> None:
    images = default_images(DEBIAN_12)
    newer_debian = MarketplaceImage(**{**images[0].__dict__, "version": "1.1.0", "capabilities": ("DockerCompatible",)})
    rows = supported_images([*images, newer_debian])
    assert len(rows) == 3   # one row per publisher/offer/sku, not per version
    debian = next(r for r in rows if r["imageReference"]["publisher"] == "debian")
    assert debian == {
        "nodeAgentSKUId": "batch.node.debian 12",
        "imageReference": {"publisher": "debian", "offer": "debian-12", "sku": "12", "version": "latest"},
        "verificationType": "verified", "osType": "linux", "capabilities": ["DockerCompatible"],
        "batchSupportEndOfLife": "2028-06-30T00:00:00Z",
    }
    host = next(r for r in rows if r["imageReference"]["offer"] == "host")
    assert host == {"nodeAgentSKUId": "batch.node.debian 12",
                    "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
                    "verificationType": "unverified", "osType": "linux"}
    assert supported_images([]) == []


def test_browse_tree_groups_publishers_offers_skus_versions() -> None:
    images = default_images(DEBIAN_12)
    extra = [MarketplaceImage(**{**images[0].__dict__, "version": v}) for v in ("1.10.0", "1.2.0")]
    extra.append(MarketplaceImage(**{**images[0].__dict__, "publisher": "Debian", "sku": "12-gen2"}))
    tree = browse_tree([*images, *extra])
    assert list(tree) == ["debian", "example-isv", "shoal"]
    assert tree["debian"] == {"debian-12": {"12": ["1.0.0", "1.2.0", "1.10.0"], "12-gen2": ["1.0.0"]}}
    assert tree["example-isv"] == {"licensed-app": {"standard": ["1.0.0"]}}
    assert tree["shoal"] == {"host": {"host": ["1.0.0"]}}
    props = vm_image_properties(images[2])
    assert props["plan"] == {"name": "standard", "product": "licensed-app", "publisher": "example-isv"}
    assert props["osDiskImage"] == {"operatingSystem": "Linux"}
    assert "plan" not in vm_image_properties(images[0])


# --- bases from tarballs ------------------------------------------------------------------------------------

def test_tarball_base_is_imported_once_and_cached(work: Path) -> None:
    tarball = write_rootfs_tarball(work / "tiny.tar.gz")
    store = work / "store"
    provider = BaseProvider(store, LayerStore(store / "layers"))
    image = tarball_image(tarball)
    assert not provider.is_ready(image) and provider.base_digest(image) is None
    stages: list[tuple[str, float]] = []
    base = Path(provider.ensure(image, lambda stage, fraction: stages.append((stage, fraction))))
    assert (base / "etc/os-release").read_text().endswith('PRETTY_NAME="tiny 1"\n')
    assert (base / "bin/hello").stat().st_mode & 0o111
    assert (base / "usr/bin").is_symlink() and str((base / "usr/bin").readlink()) == "../bin"
    assert stages[-1] == ("Ready", 1.0)
    assert all(0.0 <= f <= 1.0 for _, f in stages)
    digest = provider.base_digest(image)
    assert digest is not None and provider.is_ready(image) and digest in provider.referenced_digests()
    record = json.loads((store / "bases" / f"{BaseProvider.base_key(image)}.json").read_text())
    assert record["digest"] == digest and record["source"] == image.source
    # Cached: a new provider over the same store does not import again.
    again = BaseProvider(store, LayerStore(store / "layers"))
    stages.clear()
    assert again.ensure(image, lambda stage, fraction: stages.append((stage, fraction))) == str(base)
    assert stages == [("Ready (cached)", 1.0)]
    # The host images need nothing built.
    host = default_images(DEBIAN_12)[1]
    assert provider.is_ready(host) and provider.ensure(host) == "host" and provider.base_digest(host) is None


def test_changed_tarball_is_reimported_and_missing_one_is_a_clear_error(work: Path) -> None:
    tarball = write_rootfs_tarball(work / "tiny.tar.gz")
    store = work / "store"
    provider = BaseProvider(store, LayerStore(store / "layers"))
    image = tarball_image(tarball)
    first = provider.ensure(image)
    write_rootfs_tarball(tarball, marker="tiny 2")
    assert not provider.is_ready(image)
    second = Path(provider.ensure(image))
    assert str(second) != first and 'PRETTY_NAME="tiny 2"' in (second / "etc/os-release").read_text()
    # Once imported, the layer is the truth: deleting the tarball does not un-ready the image.
    tarball.unlink()
    assert provider.is_ready(image) and provider.ensure(image) == str(second)
    missing = tarball_image(work / "nowhere.tar")
    with pytest.raises(BaseError, match=r"nowhere\.tar of image acme:tiny:1:1\.0\.0 does not exist"):
        provider.ensure(missing)


def test_concurrent_callers_build_once(work: Path) -> None:
    tarball = write_rootfs_tarball(work / "tiny.tar.gz")
    store = work / "store"
    imports: list[int] = []

    class CountingStore(LayerStore):
        def import_tar(self, source: Any, *, expected_digest: str | None = None) -> Any:
            imports.append(1)
            time.sleep(0.3)   # a slow build widens the race window
            return super().import_tar(source, expected_digest=expected_digest)

    image = tarball_image(tarball)
    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            provider = BaseProvider(store, CountingStore(store / "layers"))
            results.append(provider.ensure(image))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 4 and len(set(results)) == 1
    assert len(imports) == 1


def test_a_caller_waits_for_the_lock_holder(work: Path) -> None:
    tarball = write_rootfs_tarball(work / "tiny.tar.gz")
    store = work / "store"
    provider = BaseProvider(store, LayerStore(store / "layers"))
    image = tarball_image(tarball)
    stages: list[str] = []
    done = threading.Event()
    lock_path = store / "bases" / f"{BaseProvider.base_key(image)}.lock"
    with open(lock_path, "a+b") as held:   # e.g. another shoal process building this base
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: (provider.ensure(image, lambda s, f: stages.append(s)), done.set()))
        worker.start()
        deadline = time.monotonic() + 20
        while not stages and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        assert not done.is_set() and stages == ["Waiting for another build of this base to finish"]
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    worker.join(30)
    assert done.is_set() and stages[-1] == "Ready"


# --- debootstrap pieces -------------------------------------------------------------------------------------

def test_phase_tracker_is_monotonic_and_finishes() -> None:
    packages = [f"pkg{i}" for i in range(5)]
    lines = ["I: Retrieving InRelease", "I: Checking Release signature", "I: Retrieving Packages",
             "I: Validating Packages", "I: Resolving dependencies of required packages..."]
    for name in packages:
        lines += [f"I: Retrieving {name} 1.0-1", f"I: Validating {name} 1.0-1"]
    lines += ["I: Chosen extractor for .deb packages: dpkg-deb"] + [f"I: Extracting {n}..." for n in packages]
    lines += ["I: Installing core packages...", "I: Unpacking required packages..."]
    lines += [f"I: Unpacking {n}:amd64..." for n in packages] + ["I: Configuring required packages..."]
    lines += [f"I: Configuring {n}:amd64..." for n in packages]
    lines += ["I: Unpacking the base system...", "I: Configuring the base system...",
              "I: Base system installed successfully."]
    tracker = PhaseTracker(expected_packages=90)
    seen = [tracker.feed(line) for line in lines]
    assert seen == sorted(seen) and seen[-1] == 1.0
    after_retrieval = seen[lines.index("I: Chosen extractor for .deb packages: dpkg-deb")]
    assert 0.0 < seen[lines.index("I: Validating Packages")] < after_retrieval <= 0.7
    assert seen[lines.index("I: Extracting pkg4...")] == pytest.approx(0.82)   # exact once the count is known


def test_finalize_rootfs_drops_caches_and_host_specifics(work: Path) -> None:
    root = work / "rootfs"
    for folder in ("etc", "var/cache/apt/archives/partial", "var/lib/apt/lists/partial"):
        (root / folder).mkdir(parents=True)
    (root / "var/cache/apt/archives/libc6_2.36_amd64.deb").write_bytes(b"x" * 100)
    (root / "var/cache/apt/pkgcache.bin").write_bytes(b"x")
    (root / "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease").write_text("x")
    (root / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    (root / "etc/hostname").write_text("build-host-name\n")
    finalize_rootfs(root)
    assert sorted(p.name for p in (root / "var/cache/apt/archives").iterdir()) == ["partial"]
    assert sorted(p.name for p in (root / "var/lib/apt/lists").iterdir()) == ["partial"]
    assert not (root / "var/cache/apt/pkgcache.bin").exists()
    resolv = root / "etc/resolv.conf"
    assert not resolv.is_symlink() and resolv.read_text() == debootstrap.RESOLV_CONF_PLACEHOLDER
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert "localhost" in (root / "etc/hosts").read_text()


def test_unreachable_mirror_is_a_clear_error() -> None:
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DebootstrapError, match=r"Cannot reach the Debian mirror http://127\.0\.0\.1") as caught:
        debootstrap.check_mirror(f"http://127.0.0.1:{port}/debian", "bookworm", timeout=5)
    assert "--debian-mirror" in str(caught.value) and "tarball:" in str(caught.value)


# --- the CLI ------------------------------------------------------------------------------------------------

def test_cli_list_and_pull_a_tarball_image(work: Path) -> None:
    tarball = write_rootfs_tarball(work / "tiny.tar.gz")
    config = work / "catalog.json"
    config.write_text(json.dumps([{"publisher": "acme", "offer": "tiny", "sku": "1", "version": "1.0.0",
                                   "node_agent_sku_id": "batch.node.tiny 1", "source": f"tarball:{tarball}"}]))
    runner = CliRunner()
    common = ["--state-dir", str(work / "state"), "--catalog", str(config)]
    listed = runner.invoke(marketplace_app, ["list", "--json", *common])
    assert listed.exit_code == 0, listed.output
    rows = {row["urn"]: row for row in json.loads(listed.output)}
    assert rows["acme:tiny:1:1.0.0"]["ready"] is None and rows["shoal:host:host:1.0.0"]["ready"] is True
    assert not (work / "state").exists()   # listing creates nothing
    pulled = runner.invoke(marketplace_app, ["pull", "acme:tiny:1:latest", *common])
    assert pulled.exit_code == 0, pulled.output
    assert "base ready" in pulled.output and str(work / "state" / "store" / "layers") in pulled.output
    table = runner.invoke(marketplace_app, ["list", *common], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "acme:tiny:1:1.0.0" in table.output and "ready" in table.output
    missing = runner.invoke(marketplace_app, ["pull", "acme:nothing:1", *common])
    assert missing.exit_code == 1 and "No image acme:nothing:1" in missing.output


# --- the real thing -----------------------------------------------------------------------------------------

def test_debootstrap_builds_a_debian_12_base() -> None:
    """Builds Debian 12 minbase for real (~30 s) the first time, into a cache reused by later runs."""
    store = scratch_root() / "shoal-debian-cache"
    provider = BaseProvider(store, LayerStore(store / "layers"))
    image = Catalog.load(None).find("debian", "debian-12", "12", "latest")
    assert image is not None and image.source == "debootstrap:bookworm"
    fractions: list[float] = []
    started = time.monotonic()
    base = Path(provider.ensure(image, lambda stage, fraction: fractions.append(fraction)))
    elapsed = time.monotonic() - started
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (base / "etc/debian_version").read_text().startswith("12")
    assert 'VERSION_ID="12"' in (base / "etc/os-release").read_text()
    assert (base / "usr/bin/apt-get").exists() and (base / "bin/sh").exists()
    assert (base / "etc/resolv.conf").read_text() == debootstrap.RESOLV_CONF_PLACEHOLDER
    assert [p.name for p in (base / "var/lib/apt/lists").iterdir()] in ([], ["partial"])
    assert not list((base / "var/cache/apt/archives").glob("*.deb"))
    # What Azure's first-party images have (and the seed's workflow needs): sudo, an SSH server, ps, ip, TLS
    # roots, curl, Python.
    for tool in ("usr/bin/sudo", "usr/sbin/sshd", "usr/bin/ps", "usr/bin/ip", "usr/bin/curl", "usr/bin/python3",
                 "etc/ssl/certs/ca-certificates.crt"):
        assert (base / tool).exists(), tool
    assert provider.is_ready(image) and provider.base_digest(image) in provider.referenced_digests()
    record = json.loads((store / "bases" / f"{provider.base_key(image)}.json").read_text())
    print(f"\ndebian base: {record['digest'][:12]} {record['size'] / 1e6:.0f} MB, built in "
          f"{record['buildSeconds']} s; this call took {elapsed:.1f} s")
