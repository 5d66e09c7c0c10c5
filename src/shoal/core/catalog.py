"""The marketplace catalog: which VM images Shoal offers (data only; both the control plane and the host
agent read it).

- :class:`Catalog` is the list of offered images: a built-in default (Debian 12 built with debootstrap, the
  host root, and one third-party image with plan terms) that an operator file (JSON or TOML) can extend,
  override or trim.
- :func:`supported_images` and :func:`browse_tree` render the catalog the way the Batch data plane
  (``GET /supportedimages``) and the ARM VM-image browse API (publishers -> offers -> skus -> versions) show
  it. Both are pure.

How an image becomes a bootable base is the host agent's business (``runtime/marketplace.py``).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_IMAGE_VERSION = "1.0.0"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^\d{1,9}(\.\d{1,9}){0,3}$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
_VERIFICATION_TYPES = ("verified", "unverified")


class CatalogError(ValueError):
    """The operator's catalog file is malformed; the message names the file, the entry and the field."""


class BaseError(RuntimeError):
    """An image's base could not be provided (missing tarball, failed build...); the message says why."""


@dataclass(frozen=True)
class MarketplaceImage:
    """One version of one marketplace image (publisher:offer:sku:version)."""

    publisher: str
    offer: str
    sku: str
    version: str                # concrete ("1.0.0"); "latest" is resolved by Catalog.find
    os_type: str                # "Linux" (the only OS machines can run)
    node_agent_sku_id: str      # "batch.node.debian 12"
    verification_type: str      # "verified" | "unverified"
    first_party: bool           # False -> third party: deploying needs the plan and accepted terms
    plan: dict[str, str] | None  # {"name","product","publisher"} for third-party images
    source: str                 # "host" | "debootstrap:<suite>" | "tarball:<absolute path>"
    capabilities: tuple[str, ...] = ()
    batch_support_end_of_life: str | None = None   # ISO 8601, e.g. "2028-06-30T00:00:00Z"

    @property
    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity for lookups: Azure compares publisher/offer/sku/version case-insensitively."""
        return (self.publisher.lower(), self.offer.lower(), self.sku.lower(), self.version.lower())

    @property
    def source_kind(self) -> str:
        return self.source.split(":", 1)[0]


def version_key(version: str) -> tuple[int, ...]:
    """Numeric ordering of Azure image versions ("1.10.0" > "1.9.3")."""
    return tuple(int(part) for part in version.split("."))


def parse_urn(urn: str) -> tuple[str, str, str, str]:
    """``publisher:offer:sku[:version]`` (az's URN form) -> 4 parts; a missing version means "latest"."""
    parts = urn.strip().split(":")
    if len(parts) == 3:
        parts.append("latest")
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"'{urn}' is not an image URN: expected publisher:offer:sku:version (version may be "
                         "'latest').")
    return parts[0], parts[1], parts[2], parts[3]


# --- host OS detection --------------------------------------------------------------------------------------

def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """The KEY=value pairs of os-release(5); empty when the file is missing (e.g. macOS)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip('"').strip("'")
    return values


_EL_FAMILY = {"rhel", "centos", "rocky", "almalinux", "ol", "fedora-asahi-remix"}


def node_agent_for_os(os_release: Mapping[str, str]) -> str:
    """Batch's node agent SKU id for a Linux distribution, following the ``batch.node.<os> <version>`` pattern
    (``batch.node.debian 12``, ``batch.node.ubuntu 22.04``, ``batch.node.el 9``)."""
    distro = os_release.get("ID", "linux").lower() or "linux"
    version = os_release.get("VERSION_ID", "") or "unknown"
    if distro in _EL_FAMILY:
        return f"batch.node.el {version.split('.')[0]}"
    if distro == "debian" and version != "unknown":
        version = version.split(".")[0]
    return f"batch.node.{distro} {version}"


# --- the catalog --------------------------------------------------------------------------------------------

def default_images(os_release: Mapping[str, str] | None = None) -> list[MarketplaceImage]:
    """The built-in catalog. The host-backed entries take their node agent SKU from the host's OS, because
    a machine booted from them *is* the host OS."""
    host_agent = node_agent_for_os(read_os_release() if os_release is None else os_release)
    return [
        MarketplaceImage(
            publisher="debian", offer="debian-12", sku="12", version=DEFAULT_IMAGE_VERSION, os_type="Linux",
            node_agent_sku_id="batch.node.debian 12", verification_type="verified", first_party=True, plan=None,
            source="debootstrap:bookworm", batch_support_end_of_life="2028-06-30T00:00:00Z"),
        # The host root is whatever the machine running Shoal has installed: Shoal cannot vouch for it.
        MarketplaceImage(
            publisher="shoal", offer="host", sku="host", version=DEFAULT_IMAGE_VERSION, os_type="Linux",
            node_agent_sku_id=host_agent, verification_type="unverified", first_party=True, plan=None,
            source="host"),
        # A third-party image with plan terms, so the "first-party base only" and plan/terms rules have a
        # concrete subject. Backed by the host root: what matters here is the metadata, not the bits.
        MarketplaceImage(
            publisher="example-isv", offer="licensed-app", sku="standard", version=DEFAULT_IMAGE_VERSION,
            os_type="Linux", node_agent_sku_id=host_agent, verification_type="unverified", first_party=False,
            plan={"name": "standard", "product": "licensed-app", "publisher": "example-isv"}, source="host"),
    ]


# Field names accepted in operator files: the dataclass's own names, plus the camelCase spelling the Azure APIs
# use, so an entry can be pasted from a supportedimages answer and edited.
_ALIASES = {
    "nodeagentskuid": "node_agent_sku_id", "node_agent_sku_id": "node_agent_sku_id",
    "verificationtype": "verification_type", "verification_type": "verification_type",
    "ostype": "os_type", "os_type": "os_type", "firstparty": "first_party", "first_party": "first_party",
    "batchsupportendoflife": "batch_support_end_of_life",
    "batch_support_end_of_life": "batch_support_end_of_life",
    "publisher": "publisher", "offer": "offer", "sku": "sku", "version": "version", "plan": "plan",
    "source": "source", "capabilities": "capabilities", "remove": "remove",
}


@dataclass
class Catalog:
    """The offered images, keyed case-insensitively by publisher/offer/sku/version."""

    entries: dict[tuple[str, str, str, str], MarketplaceImage] = field(default_factory=dict)

    @classmethod
    def load(cls, extra_config: Path | None = None, *, os_release: Mapping[str, str] | None = None) -> Catalog:
        """The built-in default catalog, then the operator's file (if any) applied on top of it.

        File format (JSON, or TOML when the name ends in .toml): a list of entries, or an object/table
        ``{"images": [...], "replaceDefaults": false}`` (TOML: ``replace_defaults = true`` and
        ``[[images]]`` tables). An entry with the URN of an existing one replaces it; ``"remove": true`` with
        just the four URN fields drops it; relative tarball paths are relative to the file.
        """
        catalog = cls()
        raw: Any = None
        if extra_config is not None:
            raw = _read_config(extra_config)
        replace_defaults = False
        items: list[Any] = []
        if isinstance(raw, dict):
            unknown = set(raw) - {"images", "replaceDefaults", "replace_defaults"}
            if unknown:
                raise CatalogError(f"{extra_config}: unknown top-level keys {sorted(unknown)} (expected 'images' "
                                   "and optionally 'replaceDefaults').")
            replace_defaults = bool(raw.get("replaceDefaults", raw.get("replace_defaults", False)))
            items = raw.get("images", [])
        elif isinstance(raw, list):
            items = raw
        elif raw is not None:
            raise CatalogError(f"{extra_config}: expected a list of images or an object with 'images'.")
        if not isinstance(items, list):
            raise CatalogError(f"{extra_config}: 'images' must be a list.")
        if not replace_defaults:
            for image in default_images(os_release):
                catalog.entries[image.key] = image
        assert extra_config is not None or not items
        for index, item in enumerate(items):
            where = f"{extra_config}: image #{index + 1}"
            image_or_key = _parse_entry(item, where, base_dir=extra_config.parent if extra_config else Path.cwd())
            if isinstance(image_or_key, MarketplaceImage):
                catalog.entries[image_or_key.key] = image_or_key
            elif catalog.entries.pop(image_or_key, None) is None:
                raise CatalogError(f"{where}: 'remove' names {':'.join(image_or_key)}, which is not in the catalog.")
        return catalog

    def images(self) -> list[MarketplaceImage]:
        """All versions of all images, sorted by publisher, offer, sku (case-insensitively) and version."""
        return sorted(self.entries.values(), key=lambda i: (i.publisher.lower(), i.offer.lower(), i.sku.lower(),
                                                            version_key(i.version)))

    def find(self, publisher: str, offer: str, sku: str, version: str = "latest") -> MarketplaceImage | None:
        """Case-insensitive lookup; ``version="latest"`` picks the highest version of that sku."""
        if version.lower() != "latest":
            return self.entries.get((publisher.lower(), offer.lower(), sku.lower(), version.lower()))
        versions = [image for key, image in self.entries.items()
                    if key[:3] == (publisher.lower(), offer.lower(), sku.lower())]
        return max(versions, key=lambda i: version_key(i.version), default=None)

    def find_urn(self, urn: str) -> MarketplaceImage | None:
        return self.find(*parse_urn(urn))


def _read_config(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"Cannot read the catalog file {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(data.decode("utf-8"))
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") \
            from exc


def _parse_entry(item: Any, where: str, *, base_dir: Path) -> MarketplaceImage | tuple[str, str, str, str]:
    if not isinstance(item, dict):
        raise CatalogError(f"{where}: an image must be an object/table, not {type(item).__name__}.")
    fields: dict[str, Any] = {}
    for raw_key, value in item.items():
        name = _ALIASES.get(str(raw_key).lower())
        if name is None:
            known = ", ".join(sorted(set(_ALIASES.values())))
            raise CatalogError(f"{where}: unknown field '{raw_key}' (known: {known}).")
        fields[name] = value
    for name in ("publisher", "offer", "sku", "version"):
        value = fields.get(name)
        if not isinstance(value, str) or not _NAME.match(value):
            raise CatalogError(f"{where}: '{name}' must be a name of letters, digits, '.', '_' or '-' "
                               f"(got {value!r}).")
    if not _VERSION.match(fields["version"]):
        raise CatalogError(f"{where}: version {fields['version']!r} must be numbers joined by dots, like '1.0.0' "
                           "('latest' is only for look-ups).")
    key = (fields["publisher"].lower(), fields["offer"].lower(), fields["sku"].lower(), fields["version"].lower())
    if fields.pop("remove", False):
        return key
    agent = fields.get("node_agent_sku_id")
    if not isinstance(agent, str) or not agent.startswith("batch.node."):
        raise CatalogError(f"{where}: 'node_agent_sku_id' is required and looks like 'batch.node.debian 12' "
                           f"(got {agent!r}).")
    os_type = str(fields.get("os_type", "Linux"))
    if os_type.lower() != "linux":
        raise CatalogError(f"{where}: os_type {os_type!r} is not supported: machines run Linux only.")
    verification = str(fields.get("verification_type", "unverified")).lower()
    if verification not in _VERIFICATION_TYPES:
        raise CatalogError(f"{where}: verification_type must be 'verified' or 'unverified'.")
    plan = fields.get("plan")
    if plan is not None:
        if not isinstance(plan, dict) or set(plan) != {"name", "product", "publisher"} or \
                not all(isinstance(v, str) and v for v in plan.values()):
            raise CatalogError(f"{where}: 'plan' must have exactly the string fields name, product, publisher.")
        plan = {k: str(v) for k, v in plan.items()}
    first_party = fields.get("first_party", plan is None)
    if not isinstance(first_party, bool):
        raise CatalogError(f"{where}: 'first_party' must be true or false.")
    if not first_party and plan is None:
        raise CatalogError(f"{where}: a third-party image (first_party false) needs a 'plan'.")
    capabilities = fields.get("capabilities", [])
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise CatalogError(f"{where}: 'capabilities' must be a list of strings.")
    end_of_life = fields.get("batch_support_end_of_life")
    if end_of_life is not None and not isinstance(end_of_life, str):
        end_of_life = str(end_of_life)   # TOML dates arrive as datetime.date
    if end_of_life is not None:
        end_of_life = _iso_end_of_life(end_of_life, where)
    return MarketplaceImage(
        publisher=fields["publisher"], offer=fields["offer"], sku=fields["sku"], version=fields["version"],
        os_type="Linux", node_agent_sku_id=agent, verification_type=verification, first_party=first_party,
        plan=plan, source=_parse_source(fields.get("source"), where, base_dir), capabilities=tuple(capabilities),
        batch_support_end_of_life=end_of_life)


def _iso_end_of_life(value: str, where: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CatalogError(f"{where}: batch_support_end_of_life {value!r} is not an ISO 8601 date.") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_source(source: Any, where: str, base_dir: Path) -> str:
    if not isinstance(source, str) or not source:
        raise CatalogError(f"{where}: 'source' is required: 'host', 'debootstrap:<suite>' or 'tarball:<path>'.")
    kind, _, arg = source.partition(":")
    if kind == "host" and not arg:
        return "host"
    if kind == "debootstrap" and _SUITE.match(arg):
        return source
    if kind == "tarball" and arg:
        return "tarball:" + str((base_dir / Path(arg).expanduser()).resolve())
    raise CatalogError(f"{where}: source {source!r} must be 'host', 'debootstrap:<suite>' (e.g. "
                       "'debootstrap:bookworm') or 'tarball:<path to a root filesystem tarball>'.")


# --- pure renderings for the APIs ---------------------------------------------------------------------------

def supported_images(images: Iterable[MarketplaceImage]) -> list[dict[str, Any]]:
    """Rows of Batch ``GET /supportedimages``: one per publisher/offer/sku, with ``version: "latest"`` as the
    real service shows, described by that sku's highest version. Empty ``capabilities`` and a missing end of
    life are omitted, as in the service's answers."""
    latest: dict[tuple[str, str, str], MarketplaceImage] = {}
    for image in images:
        sku_key = image.key[:3]
        current = latest.get(sku_key)
        if current is None or version_key(image.version) > version_key(current.version):
            latest[sku_key] = image
    rows: list[dict[str, Any]] = []
    for image in sorted(latest.values(), key=lambda i: (i.node_agent_sku_id, *i.key[:3])):
        row: dict[str, Any] = {
            "nodeAgentSKUId": image.node_agent_sku_id,
            "imageReference": {"publisher": image.publisher, "offer": image.offer, "sku": image.sku,
                               "version": "latest"},
            "verificationType": image.verification_type,
            "osType": image.os_type.lower(),
        }
        if image.capabilities:
            row["capabilities"] = list(image.capabilities)
        if image.batch_support_end_of_life:
            row["batchSupportEndOfLife"] = image.batch_support_end_of_life
        rows.append(row)
    return rows


def browse_tree(images: Iterable[MarketplaceImage]) -> dict[str, dict[str, dict[str, list[str]]]]:
    """publisher -> offer -> sku -> versions (ascending), for the ARM VM-image browse API.

    Names keep the catalog's spelling (the first one seen when entries differ only in case); keys are sorted
    case-insensitively. ARM matches path segments case-insensitively: resolve them with :meth:`Catalog.find`.
    """
    spelled: dict[tuple[str, ...], str] = {}
    tree: dict[str, dict[str, dict[str, list[str]]]] = {}
    for image in sorted(images, key=lambda i: (*i.key[:3], version_key(i.version))):
        p = spelled.setdefault((image.publisher.lower(),), image.publisher)
        o = spelled.setdefault((image.publisher.lower(), image.offer.lower()), image.offer)
        s = spelled.setdefault(image.key[:3], image.sku)
        versions = tree.setdefault(p, {}).setdefault(o, {}).setdefault(s, [])
        if image.version not in versions:
            versions.append(image.version)
    return tree


def vm_image_properties(image: MarketplaceImage) -> dict[str, Any]:
    """``properties`` of ARM's ``GET .../skus/{sku}/versions/{version}`` (a VirtualMachineImage)."""
    props: dict[str, Any] = {
        "osDiskImage": {"operatingSystem": image.os_type},
        "dataDiskImages": [],
        "hyperVGeneration": "V1",
        "architecture": "x64",
        "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": False},
        "imageDeprecationStatus": {"imageState": "Active"},
    }
    if image.plan:
        props["plan"] = dict(image.plan)
    return props


# --- bases --------------------------------------------------------------------------------------------------
