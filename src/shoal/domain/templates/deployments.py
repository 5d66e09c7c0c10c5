"""Deployments at resource-group scope (``Microsoft.Resources/deployments``): validate, create or update, get,
list, delete, their operations, and the step the operations loop repeats until a deployment is done.

A deployment is stored as a resource row of type ``Microsoft.Resources/deployments`` (kept out of the group's
resource listings, deleted with the group): ``properties`` is what ARM shows, ``internal`` keeps the template,
the parameters given, the plan (``engine.Instance`` per resource) and each resource's progress. A PUT only
checks the template, records the plan and starts an operation; :func:`advance` then deploys, each pass: it
starts every resource whose dependencies have succeeded (so independent resources deploy in parallel, each
through its own long-running operation), follows the operations it started, and at the end deletes what
``Complete`` mode removes and evaluates the outputs. Every pass re-reads the row, so a restart resumes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shoal.core import errors, ids
from shoal.core.ids import ResourceId
from shoal.core.timefmt import format_timestamp
from shoal.domain import authorization, operations, resource_groups, resources
from shoal.domain.authorization import Caller
from shoal.domain.compute.kinds import ComputeContext
from shoal.domain.templates import engine, positions
from shoal.domain.templates import functions as fx
from shoal.domain.templates import resource_types as rt
from shoal.store import models

TYPE = "Microsoft.Resources/deployments"
DEPLOY_KIND = "Microsoft.Resources/deployments:deploy"
NAMESPACE = "Microsoft.Resources"
ACTIVE = ("Accepted", "Running")
FAILED_MESSAGE = ("At least one resource deployment operation failed. Please list deployment operations for "
                  "details. Please see https://aka.ms/arm-deployment-operations for usage details.")
MODES = {"incremental": "Incremental", "complete": "Complete"}


def deployment_id(subscription_id: str, group: str, name: str) -> ResourceId:
    return ids.parse(f"/subscriptions/{subscription_id}/resourceGroups/{group}/providers/{TYPE}/{name}")


def check_name(name: str) -> None:
    ids.check_name(name, what="deployment", max_len=64, pattern=r"^[-\w._()]+$",
                   hint="letters, digits, '-', '_', '.', '(' and ')'")


# --- reading requests ---------------------------------------------------------------------------------------------
def _environment(s: Session, rid: ResourceId, tenant_id: str, mode: str) -> engine.Environment:
    group = resource_groups.get(s, rid.subscription, rid.resource_group or "")
    return engine.Environment(rid.subscription, tenant_id, {
        "id": ids.resource_group_id(rid.subscription, group.name), "name": group.name, "location": group.location,
        "tags": group.tags or {}}, rid.name, mode)


def _invalid(exc: engine.TemplateError, located: dict[positions.Path, tuple[int, int]]) -> errors.AzureError:
    """``InvalidTemplate`` naming the line and column (in the request body) of the value concerned."""
    where = ""
    target = None
    if exc.path is not None:
        full: positions.Path = ("properties", "template", *exc.path)
        if exc.path[:1] == ("parameters",) and located.get(("properties", *exc.path)) and \
                "provided" in exc.message:
            full = ("properties", *exc.path)
        line, column = located.get(full, located.get(("properties", "template"), (1, 1)))
        target = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in full).lstrip(".")
        where = f" at line '{line}' and column '{column}'"
    return errors.InvalidTemplate(f"Deployment template validation failed: 'The template value{where} is not "
                                  f"valid: {exc.message}'.", target=target)


class Request:
    """A deployment PUT/validate body, checked: mode, template, parameters; the template expanded."""

    def __init__(self, s: Session, rid: ResourceId, body: Any, raw: str, tenant_id: str) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise errors.InvalidRequestContent("The request content was invalid: 'properties' is required.")
        props = body["properties"]
        for key in ("templateLink", "parametersLink"):
            if props.get(key):
                raise errors.InvalidTemplate(f"'{key}' is not supported: send the template and its parameters in "
                                             "the request ('properties.template', 'properties.parameters').")
        if "template" not in props:
            raise errors.InvalidRequestContent("The request content was invalid: 'properties.template' is required.")
        mode = props.get("mode")
        if not isinstance(mode, str) or mode.lower() not in MODES:
            raise errors.InvalidDeploymentMode(f"The deployment mode '{mode}' is not valid: it must be "
                                               "'Incremental' or 'Complete'.")
        self.mode = MODES[mode.lower()]
        self.template_raw = props["template"]
        self.parameters_raw = props.get("parameters") or {}
        self.env = _environment(s, rid, tenant_id, self.mode)
        try:
            self.template = engine.Template(self.template_raw, self.parameters_raw, self.env)
            self.plan = self.template.plan()
        except engine.TemplateError as exc:
            raise _invalid(exc, positions.locate(raw)) from None

    def template_hash(self) -> str:
        digest = hashlib.sha256(json.dumps(self.template_raw, sort_keys=True).encode()).digest()
        return str(int.from_bytes(digest[:8], "big"))

    def properties(self, state: str, now: datetime) -> dict[str, Any]:
        return {
            "templateHash": self.template_hash(), "parameters": self.template.parameters_body(), "mode": self.mode,
            "provisioningState": state, "timestamp": format_timestamp(now), "duration": "PT0S",
            "correlationId": str(uuid.uuid4()), "providers": _providers(self.plan, self.env.group["location"]),
            "dependencies": _dependencies(self.plan), "outputResources": [], "validatedResources": [
                {"id": i.id} for i in self.plan],
        }


def _providers(plan: list[engine.Instance], location: str) -> list[dict[str, Any]]:
    by_namespace: dict[str, list[str]] = {}
    for inst in plan:
        namespace, _, rtype = inst.type.partition("/")
        types = by_namespace.setdefault(namespace, [])
        if rtype not in types:
            types.append(rtype)
    return [{"namespace": ns, "resourceTypes": [{"resourceType": t, "locations": [location]} for t in types]}
            for ns, types in by_namespace.items()]


def _dependencies(plan: list[engine.Instance]) -> list[dict[str, Any]]:
    by_id = {i.id: i for i in plan}
    return [{"id": i.id, "resourceType": i.type, "resourceName": i.name, "dependsOn": [
        {"id": d, "resourceType": by_id[d].type, "resourceName": by_id[d].name} for d in i.depends_on]}
        for i in plan if i.depends_on]


# --- use cases ----------------------------------------------------------------------------------------------------
def validate(s: Session, rid: ResourceId, body: Any, raw: str, tenant_id: str, now: datetime) -> dict[str, Any]:
    """The ``validate`` answer: the deployment as it would be created (raises ``InvalidTemplate``)."""
    check_name(rid.name)
    resource_groups.get(s, rid.subscription, rid.resource_group or "")
    req = Request(s, rid, body, raw, tenant_id)
    missing = sorted({i.type for i in req.plan if rt.handler_for(i.type) is None})
    if missing:
        raise errors.InvalidTemplate(f"Deployment template validation failed: {rt.refused(missing[0]).message}")
    props = req.properties("Succeeded", now)
    return {"id": str(rid), "name": rid.name, "type": TYPE, "properties": props}


def create_or_update(ctx: ComputeContext, s: Session, caller: Caller, rid: ResourceId, body: Any,
                     raw: str) -> tuple[models.Resource, models.Operation, bool]:
    """Check the template, record the deployment and start deploying it (the operations loop does the work)."""
    check_name(rid.name)
    resource_groups.require_usable(s, rid.subscription, rid.resource_group or "")
    row = resources.find(s, rid)
    if row is not None and row.provisioning_state in ACTIVE:
        raise errors.DeploymentActive(f"The deployment '{rid.name}' is still running: wait for it to finish (or "
                                      "cancel it), then deploy again.")
    req = Request(s, rid, body, raw, caller.tenant_id)
    now = ctx.clock.now()
    props = req.properties("Accepted", now)
    internal = {"template": req.template_raw, "parameters": req.parameters_raw, "mode": req.mode,
                "tenant": caller.tenant_id, "caller": [caller.object_id, caller.app_id, caller.tenant_id],
                "plan": [i.to_json() for i in req.plan], "progress": {}, "deleting": {}, "cleaned": False,
                "started": now.isoformat()}
    created = row is None
    if row is None:
        row = resources.create_row(s, ctx.clock, rid, location=None, properties=props, internal=internal,
                                   provisioning_state="Accepted")
    else:
        row.properties, row.internal, row.provisioning_state = props, internal, "Accepted"
        resources.touch(row, ctx.clock)
    op = operations.start(s, ctx.clock, subscription_id=rid.subscription, location=req.env.group["location"],
                          namespace=NAMESPACE, kind=DEPLOY_KIND, target_id=str(rid))
    return row, op, created


def get(s: Session, rid: ResourceId) -> models.Resource:
    row = resources.find(s, rid)
    if row is None or row.type_key != TYPE.lower():
        raise errors.DeploymentNotFound(f"Deployment '{rid.name}' could not be found.")
    return row


def find(s: Session, rid: ResourceId) -> models.Resource | None:
    row = resources.find(s, rid)
    return row if row is not None and row.type_key == TYPE.lower() else None


def list_in_group(s: Session, subscription_id: str, group: str) -> list[models.Resource]:
    resource_groups.get(s, subscription_id, group)
    return resources.list_of_type(s, subscription_id, TYPE, group=group)


def delete(s: Session, rid: ResourceId) -> bool:
    """Delete the deployment's record (never the resources it deployed); False when there was none."""
    row = find(s, rid)
    if row is None:
        return False
    if row.provisioning_state in ACTIVE:
        raise errors.DeploymentActive(f"The deployment '{rid.name}' is still running and can't be deleted now: "
                                      "cancel it or wait for it to finish.")
    s.delete(row)
    return True


def cancel(ctx: ComputeContext, s: Session, rid: ResourceId) -> None:
    row = get(s, rid)
    if row.provisioning_state not in ACTIVE:
        raise errors.DeploymentCannotBeCancelled(f"The deployment '{rid.name}' is not running: only a running "
                                                 "deployment can be canceled.")
    row.internal = {**row.internal, "canceled": True}


def render(row: models.Resource) -> dict[str, Any]:
    props = dict(row.properties)
    props["provisioningState"] = row.provisioning_state
    return {"id": row.id, "name": row.name, "type": TYPE, "properties": props}


def operations_of(row: models.Resource) -> list[dict[str, Any]]:
    """The deployment's operations, one per resource started (``GET .../deployments/{name}/operations``)."""
    out = []
    for inst_id, p in row.internal.get("progress", {}).items():
        rid = ids.parse(inst_id)
        props: dict[str, Any] = {
            "provisioningOperation": "Create", "provisioningState": p["state"], "timestamp": p["changed"],
            "duration": _duration(p["started"], p["changed"]), "trackingId": p["tracking"],
            "targetResource": {"id": inst_id, "resourceType": rid.type, "resourceName": "/".join(rid.names)},
        }
        if p["state"] == "Succeeded":
            props["statusCode"] = "OK"
        elif p["state"] == "Failed":
            props["statusCode"] = "BadRequest"
            props["statusMessage"] = {"status": "Failed", "error": p["error"]}
        out.append({"id": f"{row.id}/operations/{p['opid']}", "operationId": p["opid"], "properties": props})
    for inst_id, p in row.internal.get("deleting", {}).items():
        rid = ids.parse(inst_id)
        out.append({"id": f"{row.id}/operations/{p['opid']}", "operationId": p["opid"], "properties": {
            "provisioningOperation": "Delete", "provisioningState": p["state"], "timestamp": p["changed"],
            "duration": _duration(p["started"], p["changed"]), "trackingId": p["tracking"],
            "targetResource": {"id": inst_id, "resourceType": rid.type, "resourceName": "/".join(rid.names)},
            **({"statusMessage": {"status": "Failed", "error": p["error"]}} if p.get("error") else {})}})
    return out


def operation_of(row: models.Resource, operation_id: str) -> dict[str, Any]:
    found = next((o for o in operations_of(row) if o["operationId"].lower() == operation_id.lower()), None)
    if found is None:
        raise errors.OperationNotFound(f"The operation '{operation_id}' of deployment '{row.name}' could not be "
                                       "found.")
    return found


def _duration(started: str, changed: str) -> str:
    seconds = max(0.0, (datetime.fromisoformat(changed.replace("Z", "+00:00")) -
                        datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds())
    return f"PT{seconds:.3f}S"


# --- deploying: one pass of the operations loop ----------------------------------------------------------------
class _Progress:
    def __init__(self, row: models.Resource, now: datetime) -> None:
        self.row, self.now = row, now
        self.progress: dict[str, dict[str, Any]] = {k: dict(v) for k, v in row.internal.get("progress", {}).items()}
        self.deleting: dict[str, dict[str, Any]] = {k: dict(v) for k, v in row.internal.get("deleting", {}).items()}

    def set(self, table: dict[str, dict[str, Any]], rid: str, state: str, *, op: str | None = None,
            error: errors.AzureError | None = None) -> None:
        stamp = format_timestamp(self.now)
        entry = table.setdefault(rid, {"opid": uuid.uuid4().hex[:16].upper(), "tracking": str(uuid.uuid4()),
                                       "started": stamp})
        entry.update(state=state, changed=stamp, op=op)
        if error is not None:
            entry["error"] = {"code": error.code, "message": error.message}

    def save(self, **extra: Any) -> None:
        self.row.internal = {**self.row.internal, "progress": self.progress, "deleting": self.deleting, **extra}


def advance(ctx: ComputeContext, s: Session, deployment: str) -> bool:
    """One pass over a deployment; True when it is finished (Succeeded or Failed)."""
    rid = ids.parse(deployment)
    row = find(s, rid)
    if row is None:
        return True
    if row.provisioning_state not in ACTIVE:
        return True
    now = ctx.clock.now()
    state = _Progress(row, now)
    row.provisioning_state = "Running"
    internal = row.internal
    plan = [engine.Instance.from_json(i) for i in internal["plan"]]
    try:
        template = engine.Template(internal["template"], internal["parameters"],
                                   _environment(s, rid, internal["tenant"], internal["mode"]))
    except engine.TemplateError as exc:
        return _finish(ctx, s, row, state, error=_invalid(exc, {}))
    caller = Caller(*internal["caller"])
    reference = _reader(s, plan)
    if internal.get("canceled"):
        return _finish(ctx, s, row, state, error=errors.DeploymentCanceled("The deployment was canceled."),
                       canceled=True)
    # Follow what is running.
    for inst_id, p in list(state.progress.items()):
        if p["state"] == "Running" and p.get("op"):
            op = s.get(models.Operation, p["op"])
            if op is None or op.status == operations.SUCCEEDED:
                state.set(state.progress, inst_id, "Succeeded", op=p["op"])
            elif op.status != operations.IN_PROGRESS:
                err = op.error or {"code": "ResourceDeploymentFailure", "message": "The resource operation failed."}
                state.set(state.progress, inst_id, "Failed", op=p["op"],
                          error=errors.AzureError(err["message"], code=err["code"]))
    failed = any(p["state"] == "Failed" for p in state.progress.values())
    # Start what is ready (after a failure nothing new starts).
    if not failed:
        done = {k for k, p in state.progress.items() if p["state"] == "Succeeded"}
        for inst in plan:
            if inst.id in state.progress or not all(d in done for d in inst.depends_on):
                continue
            _start(ctx, s, caller, template, inst, reference, state)
    running = any(p["state"] == "Running" for p in state.progress.values())
    failed = any(p["state"] == "Failed" for p in state.progress.values())
    if running:
        state.save()
        return False
    if failed:
        return _finish(ctx, s, row, state, error=_failed(state))
    if any(inst.id not in state.progress for inst in plan):
        state.save()
        return False
    if internal["mode"] == "Complete" and not _cleaned(ctx, s, row, plan, state):
        state.save()
        return False
    if any(p["state"] == "Failed" for p in state.deleting.values()):
        return _finish(ctx, s, row, state, error=_failed(state))
    try:
        outputs = template.outputs(reference)
    except engine.TemplateError as exc:
        return _finish(ctx, s, row, state, error=_invalid(exc, {}))
    return _finish(ctx, s, row, state, outputs=outputs)


def _start(ctx: ComputeContext, s: Session, caller: Caller, template: engine.Template, inst: engine.Instance,
           reference: engine.Reference, state: _Progress) -> None:
    handler = rt.handler_for(inst.type)
    try:
        if handler is None:
            raise rt.refused(inst.type)
        if not authorization.allowed(s, caller, f"{inst.type}/write", inst.id):
            raise errors.AuthorizationFailed(
                f"The client '{caller.object_id}' does not have authorization to perform action "
                f"'{inst.type}/write' over scope '{inst.id}' or the scope is invalid.")
        try:
            body = template.body(inst, reference)
        except engine.TemplateError as exc:
            raise errors.InvalidTemplate(f"Unable to process template language expressions for resource "
                                         f"'{inst.id}': {exc.message}") from None
        op = handler.put(ctx, s, ids.parse(inst.id), body)
    except errors.AzureError as exc:
        state.set(state.progress, inst.id, "Failed", error=exc)
        return
    state.set(state.progress, inst.id, "Running" if op else "Succeeded", op=op)


def _reader(s: Session, plan: list[engine.Instance]) -> engine.Reference:
    by_name = {}
    for inst in plan:
        by_name[inst.name.lower()] = inst.id
        by_name[f"{inst.type}/{inst.name}".lower()] = inst.id

    def reference(target: str, api_version: str | None, full: bool) -> Any:
        rid_text = target if target.startswith("/") else by_name.get(target.lower())
        if rid_text is None:
            raise fx.EvaluationError(f"The resource '{target}' is not defined in the template: reference() needs "
                                     "its resource id.")
        try:
            rid = ids.parse(rid_text)
        except errors.AzureError as exc:
            raise fx.EvaluationError(exc.message) from None
        handler = rt.handler_for(rid.type)
        body = handler.read(s, rid) if handler is not None else rt.generic_read(s, rid)
        if body is None:
            raise fx.EvaluationError(f"The Resource '{rid.type}/{'/'.join(rid.names)}' under resource group "
                                     f"'{rid.resource_group}' was not found.")
        if full:
            return {**body, "apiVersion": api_version, "resourceId": str(rid)}
        return body.get("properties", {})

    return reference


def _cleaned(ctx: ComputeContext, s: Session, row: models.Resource, plan: list[engine.Instance],
             state: _Progress) -> bool:
    """``Complete`` mode: delete the group's resources the template does not name (children first, only types
    a handler can delete, never a disk attached to a VM). True once none is left to delete."""
    keep = {i.id.lower() for i in plan}
    group_key = ids.key(ids.resource_group_id(row.subscription_id, ids.parse(row.id).resource_group or ""))
    extra = [r for r in resources.list_in_group(s, group_key)
             if r.key not in keep and r.type_key != TYPE.lower() and rt.handler_for(r.type) is not None
             and not r.internal.get("attachedTo")]
    pending = False
    for r in sorted(extra, key=lambda r: -len(r.key)):
        entry = state.deleting.get(r.id)
        if entry is not None and entry["state"] == "Failed":
            continue
        if entry is not None and entry.get("op"):
            op = s.get(models.Operation, entry["op"])
            if op is not None and op.status == operations.IN_PROGRESS:
                pending = True
                continue
        if resources.children(s, ids.parse(r.id)):
            pending = True
            continue
        handler = rt.handler_for(r.type)
        assert handler is not None
        try:
            op_id = handler.delete(ctx, s, ids.parse(r.id))
        except errors.AzureError as exc:
            state.set(state.deleting, r.id, "Failed", error=exc)
            continue
        state.set(state.deleting, r.id, "Running" if op_id else "Succeeded", op=op_id)
        pending = pending or op_id is not None
    for rid, entry in state.deleting.items():
        if entry["state"] == "Running" and not any(r.id == rid for r in extra):
            state.set(state.deleting, rid, "Succeeded", op=entry.get("op"))
    return not pending


def _failed(state: _Progress) -> errors.AzureError:
    details = [errors.ErrorDetail(p["error"]["code"], p["error"]["message"], target=rid)
               for table in (state.progress, state.deleting) for rid, p in table.items() if p["state"] == "Failed"]
    return errors.DeploymentFailed(FAILED_MESSAGE, details=details)


def _finish(ctx: ComputeContext, s: Session, row: models.Resource, state: _Progress, *,
            error: errors.AzureError | None = None, outputs: dict[str, Any] | None = None,
            canceled: bool = False) -> bool:
    state.save()
    props = dict(row.properties)
    started = row.internal.get("started") or row.created_at.isoformat()
    props["duration"] = _duration(started, state.now.isoformat())
    props["timestamp"] = format_timestamp(state.now)
    props["outputResources"] = [{"id": k} for k, p in state.progress.items() if p["state"] == "Succeeded"]
    if outputs is not None:
        props["outputs"] = outputs
    if error is not None:
        props["error"] = {"code": error.code, "message": error.message, **(
            {"details": [{"code": d.code, "message": d.message, **({"target": d.target} if d.target else {})}
                         for d in error.details]} if error.details else {})}
    props.pop("provisioningState", None)
    row.properties = props
    row.provisioning_state = "Canceled" if canceled else ("Failed" if error is not None else "Succeeded")
    resources.touch(row, ctx.clock)
    return True


def error_of(row: models.Resource) -> errors.AzureError | None:
    """The deployment's error as an ``AzureError`` (for the operation status document)."""
    err = row.properties.get("error")
    if not err:
        return None
    return errors.AzureError(err["message"], code=err["code"], status=400, details=[
        errors.ErrorDetail(d["code"], d["message"], d.get("target")) for d in err.get("details", [])])
