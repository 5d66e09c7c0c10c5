"""How a marketplace image becomes a bootable base for machines.

:class:`BaseProvider` turns an image of the catalog (``shoal.core.catalog``) into the ``MachineSpec.base``
value: builds or imports its base layer on first use (once, under a file lock), and remembers the result in
``<store_dir>/bases/<key>.json``. The catalog's names are re-exported here for the host agent's callers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.core.catalog import (  # noqa: F401 - re-exported
    DEFAULT_IMAGE_VERSION,
    BaseError,
    Catalog,
    CatalogError,
    MarketplaceImage,
    browse_tree,
    default_images,
    node_agent_for_os,
    parse_urn,
    read_os_release,
    supported_images,
    version_key,
    vm_image_properties,
)
from shoal.runtime import debootstrap
from shoal.runtime.layers import LayerError

if TYPE_CHECKING:
    from shoal.runtime.layers import LayerInfo, LayerStore

Progress = Callable[[str, float], None]


class BaseProvider:
    """Turns marketplace images into bootable bases, building each base once and caching it in the store.

    Records live in ``<store_dir>/bases/<key>.json`` ({"source", "digest", "size", ...}); the layer itself is
    in the LayerStore. Builds happen under an exclusive ``flock`` on ``bases/<key>.lock``, so concurrent
    callers (threads or processes) wait for one build instead of running two.
    """

    def __init__(self, store_dir: Path, layers: LayerStore, *, debian_mirror: str | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.layers = layers
        self.bases_dir = self.store_dir / "bases"
        self.bases_dir.mkdir(parents=True, exist_ok=True)
        self.debian_mirror = debian_mirror or os.environ.get("SHOAL_DEBIAN_MIRROR") or debootstrap.DEFAULT_MIRROR

    # Records ------------------------------------------------------------------------------------------------
    @staticmethod
    def base_key(image: MarketplaceImage) -> str:
        """Name of the cached base; images with the same source share it."""
        kind, _, arg = image.source.partition(":")
        if kind == "tarball":
            return "tarball-" + hashlib.sha256(arg.encode()).hexdigest()[:16]
        if kind == "debootstrap":  # the package list is part of what is built
            arg += "-" + hashlib.sha256(",".join(debootstrap.PACKAGES).encode()).hexdigest()[:8]
        return re.sub(r"[^A-Za-z0-9._-]", "_", f"{kind}-{arg}" if arg else kind)

    def _record_path(self, image: MarketplaceImage) -> Path:
        return self.bases_dir / f"{self.base_key(image)}.json"

    def _read_record(self, image: MarketplaceImage) -> dict[str, Any] | None:
        try:
            record = json.loads(self._record_path(image).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("source") != image.source or \
                not isinstance(record.get("digest"), str):
            return None
        return record

    def _usable(self, image: MarketplaceImage, record: dict[str, Any] | None) -> bool:
        if record is None or not self.layers.has(record["digest"]):
            return False
        if image.source_kind == "tarball":
            # A tarball edited in place must be re-imported; one deleted after import is still served.
            stamp = _file_stamp(Path(image.source.partition(":")[2]))
            return stamp is None or stamp == record.get("file")
        return True

    def base_digest(self, image: MarketplaceImage) -> str | None:
        """Digest of the image's base layer if it is built; None for host images and unbuilt bases."""
        record = self._read_record(image)
        return record["digest"] if record and self._usable(image, record) else None

    def referenced_digests(self) -> set[str]:
        """Every base layer recorded in bases/: the layer GC must keep these."""
        digests: set[str] = set()
        for path in self.bases_dir.glob("*.json"):
            try:
                digest = json.loads(path.read_text(encoding="utf-8")).get("digest")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(digest, str):
                digests.add(digest)
        return digests

    def is_ready(self, image: MarketplaceImage) -> bool:
        return image.source == "host" or self._usable(image, self._read_record(image))

    # Building -----------------------------------------------------------------------------------------------
    def ensure(self, image: MarketplaceImage, progress: Progress | None = None) -> str:
        """The ``MachineSpec.base`` value for ``image``: "host", or the unpacked dir of its base layer.

        Builds/imports the base on first use; later calls (and callers that waited for a concurrent build)
        return at once.
        """
        report = progress or (lambda _stage, _fraction: None)
        if image.source == "host":
            report("Ready (host root)", 1.0)
            return "host"
        record = self._read_record(image)
        if self._usable(image, record):
            assert record is not None
            report("Ready (cached)", 1.0)
            return str(self.layers.unpacked(record["digest"]))
        with self._lock(image, report):
            record = self._read_record(image)   # another caller may have built it while we waited
            if self._usable(image, record):
                assert record is not None
                report("Ready (built by another caller)", 1.0)
                return str(self.layers.unpacked(record["digest"]))
            record = self._build(image, report)
            _write_json_atomic(self._record_path(image), record)
        report("Ready", 1.0)
        return str(self.layers.unpacked(record["digest"]))

    @contextmanager
    def _lock(self, image: MarketplaceImage, report: Progress) -> Iterator[None]:
        # flock, not lockf: flock locks belong to the open file description, so two threads of one process
        # exclude each other too; the kernel drops the lock if the holder dies, so a crash never wedges it.
        path = self.bases_dir / f"{self.base_key(image)}.lock"
        with open(path, "a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report("Waiting for another build of this base to finish", 0.0)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _build(self, image: MarketplaceImage, report: Progress) -> dict[str, Any]:
        kind, _, arg = image.source.partition(":")
        record: dict[str, Any] = {"source": image.source, "key": self.base_key(image)}
        started = datetime.now(UTC)
        if kind == "tarball":
            tarball = Path(arg)
            stamp = _file_stamp(tarball)
            if stamp is None:
                raise BaseError(f"The root filesystem tarball {tarball} of image {image.urn} does not exist (it "
                                "is the image's 'tarball:' source in the catalog file).")
            report(f"Importing {tarball.name}", 0.05)
            info = self.layers.import_tar(tarball)
            record["file"] = stamp
        elif kind == "debootstrap":
            info = self._debootstrap(arg, report, record)
        else:
            raise BaseError(f"Image {image.urn} has an unknown source {image.source!r}.")
        finished = datetime.now(UTC)
        record.update(digest=info.digest, size=info.size, builtAt=finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      buildSeconds=round((finished - started).total_seconds(), 2))
        return record

    def _debootstrap(self, suite: str, report: Progress, record: dict[str, Any]) -> LayerInfo:
        cache = self._cached_build(suite)
        if cache is not None and cache.is_file():
            # Built before for another store of this host (SHOAL_BASE_CACHE_DIR): importing is seconds.
            report(f"Importing the cached build {cache.name}", 0.5)
            try:
                info = self.layers.import_tar(cache)
                record.update(suite=suite, mirror=self.debian_mirror, variant="minbase", cached=str(cache))
                return info
            except LayerError:
                cache.unlink(missing_ok=True)
        info = self._debootstrap_build(suite, report, record)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
            shutil.copyfile(self.layers.blob(info.digest), tmp)
            os.replace(tmp, cache)
        return info

    def _cached_build(self, suite: str) -> Path | None:
        """Where builds are shared between stores, if the operator (or a test run) set SHOAL_BASE_CACHE_DIR."""
        where = os.environ.get("SHOAL_BASE_CACHE_DIR")
        key = f"debootstrap-{suite}-" + hashlib.sha256(
            f"{','.join(debootstrap.PACKAGES)}|{self.debian_mirror}".encode()).hexdigest()[:12]
        return Path(where) / f"{key}.tar.zst" if where else None

    def _debootstrap_build(self, suite: str, report: Progress, record: dict[str, Any]) -> LayerInfo:
        build_root = self.bases_dir / "build"
        # Leftovers of a build that crashed (we hold the lock, so nobody else is using them).
        prefix = f"debootstrap-{suite}."
        if build_root.is_dir():
            for stale in build_root.iterdir():
                if stale.name.startswith(prefix):
                    shutil.rmtree(stale, ignore_errors=True)
        staging = build_root / f"{prefix}{uuid.uuid4().hex[:8]}"
        log_file = self.bases_dir / f"debootstrap-{suite}.log"
        log_file.unlink(missing_ok=True)
        try:
            # debootstrap covers 0..0.85 of the bar; cleaning and importing the 130 MB tree take the rest.
            started = time.monotonic()
            debootstrap.build_rootfs(staging / "rootfs", suite=suite, mirror=self.debian_mirror,
                                     progress=lambda stage, f: report(stage, 0.85 * f), log_file=log_file)
            built = time.monotonic()
            report("Importing the root filesystem as a layer", 0.87)
            info = self.layers.import_dir(staging / "rootfs")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record.update(suite=suite, mirror=self.debian_mirror, variant="minbase", packages=list(debootstrap.PACKAGES),
                      debootstrapSeconds=round(built - started, 2), importSeconds=round(time.monotonic() - built, 2))
        return info


def _file_stamp(path: Path) -> dict[str, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtimeNs": st.st_mtime_ns}


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)

