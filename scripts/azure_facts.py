"""Extract the facts Shoal is held to from Azure's own REST API descriptions (Azure/azure-rest-api-specs).

Run it on a checkout of that repository (a sparse one is enough: the spec folders named in ``TYPES``)::

    python scripts/azure_facts.py --specs <dir with a (sparse) checkout of azure-rest-api-specs> \\
        --out tests/facts/azure_api_facts.json --versions-module src/shoal/core/azure_versions.py

It writes two files:

- ``--out`` (the test's copy, ``tests/test_api_facts.py`` compares Shoal's OpenAPI description with it):
  ``apiVersions``: for each resource type Shoal serves, the api-versions Azure publishes (stable and preview),
  read from the spec folder names (``.../stable/<version>/<file>.json``);
  ``operations``: for the api-versions in ``OPERATIONS_AT`` (those the SDKs in pyproject.toml and az 2.91.0
  send), every operation of the plane: HTTP method, path template normalised (lower case, parameter names
  replaced by ``{}``), operationId, and the request body's properties with their types and enums (nested models
  resolved through ``$ref``/``allOf``, read-only properties left out, at most ``MAX_DEPTH`` levels deep).
- ``--versions-module``: the same ``apiVersions`` table as a Python module that Shoal loads at run time
  (``shoal.core.apiversion`` refuses the versions it does not list, the way Azure does).

A file in the checkout that holds no ``paths`` (for example an empty ``{}`` standing in for a file that was not
fetched) still counts for the version its folder names; operations come only from files with paths.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

MAX_DEPTH = 4

# Resource type (lower case; "batch" is the data plane) -> the spec folder and the file names that describe it.
# Older versions describe several types in one file (compute.json, disk.json), newer ones split or merge them.
TYPES: dict[str, tuple[str, str]] = {
    "batch": ("batch/data-plane", r"BatchService"),
    "microsoft.batch": ("batch/resource-manager/Microsoft.Batch", r"BatchManagement|openapi"),
    "microsoft.compute/disks": ("compute/resource-manager/Microsoft.Compute", r"DiskRP|disk"),
    "microsoft.compute/snapshots": ("compute/resource-manager/Microsoft.Compute", r"DiskRP|disk|snapshot"),
    "microsoft.compute/images": ("compute/resource-manager/Microsoft.Compute", r"ComputeRP|compute|image"),
    "microsoft.compute/virtualmachines": ("compute/resource-manager/Microsoft.Compute",
                                          r"ComputeRP|compute|virtualMachine"),
    "microsoft.compute/galleries": ("compute/resource-manager/Microsoft.Compute", r"GalleryRP|gallery"),
    "microsoft.compute": ("compute/resource-manager/Microsoft.Compute",
                          r"ComputeRP|compute|computeRPCommon|virtualMachine|virtualMachineImage|image|DiskRP|disk|"
                          r"snapshot|GalleryRP|gallery|skus"),
    "microsoft.resources/resources": ("resources/resource-manager/Microsoft.Resources", r"resources"),
    "microsoft.resources/subscriptions": ("resources/resource-manager/Microsoft.Resources", r"subscriptions"),
    "microsoft.authorization/roleassignments": ("authorization/resource-manager/Microsoft.Authorization",
                                                r"authorization-RoleAssignmentsCalls|authorization"),
    "microsoft.authorization/roledefinitions": ("authorization/resource-manager/Microsoft.Authorization",
                                                r"authorization-RoleDefinitionsCalls|authorization"),
}

# Plane -> (spec folder, the api-versions whose operations are recorded).
OPERATIONS_AT: dict[str, tuple[str, list[str]]] = {
    "batch": ("batch/data-plane", ["2025-06-01"]),
    "microsoft.batch": ("batch/resource-manager/Microsoft.Batch", ["2025-06-01"]),
    "microsoft.compute": ("compute/resource-manager/Microsoft.Compute", ["2026-03-02", "2026-03-03", "2026-04-01"]),
    "microsoft.resources": ("resources/resource-manager/Microsoft.Resources", ["2022-12-01", "2025-04-01"]),
    "microsoft.authorization": ("authorization/resource-manager/Microsoft.Authorization", ["2022-04-01"]),
}

_VERSION_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\d+\.\d+)?(-[a-z]+)?$", re.IGNORECASE)
_PARAM = re.compile(r"\{[^}]*\}")
_METHODS = ("get", "put", "post", "patch", "delete", "head")


def spec_files(specs: Path, folder: str) -> list[tuple[str, Path]]:
    """(api-version, file) for every description below ``specification/<folder>``; examples are skipped."""
    found = []
    for path in sorted((specs / "specification" / folder).rglob("*.json")):
        parts = path.parts
        if "examples" in parts:
            continue
        for i, part in enumerate(parts[:-1]):
            if part in ("stable", "preview") and i + 1 < len(parts) - 1 and _VERSION_DIR.match(parts[i + 1]):
                found.append((parts[i + 1], path))
                break
    return found


def published_versions(specs: Path) -> dict[str, list[str]]:
    table = {}
    for rtype, (folder, names) in TYPES.items():
        pattern = re.compile(rf"^({names})\.json$")
        versions = {v for v, path in spec_files(specs, folder) if pattern.match(path.name)}
        table[rtype] = sorted(versions)
    return table


def normalise(path: str) -> str:
    return _PARAM.sub("{}", path).lower().rstrip("/") or "/"


class Resolver:
    """Follows ``$ref`` within a file and to sibling files, merges ``allOf``, bounds the depth."""

    def __init__(self) -> None:
        self.docs: dict[Path, Any] = {}

    def load(self, path: Path) -> Any:
        if path not in self.docs:
            self.docs[path] = json.loads(path.read_text()) if path.exists() else {}
        return self.docs[path]

    def deref(self, schema: dict[str, Any], here: Path) -> tuple[dict[str, Any], Path, str | None]:
        ref = schema.get("$ref")
        if not ref:
            return schema, here, None
        file_part, _, pointer = ref.partition("#")
        target = (here.parent / file_part).resolve() if file_part else here
        node: Any = self.load(target)
        for key in filter(None, pointer.split("/")):
            node = node.get(key, {}) if isinstance(node, dict) else {}
        return (node if isinstance(node, dict) else {}), target, ref

    def describe(self, schema: dict[str, Any], here: Path, depth: int = 0, seen: tuple[str, ...] = ()) -> dict:
        schema, here, ref = self.deref(schema, here)
        if ref and ref in seen:
            return {"type": "object", "recursive": True}
        seen = (*seen, ref) if ref else seen
        props: dict[str, Any] = {}
        out: dict[str, Any] = {}
        for part in schema.get("allOf", []):
            merged = self.describe(part, here, depth, seen)
            props.update(merged.get("properties", {}))
        kind = schema.get("type") or ("object" if props or "properties" in schema else None)
        if kind:
            out["type"] = kind
        if "enum" in schema:
            out["enum"] = sorted(str(v) for v in schema["enum"])
        if kind == "array" and isinstance(schema.get("items"), dict):
            out["items"] = self.describe(schema["items"], here, depth, seen)
        if isinstance(schema.get("additionalProperties"), dict):
            out["additionalProperties"] = self.describe(schema["additionalProperties"], here, depth + 1, seen)
        if depth < MAX_DEPTH:
            for name, sub in (schema.get("properties") or {}).items():
                sub_schema, _, _ = self.deref(sub, here)
                if sub.get("readOnly") or sub_schema.get("readOnly"):
                    continue
                props[name] = self.describe(sub, here, depth + 1, seen)
        elif schema.get("properties") or props:
            out["truncated"] = True
            props = {}
        if props:
            out["type"] = "object"
            out["properties"] = dict(sorted(props.items()))
        return out


def operations(specs: Path, folder: str, version: str, resolver: Resolver) -> list[dict[str, Any]]:
    ops = []
    for v, path in spec_files(specs, folder):
        if v != version:
            continue
        doc = resolver.load(path.resolve())
        for template, item in (doc.get("paths") or {}).items():
            shared = item.get("parameters", [])
            for method in _METHODS:
                op = item.get(method)
                if not op:
                    continue
                entry: dict[str, Any] = {"method": method.upper(), "path": normalise(template.split("?")[0]),
                                         "operationId": op.get("operationId", "")}
                for param in [*shared, *op.get("parameters", [])]:
                    param, _, _ = resolver.deref(param, path.resolve())
                    if param.get("in") == "body" and "schema" in param:
                        entry["body"] = resolver.describe(param["schema"], path.resolve())
                ops.append(entry)
    return sorted(ops, key=lambda o: (o["path"], o["method"]))


def write_versions_module(table: dict[str, list[str]], out: Path) -> None:
    lines = [
        '"""The api-versions Azure publishes for each resource type Shoal serves.',
        "",
        "Generated by scripts/azure_facts.py from the folder names of Azure/azure-rest-api-specs: do not edit.",
        '"""',
        "",
        "VERSIONS: dict[str, tuple[str, ...]] = {",
    ]
    for rtype, versions in sorted(table.items()):
        lines.append(f"    {json.dumps(rtype)}: (")
        row = "       "
        for v in versions:
            item = f" {json.dumps(v)},"
            if len(row) + len(item) > 118:
                lines.append(row)
                row = "       "
            row += item
        lines.append(row)
        lines.append("    ),")
    lines.append("}")
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=Path, required=True, help="a (sparse) checkout of azure-rest-api-specs")
    parser.add_argument("--out", type=Path, default=Path("tests/facts/azure_api_facts.json"))
    parser.add_argument("--versions-module", type=Path, default=Path("src/shoal/core/azure_versions.py"))
    args = parser.parse_args()

    table = published_versions(args.specs)
    resolver = Resolver()
    ops = {plane: {v: operations(args.specs, folder, v, resolver) for v in versions}
           for plane, (folder, versions) in OPERATIONS_AT.items()}
    notes = {str(path.relative_to(args.specs.resolve())): doc["info"]["x-shoal-note"]
             for path, doc in resolver.docs.items() if isinstance(doc, dict) and "x-shoal-note" in doc.get("info", {})}
    facts = {"source": "Azure/azure-rest-api-specs (specification/)", "maxDepth": MAX_DEPTH,
             "apiVersions": table, "operations": ops, "notes": notes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    write_versions_module(table, args.versions_module)
    count = sum(len(o) for per in ops.values() for o in per.values())
    print(f"{args.out}: {len(table)} resource types, {count} operations; {args.versions_module}")


if __name__ == "__main__":
    main()
