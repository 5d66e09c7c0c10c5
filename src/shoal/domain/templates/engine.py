"""A template, checked and expanded: parameters bound, ``copy`` loops and conditions expanded, names, types and
``dependsOn`` resolved to resource ids, cycles refused; then, at deploy time, each resource's body and the
outputs evaluated (``reference()`` reads what is already deployed).

Everything here is pure: the deployment use cases (``deployments.py``) give it the environment (subscription,
resource group, deployment name) and a ``reference`` reader. Every problem is a :class:`TemplateError`, which
the use cases render as Azure's ``InvalidTemplate`` with the line and column of the template value concerned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shoal.domain.templates import expressions as ex
from shoal.domain.templates import functions as fx
from shoal.domain.templates.positions import Path

MAX_RESOURCES = 800  # Azure: 800 resources per template (after copy loops)
MAX_COPY = 800
ALLOWED_TOP = {"$schema", "contentversion", "apiprofile", "parameters", "variables", "functions", "resources",
               "outputs", "metadata", "languageversion", "definitions"}
PARAMETER_TYPES = {"string": "String", "securestring": "SecureString", "int": "Int", "bool": "Bool",
                   "object": "Object", "secureobject": "SecureObject", "array": "Array"}
BODY_FIELDS = ("location", "tags", "sku", "kind", "properties", "zones", "plan", "identity")


class TemplateError(Exception):
    """The template (or its parameters) is not valid. ``path`` locates the template value it is about."""

    def __init__(self, message: str, path: Path | None = None, *, resource: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.resource = resource

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Environment:
    subscription_id: str
    tenant_id: str
    group: dict[str, Any]  # {"id", "name", "location", "tags"}
    deployment_name: str
    mode: str = "Incremental"


@dataclass
class Instance:
    """One resource to deploy (a ``copy`` loop gives one per index)."""

    id: str
    type: str
    name: str
    api_version: str
    path: tuple[int, ...]  # the template resource: index in ``resources``, then in nested ``resources``
    copy: dict[str, int] = field(default_factory=dict)  # loop name -> index ("" the resource's own loop)
    loop: str | None = None
    condition: bool = True
    depends_on: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "name": self.name, "apiVersion": self.api_version,
                "path": list(self.path), "copy": self.copy, "loop": self.loop, "dependsOn": self.depends_on}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instance:
        return cls(data["id"], data["type"], data["name"], data["apiVersion"], tuple(data["path"]),
                   dict(data.get("copy") or {}), data.get("loop"), True, list(data.get("dependsOn") or []))


Reference = Callable[[str, str | None, bool], Any]


def _no_reference(target: str, api_version: str | None, full: bool) -> Any:
    raise fx.EvaluationError("The template function 'reference' is not expected at this location: it can be used "
                             "only in the properties of a resource and in outputs.")


class _Scope:
    def __init__(self, template: Template, copy: dict[str, int], reference: Reference) -> None:
        self.template, self.copy, self.reference_fn = template, copy, reference

    def parameter(self, name: str) -> Any:
        return self.template.parameter(name)

    def variable(self, name: str) -> Any:
        return self.template.variable(name)

    def copy_index(self, loop: str | None) -> int:
        key = "" if loop is None else loop.lower()
        if key not in self.copy:
            raise fx.EvaluationError(
                "The template function 'copyIndex' is not expected at this location." if loop is None else
                f"The template function 'copyIndex' refers to the loop '{loop}', which is not being evaluated here.")
        return self.copy[key]

    def reference(self, target: str, api_version: str | None, full: bool) -> Any:
        return self.reference_fn(target, api_version, full)

    def resource_group(self) -> dict[str, Any]:
        g = self.template.env.group
        return {"id": g["id"], "name": g["name"], "type": "Microsoft.Resources/resourceGroups",
                "location": g["location"], "tags": g.get("tags") or {},
                "properties": {"provisioningState": "Succeeded"}}

    def subscription(self) -> dict[str, Any]:
        env = self.template.env
        return {"id": f"/subscriptions/{env.subscription_id}", "subscriptionId": env.subscription_id,
                "tenantId": env.tenant_id, "displayName": "Shoal"}

    def deployment(self) -> dict[str, Any]:
        env = self.template.env
        return {"name": env.deployment_name, "properties": {
            "template": {"contentVersion": self.template.raw.get("contentVersion", "1.0.0.0")},
            "mode": env.mode, "provisioningState": "Running"}}


class Template:
    def __init__(self, raw: Any, parameters: Any, env: Environment) -> None:
        if not isinstance(raw, dict):
            raise TemplateError("The template must be a JSON object.", ())
        self.raw: dict[str, Any] = raw
        self.env = env
        self._given = parameters if parameters is not None else {}
        self._params: dict[str, Any] = {}
        self._param_types: dict[str, str] = {}
        self._vars: dict[str, Any] = {}
        self._evaluating: list[str] = []
        self._loops: set[str] = set()  # copy loop names (a loop of count 0 is still a valid dependsOn target)
        self._check_shape()
        self._check_expressions(raw, ())
        self._bind_parameters()

    # --- helpers ------------------------------------------------------------------------------------------------
    def section(self, name: str, kind: type) -> Any:
        value = self.raw.get(name, kind())
        if not isinstance(value, kind):
            what = "an array" if kind is list else "an object"
            raise TemplateError(f"The template property '{name}' must be {what}.", (name,))
        return value

    def evaluate(self, value: Any, path: Path, copy: dict[str, int] | None = None,
                 reference: Reference = _no_reference) -> Any:
        """A template value with every expression in it evaluated."""
        scope = _Scope(self, copy or {}, reference)
        return self._walk(value, path, scope)

    def _walk(self, value: Any, path: Path, scope: _Scope) -> Any:
        if isinstance(value, str):
            try:
                return fx.evaluate_string(value, scope)
            except ex.ExpressionError as exc:
                raise syntax_error(value, exc, path) from None
            except fx.EvaluationError as exc:
                raise TemplateError(f"Unable to evaluate the template language expression '{value}': "
                                    f"{exc.message}", path) from None
        if isinstance(value, dict):
            return {k: self._walk(v, (*path, k), scope) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, (*path, i), scope) for i, v in enumerate(value)]
        return value

    # --- checks -------------------------------------------------------------------------------------------------
    def _check_shape(self) -> None:
        for key in self.raw:
            if key.lower() not in ALLOWED_TOP:
                raise TemplateError(f"The template property '{key}' is not allowed: a template has '$schema', "
                                    "'contentVersion', 'parameters', 'variables', 'resources' and 'outputs'.", (key,))
        if str(self.raw.get("languageVersion", "1.0")) not in ("1.0", "1.9-experimental"):
            raise TemplateError("Templates of languageVersion 2.0 (symbolic resource names) are not supported; "
                                "use a template whose 'resources' is an array.", ("languageVersion",))
        for name, kind in (("parameters", dict), ("variables", dict), ("resources", list), ("outputs", dict)):
            self.section(name, kind)
        if self.raw.get("functions"):
            raise TemplateError("User-defined template functions are not supported.", ("functions",))

    def _check_expressions(self, value: Any, path: Path) -> None:
        """Every expression parses and names only known functions (before anything is evaluated)."""
        stack: list[tuple[Any, Path]] = [(value, path)]
        while stack:
            item, where = stack.pop()
            if isinstance(item, dict):
                stack.extend((v, (*where, k)) for k, v in item.items())
            elif isinstance(item, list):
                stack.extend((v, (*where, i)) for i, v in enumerate(item))
            elif isinstance(item, str) and ex.is_expression(item):
                try:
                    tree = ex.parse(item[1:-1])
                except ex.ExpressionError as exc:
                    raise syntax_error(item, exc, where) from None
                for call in ex.calls(tree):
                    if call.name.lower() not in fx.KNOWN:
                        raise TemplateError(f"Unable to evaluate the template language expression '{item}': "
                                            f"{fx.unknown_function(call).message}", where)

    # --- parameters and variables -------------------------------------------------------------------------------
    def _bind_parameters(self) -> None:
        declared: dict[str, Any] = self.section("parameters", dict)
        given = self._given
        if not isinstance(given, dict):
            raise TemplateError("The deployment parameters must be a JSON object of {\"name\": {\"value\": ...}}.")
        known = {k.lower() for k in declared}
        extra = [k for k in given if k.lower() not in known]
        if extra:
            raise TemplateError(f"The template parameters '{', '.join(extra)}' in the parameters file are not valid; "
                                "they are not present in the original template and can therefore not be provided "
                                "at deployment time. The only supported parameters for this template are "
                                f"'{', '.join(declared)}'.")
        by_lower = {k.lower(): v for k, v in given.items()}
        for name, spec in declared.items():
            where: Path = ("parameters", name)
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or \
                    spec["type"].lower() not in PARAMETER_TYPES:
                raise TemplateError(f"The template parameter '{name}' must declare a 'type', one of "
                                    f"{', '.join(PARAMETER_TYPES.values())}.", where)
            ptype = spec["type"].lower()
            self._param_types[name.lower()] = PARAMETER_TYPES[ptype]
            entry = by_lower.get(name.lower())
            if entry is not None:
                if not isinstance(entry, dict) or "value" not in entry:
                    if isinstance(entry, dict) and "reference" in entry:
                        raise TemplateError(f"The template parameter '{name}' is a Key Vault reference; Shoal "
                                            "has no Key Vault: give its value.", where)
                    raise TemplateError(f"The template parameter '{name}' must be given as {{\"value\": ...}}.",
                                        where)
                value = entry["value"]
            elif "defaultValue" in spec:
                value = self.evaluate(spec["defaultValue"], (*where, "defaultValue"))
            else:
                raise TemplateError(f"The value for the template parameter '{name}' is not provided. Please see "
                                    "https://aka.ms/arm-deploy/#parameter-file for usage details.", where)
            self._params[name.lower()] = _check_parameter(name, ptype, spec, value, where)

    def parameter(self, name: str) -> Any:
        key = name.lower()
        if key not in self._params:
            if key in {k.lower() for k in self.section("parameters", dict)}:
                raise fx.EvaluationError(f"The template parameter '{name}' is used before its value is known.")
            raise fx.EvaluationError(f"The template parameter '{name}' is not found. Please see "
                                     "https://aka.ms/arm-template/#parameters for usage details.")
        return self._params[key]

    def variable(self, name: str) -> Any:
        key = name.lower()
        if key in self._vars:
            return self._vars[key]
        declared: dict[str, Any] = self.section("variables", dict)
        loops: list[Any] = declared["copy"] if isinstance(declared.get("copy"), list) else []
        loop = next((c for c in loops if isinstance(c, dict) and str(c.get("name", "")).lower() == key), None)
        real = next((k for k in declared if k.lower() == key and k.lower() != "copy"), None)
        if real is None and loop is None:
            raise fx.EvaluationError(f"The template variable '{name}' is not found. Please see "
                                     "https://aka.ms/arm-template/#variables for usage details.")
        if key in self._evaluating:
            raise fx.EvaluationError(f"The template variable '{name}' refers to itself (through "
                                     f"{' -> '.join(self._evaluating)}).")
        self._evaluating.append(key)
        try:
            if loop is not None:
                at = loops.index(loop)
                value: Any = [self.evaluate(loop.get("input"), ("variables", "copy", at, "input"), {key: i})
                              for i in range(self._count(loop, ("variables", "copy", at)))]
            else:
                assert real is not None
                value = self.evaluate(declared[real], ("variables", real))
        finally:
            self._evaluating.pop()
        self._vars[key] = value
        return value

    def _count(self, loop: dict[str, Any], path: Path, copy: dict[str, int] | None = None) -> int:
        count = self.evaluate(loop.get("count"), (*path, "count"), copy)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COPY:
            raise TemplateError(f"The copy count must be an integer from 0 to {MAX_COPY}, got '{count}'.",
                                (*path, "count"))
        return count

    def parameters_body(self) -> dict[str, Any]:
        """The bound parameters as a deployment shows them (secure values left out)."""
        out: dict[str, Any] = {}
        for name in self.section("parameters", dict):
            ptype = self._param_types[name.lower()]
            out[name] = {"type": ptype} if ptype.startswith("Secure") else {"type": ptype,
                                                                            "value": self._params[name.lower()]}
        return out

    # --- resources ----------------------------------------------------------------------------------------------
    def resource_at(self, path: tuple[int, ...]) -> dict[str, Any]:
        node: dict[str, Any] = {"resources": self.section("resources", list)}
        for i in path:
            node = node["resources"][i]
        return node

    def plan(self) -> list[Instance]:
        """Every resource to deploy, dependencies resolved to ids, in an order where each follows what it needs."""
        instances: list[Instance] = []
        for i, res in enumerate(self.section("resources", list)):
            instances.extend(self._expand(res, (i,), None))
        if len(instances) > MAX_RESOURCES:
            raise TemplateError(f"The template has {len(instances)} resources after its copy loops; at most "
                                f"{MAX_RESOURCES} are allowed.", ("resources",))
        seen: dict[str, Instance] = {}
        for inst in instances:
            if inst.condition and inst.id.lower() in seen:
                raise TemplateError(f"The resource '{inst.id}' is defined multiple times in the template.",
                                    self._rpath(inst.path))
            seen[inst.id.lower()] = inst
        self._resolve_dependencies(instances)
        active = [i for i in instances if i.condition]
        return _ordered(active, self._rpath)

    def _rpath(self, path: tuple[int, ...]) -> Path:
        out: list[str | int] = []
        for i in path:
            out += ["resources", i]
        return tuple(out)

    def _expand(self, res: Any, path: tuple[int, ...], parent: Instance | None) -> Iterator[Instance]:
        where = self._rpath(path)
        if not isinstance(res, dict):
            raise TemplateError("A template resource must be a JSON object.", where)
        for key in ("type", "name", "apiVersion"):
            if key not in res:
                raise TemplateError(f"The template resource at {'/'.join(map(str, where))} has no '{key}'.", where)
        loop = res.get("copy")
        if loop is not None and parent is not None:
            raise TemplateError("A nested resource can't have a copy loop: move it to the top level.",
                                (*where, "copy"))
        if loop is not None and (not isinstance(loop, dict) or not isinstance(loop.get("name"), str)):
            raise TemplateError("The copy property of a resource needs a 'name' and a 'count'.", (*where, "copy"))
        loops: list[dict[str, int]] = [{}]
        loop_name = None
        if loop is not None:
            loop_name = loop["name"]
            self._loops.add(loop_name.lower())
            loops = [{"": i, loop_name.lower(): i} for i in range(self._count(loop, (*where, "copy")))]
        for copy in loops:
            inst = self._instance(res, path, copy, parent)
            inst.loop = loop_name
            yield inst
            for j, child in enumerate(res.get("resources") or []):
                for sub in self._expand(child, (*path, j), inst):
                    sub.depends_on.append(inst.id)
                    sub.condition = sub.condition and inst.condition
                    yield sub

    def _instance(self, res: dict[str, Any], path: tuple[int, ...], copy: dict[str, int],
                  parent: Instance | None) -> Instance:
        where = self._rpath(path)
        rtype = self.evaluate(res["type"], (*where, "type"), copy)
        name = self.evaluate(res["name"], (*where, "name"), copy)
        version = self.evaluate(res["apiVersion"], (*where, "apiVersion"), copy)
        for key, value in (("type", rtype), ("name", name), ("apiVersion", version)):
            if not isinstance(value, str) or not value:
                raise TemplateError(f"The resource property '{key}' must be a non-empty string.", (*where, key))
        if parent is not None:
            if "/" not in rtype:
                rtype = f"{parent.type}/{rtype}"
            if not name.lower().startswith(parent.name.lower() + "/"):
                name = f"{parent.name}/{name}"
        condition = self.evaluate(res.get("condition", True), (*where, "condition"), copy)
        if not isinstance(condition, bool):
            raise TemplateError("The resource condition must be a boolean.", (*where, "condition"))
        namespace, *types = rtype.split("/")
        names = name.split("/")
        if not namespace or not types or len(types) != len(names) or not all(names):
            raise TemplateError(f"The template resource '{name}' for type '{rtype}' has an incorrect segment "
                                f"length. A nested resource type must have identical number of segments as its "
                                "resource name. A root resource type must have segment length one greater than "
                                "its resource name.", (*where, "name"))
        rid = (f"/subscriptions/{self.env.subscription_id}/resourceGroups/{self.env.group['name']}/providers/"
               f"{namespace}" + "".join(f"/{t}/{n}" for t, n in zip(types, names, strict=True)))
        return Instance(rid, rtype, name, version, path, dict(copy), None, condition)

    def _resolve_dependencies(self, instances: list[Instance]) -> None:
        by_id = {i.id.lower(): i for i in instances}
        by_name: dict[str, list[Instance]] = {}
        for inst in instances:
            for key in (inst.name.lower(), f"{inst.type}/{inst.name}".lower()):
                by_name.setdefault(key, []).append(inst)
            if inst.loop:
                by_name.setdefault(inst.loop.lower(), []).append(inst)

        def resolve(target: Any, where: Path) -> list[Instance]:
            if not isinstance(target, str):
                raise TemplateError("A dependsOn entry must be a string: a resource name, id or copy loop name.",
                                    where)
            found = by_id.get(target.lower()) if target.startswith("/") else None
            if found is not None:
                return [found]
            matches = by_name.get(target.lower().strip("/"), [])
            if not matches and target.lower() not in self._loops:
                raise TemplateError(f"The resource '{target}' is not defined in the template.", where)
            return matches

        for inst in instances:
            res = self.resource_at(inst.path)
            where = self._rpath(inst.path)
            deps = res.get("dependsOn") or []
            if not isinstance(deps, list):
                raise TemplateError("The resource property 'dependsOn' must be an array.", (*where, "dependsOn"))
            wanted: list[Instance] = [by_id[d.lower()] for d in inst.depends_on]
            for k, dep in enumerate(deps):
                value = self.evaluate(dep, (*where, "dependsOn", k), inst.copy)
                wanted += resolve(value, (*where, "dependsOn", k))
            for target in self._implicit_references(res, inst):
                implicit = by_name.get(target.lower(), []) + ([by_id[target.lower()]] if target.lower() in by_id
                                                              else [])
                wanted += [m for m in implicit if m is not inst]
            ids: list[str] = []
            for dep_inst in wanted:
                if dep_inst is inst:
                    raise TemplateError(f"Circular dependency detected on resource: '{inst.id}'. Please see "
                                        "https://aka.ms/arm-template/#resources for usage details.", where)
                if dep_inst.id not in ids:
                    ids.append(dep_inst.id)
            inst.depends_on = ids

    def _implicit_references(self, res: dict[str, Any], inst: Instance) -> list[str]:
        """Resources named by ``reference('name')`` in a resource's body: deployed first, as in Azure."""
        out: list[str] = []
        for field_name in BODY_FIELDS:
            for text in _strings(res.get(field_name)):
                if not ex.is_expression(text) or "reference" not in text.lower():
                    continue
                for call in ex.calls(ex.parse(text[1:-1])):
                    if call.name.lower() == "reference" and call.args:
                        try:
                            target = fx.evaluate(call.args[0], _Scope(self, inst.copy, _no_reference))
                        except fx.EvaluationError:
                            continue
                        if isinstance(target, str):
                            out.append(target)
        return out

    def body(self, inst: Instance, reference: Reference) -> dict[str, Any]:
        """A resource's ARM body (location, tags, sku, properties...), evaluated now that it may be deployed."""
        res = self.resource_at(inst.path)
        where = self._rpath(inst.path)
        return {k: self.evaluate(res[k], (*where, k), inst.copy, reference) for k in BODY_FIELDS if k in res}

    # --- outputs ------------------------------------------------------------------------------------------------
    def outputs(self, reference: Reference) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in self.section("outputs", dict).items():
            where: Path = ("outputs", name)
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or \
                    spec["type"].lower() not in PARAMETER_TYPES:
                raise TemplateError(f"The template output '{name}' must declare a 'type'.", where)
            otype = PARAMETER_TYPES[spec["type"].lower()]
            if spec.get("condition") is not None and \
                    self.evaluate(spec["condition"], (*where, "condition"), None, reference) is not True:
                continue
            if isinstance(spec.get("copy"), dict):
                loop = spec["copy"]
                value: Any = [self.evaluate(loop.get("input"), (*where, "copy", "input"), {"": i}, reference)
                              for i in range(self._count(loop, (*where, "copy")))]
            elif "value" in spec:
                value = self.evaluate(spec["value"], (*where, "value"), None, reference)
            else:
                raise TemplateError(f"The template output '{name}' has no 'value'.", where)
            out[name] = {"type": otype} if otype.startswith("Secure") else {"type": otype, "value": value}
        return out


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_parameter(name: str, ptype: str, spec: dict[str, Any], value: Any, where: Path) -> Any:
    expected = {"string": str, "securestring": str, "int": int, "bool": bool, "object": dict,
                "secureobject": dict, "array": list}[ptype]
    if ptype == "int" and isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)  # as Azure converts parameter values given as strings
    if ptype == "bool" and isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise TemplateError(f"Template parameter '{name}' was provided an invalid value. Expected a value of type "
                            f"'{PARAMETER_TYPES[ptype]}', but received a value of type '{fx.type_name(value)}'.",
                            where)
    allowed = spec.get("allowedValues")
    if isinstance(allowed, list) and value not in allowed:
        raise TemplateError(f"The provided value '{fx.to_text(value)}' for the template parameter '{name}' is not "
                            f"valid. The parameter value is not part of the allowed value(s): "
                            f"'{','.join(fx.to_text(a) for a in allowed)}'.", where)
    for key, test in (("minValue", lambda v, m: v >= m), ("maxValue", lambda v, m: v <= m)):
        limit = spec.get(key)
        if isinstance(limit, int) and isinstance(value, int) and not test(value, limit):
            raise TemplateError(f"The provided value for the template parameter '{name}' is not valid: it must be "
                                f"{'at least' if key == 'minValue' else 'at most'} {limit}.", where)
    for key, test in (("minLength", lambda v, m: len(v) >= m), ("maxLength", lambda v, m: len(v) <= m)):
        limit = spec.get(key)
        if isinstance(limit, int) and isinstance(value, (str, list)) and not test(value, limit):
            raise TemplateError(f"The provided value for the template parameter '{name}' is not valid: its length "
                                f"must be {'at least' if key == 'minLength' else 'at most'} {limit}.", where)
    return value


def syntax_error(text: str, exc: ex.ExpressionError, path: Path) -> TemplateError:
    return TemplateError(f"The language expression '{text}' is not valid: {exc.message}.", path)


def _ordered(instances: list[Instance], rpath: Callable[[tuple[int, ...]], Path]) -> list[Instance]:
    """Instances in dependency order (Kahn); a cycle is an error naming one resource on it."""
    by_id = {i.id: i for i in instances}
    for inst in instances:  # dependencies on resources whose condition is false are dropped, as in Azure
        inst.depends_on = [d for d in inst.depends_on if d in by_id]
    waiting = {i.id: len(i.depends_on) for i in instances}
    dependents: dict[str, list[str]] = {}
    for inst in instances:
        for dep in inst.depends_on:
            dependents.setdefault(dep, []).append(inst.id)
    ready = [i.id for i in instances if waiting[i.id] == 0]
    out: list[Instance] = []
    while ready:
        rid = ready.pop(0)
        out.append(by_id[rid])
        for nxt in dependents.get(rid, []):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    if len(out) != len(instances):
        stuck = next(i for i in instances if waiting[i.id] > 0)
        raise TemplateError(f"Circular dependency detected on resource: '{stuck.id}'. Please see "
                            "https://aka.ms/arm-template/#resources for usage details.", rpath(stuck.path))
    return out
