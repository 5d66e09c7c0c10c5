"""ARM resource ids: parse, build, compare.

ARM ids look like ``/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}]``.
Keywords, namespaces and type names are case-insensitive, names keep the case they were created with but
compare case-insensitively; :func:`key` gives the form used for lookups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shoal.core import errors

# Canonical spellings of the fixed words of ARM paths. Request paths are rewritten to these so routes
# match however a client spells them (az sends ``resourcegroups``, the SDKs ``resourceGroups``).
KEYWORDS: dict[str, str] = {
    w.lower(): w
    for w in (
        "subscriptions", "resourceGroups", "providers", "locations", "operations", "operationResults",
        "resources", "tenants",
        "Microsoft.Resources", "Microsoft.Authorization", "Microsoft.Compute", "Microsoft.Batch",
        "roleAssignments", "roleDefinitions", "permissions",
        "publishers", "artifacttypes", "vmimage", "offers", "skus", "versions",
        "virtualMachines", "extensions", "disks", "snapshots", "images", "galleries",
        "batchAccounts", "pools", "accountOperationResults", "asyncoperations",
        "instanceView", "runCommand", "powerOff", "beginGetAccess", "endGetAccess", "generalize", "restart",
        "deallocate", "start", "listKeys", "regenerateKeys", "stopResize", "disableAutoScale",
        "deployments", "validate", "whatIf", "exportTemplate", "cancel", "operationStatuses",
    )
}

_NAME_OK = re.compile(r"^[^<>%&:\\?/*#\x00-\x1f]+$")


@dataclass(frozen=True)
class ResourceId:
    """A parsed ARM id. ``types`` and ``names`` hold the provider type chain below the namespace."""

    subscription: str
    resource_group: str | None = None
    namespace: str | None = None
    types: tuple[str, ...] = field(default_factory=tuple)
    names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def type(self) -> str:
        """``Microsoft.Compute/galleries/images`` style full type."""
        return "/".join([self.namespace or "", *self.types])

    @property
    def name(self) -> str:
        return self.names[-1] if self.names else (self.resource_group or self.subscription)

    def __str__(self) -> str:
        out = f"/subscriptions/{self.subscription}"
        if self.resource_group is not None:
            out += f"/resourceGroups/{self.resource_group}"
        if self.namespace:
            out += f"/providers/{self.namespace}"
            for t, n in zip(self.types, self.names, strict=True):
                out += f"/{t}/{n}"
        return out

    @property
    def key(self) -> str:
        return key(str(self))

    def child(self, type_: str, name: str) -> ResourceId:
        return ResourceId(self.subscription, self.resource_group, self.namespace, (*self.types, type_),
                          (*self.names, name))

    def parent(self) -> ResourceId | None:
        if len(self.types) <= 1:
            return None
        return ResourceId(self.subscription, self.resource_group, self.namespace, self.types[:-1],
                          self.names[:-1])


def key(resource_id: str) -> str:
    """Lookup key of an id: lower-cased, without trailing slash."""
    return resource_id.rstrip("/").lower()


def resource_group_id(subscription: str, group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}"


def parse(text: str, *, what: str = "resource id") -> ResourceId:
    """Parse a full ARM resource id or raise ``InvalidResourceId`` naming the offending value."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise errors.InvalidResourceId(f"The {what} '{text}' is not a valid ARM resource id. "
                                       "Expected /subscriptions/{sub}/resourceGroups/{group}/providers/...")
    parts = text.strip("/").split("/")
    if any(part in (".", "..") or "\0" in part for part in parts):
        raise errors.InvalidResourceId(f"The {what} '{text}' is not a valid ARM resource id: a segment is '.' or "
                                       "'..', or holds a NUL.")
    bad = errors.InvalidResourceId(
        f"The {what} '{text}' is not a valid ARM resource id. "
        "Expected /subscriptions/{sub}/resourceGroups/{group}/providers/{namespace}/{type}/{name}."
    )
    if len(parts) < 2 or parts[0].lower() != "subscriptions" or not parts[1]:
        raise bad
    sub = parts[1]
    rest = parts[2:]
    group: str | None = None
    if rest and rest[0].lower() == "resourcegroups":
        if len(rest) < 2 or not rest[1]:
            raise bad
        group = rest[1]
        rest = rest[2:]
    if not rest:
        return ResourceId(sub, group)
    if rest[0].lower() != "providers" or len(rest) < 2:
        raise bad
    namespace = rest[1]
    pairs = rest[2:]
    if len(pairs) % 2 != 0 or any(not p for p in pairs):
        raise bad
    types = tuple(KEYWORDS.get(t.lower(), t) for t in pairs[0::2])
    names = tuple(pairs[1::2])
    return ResourceId(sub, group, KEYWORDS.get(namespace.lower(), namespace), types, names)


def canonical_path(path: str) -> str:
    """Rewrite the fixed words of an ARM request path to their canonical spelling.

    Only keyword positions are touched; user-chosen names keep their case. Non-ARM paths (identity,
    Batch data plane) are returned unchanged.
    """
    parts = path.split("/")
    if len(parts) < 2 or parts[1].lower() not in ("subscriptions", "providers", "tenants"):
        return path
    out = list(parts)
    i = 1
    # Positions: subscriptions/{id}/resourceGroups/{rg}/providers/{ns}/{type}/{name}/...
    expect_keyword = True
    while i < len(out):
        seg = out[i]
        low = seg.lower()
        if expect_keyword and low in KEYWORDS:
            out[i] = KEYWORDS[low]
        if low == "providers" and expect_keyword:
            # namespace follows, then alternating type/name
            if i + 1 < len(out):
                out[i + 1] = KEYWORDS.get(out[i + 1].lower(), out[i + 1])
            i += 2
            expect_keyword = True
            continue
        i += 1
        expect_keyword = not expect_keyword
    return "/".join(out)


def check_name(name: str, *, what: str, max_len: int, pattern: str | None = None, hint: str = "") -> None:
    """Validate a resource name with ARM's generic rules plus an optional per-type pattern."""
    if not name or len(name) > max_len or not _NAME_OK.match(name) or (pattern and not re.match(pattern, name)):
        raise errors.InvalidResourceName(
            f"The {what} name '{name[:200]}' is invalid. {hint or ''}"
            f"It must be 1-{max_len} characters long" + (f" and match {pattern}." if pattern else ".")
        )
