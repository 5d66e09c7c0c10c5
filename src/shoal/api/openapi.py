"""The OpenAPI description of what Shoal serves (``GET /openapi.json``), generated from its routes and wire
models.

FastAPI describes the routes; what it cannot see is added here, in one place: the path parameters of routes
registered per resource kind, the ``api-version`` query parameter every ARM and Batch operation requires, and
the request bodies that routes read themselves (the Batch wire models of ``schemas/batch_bodies.py``, and the
ARM resource envelope). Fuzzing (``tests/test_fuzz.py``) runs against this description.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from shoal.core import apiversion
from shoal.schemas import batch_bodies as bodies

ARM_VERSION = "2024-07-01"
BATCH_VERSION = "2025-06-01"
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

# (method, path pattern) -> the body model of Batch operations.
_BATCH_BODIES: list[tuple[str, str, type[BaseModel]]] = [
    ("post", r"/batch/\{account\}/pools", bodies.Pool),
    ("patch", r"/batch/\{account\}/pools/\{pool_id\}", bodies.Pool),
    ("post", r"/batch/\{account\}/pools/\{pool_id\}/updateproperties", bodies.Pool),
    ("post", r"/batch/\{account\}/pools/\{pool_id\}/resize", bodies.PoolResize),
    ("post", r"/batch/\{account\}/pools/\{pool_id\}/removenodes", bodies.RemoveNodes),
    ("post", r"/batch/\{account\}/pools/\{pool_id\}/(enable|evaluate)autoscale", bodies.AutoScale),
    ("post", r"/batch/\{account\}/jobs", bodies.Job),
    ("(patch|put)", r"/batch/\{account\}/jobs/\{job_id\}", bodies.Job),
    ("post", r"/batch/\{account\}/jobs/\{job_id\}/tasks", bodies.TaskAdd),
    ("post", r"/batch/\{account\}/jobs/\{job_id\}/addtaskcollection", bodies.TaskCollection),
    ("put", r"/batch/\{account\}/jobs/\{job_id\}/tasks/\{task_id\}", bodies.TaskUpdate),
]
_ARM_RESOURCE = {
    "type": "object",
    "properties": {"location": {"type": "string"}, "tags": {"type": "object", "additionalProperties": {
        "type": "string"}}, "properties": {"type": "object"}, "sku": {"type": "object"}},
}


def install(app: FastAPI) -> None:
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            cached.update(describe(app))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes,
                       description="Azure Resource Manager, Microsoft Entra ID token and Azure Batch operations, "
                                   "as Shoal serves them.")
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for path, item in spec.get("paths", {}).items():
        names = _PARAM.findall(path)
        for method, op in item.items():
            params = op.setdefault("parameters", [])
            declared = {(p.get("in"), p.get("name")) for p in params}
            for name in names:
                if ("path", name) not in declared:
                    params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
            version = _version_for(path)
            if version is not None and ("query", "api-version") not in declared:
                params.append({"name": "api-version", "in": "query", "required": True,
                               "schema": {"type": "string", "enum": [version]}})
            body = _body_for(method, path, components)
            if body is not None and "requestBody" not in op:
                op["requestBody"] = {"required": method in ("put", "post") and path.startswith("/subscriptions"),
                                     "content": {"application/json": {"schema": body}}}
    return spec


def _version_for(path: str) -> str | None:
    """The SDKs' version on the Batch data plane; on ARM, the newest version Azure publishes for the path's
    resource type (others are refused, see ``core/apiversion.py``)."""
    if path.startswith("/batch/"):
        return BATCH_VERSION
    if path.startswith("/subscriptions") or path.startswith("/{raw_scope}") or path.startswith("/providers"):
        return apiversion.newest(path.replace("{raw_scope}", "subscriptions/{subscription_id}")) or ARM_VERSION
    return None


def _body_for(method: str, path: str, components: dict[str, Any]) -> dict[str, Any] | None:
    for verb, pattern, model in _BATCH_BODIES:
        if re.fullmatch(verb, method) and re.fullmatch(pattern, path):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}
    if method in ("put", "patch") and path.startswith("/subscriptions/") and "/resourceGroups/" in path:
        return _ARM_RESOURCE
    return None
