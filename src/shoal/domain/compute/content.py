"""What a disk, snapshot or image holds (base + layer stacks) and where it came from (lineage).

Stored in a resource's ``internal`` column as plain JSON so it can travel to a host agent unchanged:

    base     {"publisher","offer","sku","version","nodeAgentSkuId","osType","firstParty","plan"} for a
             marketplace base, {"imported": <digest>} for a root filesystem imported from a disk file,
             or None for data disks
    layers   layer digests, bottom -> top, above the base
    lineage  {"baseImage", "method", "sourceVm", "sourceDisks", "sourceSnapshots", "sourceImage",
              "osDiskEncrypted", "extensions"}
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

METHOD_SNAPSHOT = "snapshot"
METHOD_VM_CAPTURE = "vm-capture"
METHOD_DISK_FILE = "disk-file"
METHOD_DISK = "managed-disk"


def new_lineage(base: dict[str, Any] | None) -> dict[str, Any]:
    return {"baseImage": copy.deepcopy(base) if base and "imported" not in base else None, "method": None,
            "sourceVm": None, "sourceDisks": [], "sourceSnapshots": [], "sourceImage": None,
            "osDiskEncrypted": False, "extensions": []}


def derive(lineage: dict[str, Any] | None, **changes: Any) -> dict[str, Any]:
    """A copy of ``lineage`` with list fields extended and scalar fields set (None leaves them)."""
    out = copy.deepcopy(lineage) if lineage else new_lineage(None)
    for key, value in changes.items():
        if value is None:
            continue
        if isinstance(out.get(key), list):
            for item in value if isinstance(value, list) else [value]:
                if item not in out[key]:
                    out[key].append(item)
        elif key == "osDiskEncrypted":
            out[key] = bool(out.get(key)) or bool(value)
        else:
            out[key] = value
    return out


def merge_lineages(os_lineage: dict[str, Any] | None, data: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """An image's lineage: the OS disk's, plus every source named by its data disks."""
    out = derive(os_lineage)
    for other in data:
        if not other:
            continue
        for key in ("sourceDisks", "sourceSnapshots", "extensions"):
            out = derive(out, **{key: list(other.get(key) or [])})
        out["osDiskEncrypted"] = bool(out["osDiskEncrypted"])
    return out


def disk_content(internal: dict[str, Any]) -> dict[str, Any]:
    """The part of a disk/snapshot's internal facts another resource copies."""
    return {"base": copy.deepcopy(internal.get("base")), "layers": list(internal.get("layers") or []),
            "os": bool(internal.get("os")), "lineage": copy.deepcopy(internal.get("lineage"))}


def image_layers(internal: dict[str, Any]) -> set[str]:
    """Every layer digest an image-like resource references (for garbage collection)."""
    out = set(internal.get("layers") or []) | set(internal.get("os") or [] if isinstance(internal.get("os"), list)
                                                 else [])
    for stack in (internal.get("data") or {}).values():
        out |= set(stack)
    base = internal.get("base") or {}
    if "imported" in base:
        out.add(base["imported"])
    return out
