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
from shoal.schemas import arm, arm_batch, arm_compute
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
    ("post", r"/batch/\{account\}/jobschedules", bodies.JobSchedule),
    ("(patch|put)", r"/batch/\{account\}/jobschedules/\{schedule_id\}", bodies.JobScheduleUpdate),
]
_RG = r"/subscriptions/\{subscription_id\}/resourceGroups/\{group\}"
_COMPUTE = _RG + r"/providers/Microsoft\.Compute"
_ACCOUNT = _RG + r"/providers/Microsoft\.Batch/batchAccounts/\{account\}"
# (method, path pattern) -> the body model of management-plane operations (the routes read them by hand).
_ARM_BODIES: list[tuple[str, str, type[BaseModel]]] = [
    *[("put|patch", _COMPUTE + "".join(rf"/{part}/\{{n{i}\}}" for i, part in enumerate(collection.split("/"))),
       model) for collection, model in arm_compute.BODIES.items()],
    ("post", _COMPUTE + r"/virtualMachines/\{vm\}/runCommand", arm_compute.RunCommandInput),
    ("post", _COMPUTE + r"/(disks|snapshots)/\{name\}/beginGetAccess", arm_compute.GrantAccessData),
    ("put|patch", _ACCOUNT, arm_batch.Account),
    ("post", _ACCOUNT + r"/regenerateKeys", arm_batch.RegenerateKey),
    ("put|patch", _ACCOUNT + r"/pools/\{pool_id\}", arm_batch.Pool),
    ("put", _RG, arm.ResourceGroupPut),
    ("patch", _RG, arm.ResourceGroupPatch),
    ("put", r"/\{raw_scope\}/providers/Microsoft\.Authorization/roleAssignments/\{name\}", arm.RoleAssignmentPut),
]


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
            op["responses"] = _responses(path, op.get("responses") or {}, head=method == "head")
            body = _body_for(method, path, components)
            if body is not None and "requestBody" not in op:
                op["requestBody"] = {"required": method in ("put", "post") and path.startswith("/subscriptions"),
                                     "content": {"application/json": {"schema": body}}}
    return spec


# Errors as each plane renders them (``api/errors.py``): any status a route answers that is not a success is one
# of these. Successes are declared without a body shape (their JSON follows Azure's own descriptions).
_ARM_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "target": {"type": ["string", "null"]},
                   "details": {"type": "array"}}}}}
_BATCH_ERROR = {"type": "object", "required": ["code", "message"], "properties": {
    "code": {"type": "string"},
    "message": {"type": "object", "required": ["value"], "properties": {"lang": {"type": "string"},
                                                                         "value": {"type": "string"}}},
    "values": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"},
                                                                          "value": {"type": "string"}}}}}}
_ANY: dict[str, Any] = {"*/*": {"schema": {}}}
# Routes whose successes are not JSON: files, blobs and disk downloads.
_NOT_JSON = re.compile(r".*/files(/\{[^}]+\})?$|^/containers/.*|^/downloads/.*|^/healthz$")


def _responses(path: str, generated: dict[str, Any], *, head: bool = False) -> dict[str, Any]:
    if path.startswith("/batch/"):
        error: dict[str, Any] = {"application/json": {"schema": _BATCH_ERROR}}
    elif path.startswith(("/subscriptions", "/providers", "/{raw_scope}", "/tenants", "/metadata")):
        error = {"application/json": {"schema": _ARM_ERROR}}
    else:  # identity and Shoal's own endpoints: their own error shapes
        error = _ANY
    success = _ANY if _NOT_JSON.match(path) else {"application/json": {"schema": {}}}
    responses = {code: body for code, body in generated.items() if code.startswith("2") and code != "200"}
    responses.update({
        "200": {"description": "Success.", "content": success},
        "201": {"description": "Created.", "content": _ANY},
        "202": {"description": "Accepted (a long-running operation, or an action)."},
        "204": {"description": "No content."},
        "304": {"description": "Not modified (a conditional request)."},
        "default": {"description": "An error, in the plane's own format.", "content": error},
    })
    if head:  # the answer to a HEAD has no body
        for response in responses.values():
            response.pop("content", None)
    return responses


def _version_for(path: str) -> str | None:
    """The SDKs' version on the Batch data plane; on ARM, the newest version Azure publishes for the path's
    resource type (others are refused, see ``core/apiversion.py``)."""
    if path.startswith("/batch/"):
        return BATCH_VERSION
    if path.startswith("/subscriptions") or path.startswith("/{raw_scope}") or path.startswith("/providers"):
        return apiversion.newest(path.replace("{raw_scope}", "subscriptions/{subscription_id}")) or ARM_VERSION
    return None


def _body_for(method: str, path: str, components: dict[str, Any]) -> dict[str, Any] | None:
    """The request body's schema, from the wire model the route reads it with."""
    for verb, pattern, model in (*_BATCH_BODIES, *_ARM_BODIES):
        if re.fullmatch(verb, method) and re.fullmatch(pattern, path):
            # Names are qualified by module: the planes have models of one name and different shapes (StartTask).
            module = model.__module__.rsplit(".", 1)[-1]
            name = f"{module}.{model.__name__}"
            schema = model.model_json_schema(ref_template=f"#/components/schemas/{module}.{{model}}")
            for key, sub in schema.pop("$defs", {}).items():
                components[f"{module}.{key}"] = sub
            components[name] = schema
            return {"$ref": f"#/components/schemas/{name}"}
    return None
