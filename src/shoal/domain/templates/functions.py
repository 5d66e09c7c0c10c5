"""The evaluator of template expressions and the functions it knows (Azure's names, case-insensitive).

Values are JSON values (str, int, bool, None, list, dict). What a function needs from the deployment
(parameters, variables, the copy index, the resource group, ``reference()``) comes from a :class:`Scope`,
so the functions stay pure and the engine decides what each phase may see. Every failure is an
:class:`EvaluationError` naming the function and the position of its call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from shoal.domain.templates import expressions as ex

MAX_STRING = 131_072  # keeps concat/padLeft/format of hostile templates bounded


class EvaluationError(Exception):
    """An expression that parses but cannot be evaluated (unknown function, wrong arguments, missing name)."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return self.message


class Scope(Protocol):
    def parameter(self, name: str) -> Any: ...

    def variable(self, name: str) -> Any: ...

    def copy_index(self, loop: str | None) -> int: ...

    def reference(self, target: str, api_version: str | None, full: bool) -> Any: ...

    def resource_group(self) -> dict[str, Any]: ...

    def subscription(self) -> dict[str, Any]: ...

    def deployment(self) -> dict[str, Any]: ...


Function = Callable[[list[Any], Scope], Any]


def evaluate_string(text: str, scope: Scope) -> Any:
    """A template JSON string: an expression's value, or the literal string."""
    if not ex.is_expression(text):
        return ex.unescape(text)
    return evaluate(ex.parse(text[1:-1]), scope)


def evaluate(expr: ex.Expr, scope: Scope) -> Any:
    if isinstance(expr, ex.Literal):
        return expr.value
    if isinstance(expr, ex.Member):
        target = evaluate(expr.target, scope)
        if not isinstance(target, dict):
            raise EvaluationError(f"The language expression property '{expr.name}' can't be evaluated: the value "
                                  f"is of type '{type_name(target)}', not 'Object'.", expr.pos)
        found = _lookup(target, expr.name)
        if found is _MISSING:
            raise EvaluationError(f"The language expression property '{expr.name}' doesn't exist, available "
                                  f"properties are '{', '.join(target)}'.", expr.pos)
        return found
    if isinstance(expr, ex.Index):
        target = evaluate(expr.target, scope)
        index = evaluate(expr.index, scope)
        if isinstance(target, list) and isinstance(index, int) and not isinstance(index, bool):
            if not 0 <= index < len(target):
                raise EvaluationError(f"The language expression index '{index}' is out of bounds (the array has "
                                      f"{len(target)} elements).", expr.pos)
            return target[index]
        if isinstance(target, dict) and isinstance(index, str):
            found = _lookup(target, index)
            if found is _MISSING:
                raise EvaluationError(f"The language expression property '{index}' doesn't exist, available "
                                      f"properties are '{', '.join(target)}'.", expr.pos)
            return found
        raise EvaluationError(f"The language expression can't index a value of type '{type_name(target)}' with "
                              f"a value of type '{type_name(index)}'.", expr.pos)
    name = expr.name.lower()
    if name == "if":  # only the chosen branch is evaluated
        if len(expr.args) != 3:
            raise EvaluationError(f"The template language function 'if' expects three arguments, got "
                                  f"{len(expr.args)}.", expr.pos)
        cond = evaluate(expr.args[0], scope)
        if not isinstance(cond, bool):
            raise EvaluationError("The template language function 'if' expects its first argument to be a "
                                  f"boolean, got '{type_name(cond)}'.", expr.pos)
        return evaluate(expr.args[1] if cond else expr.args[2], scope)
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise unknown_function(expr)
    args = [evaluate(a, scope) for a in expr.args]
    try:
        return fn(args, scope)
    except EvaluationError as exc:
        if exc.position == 0:
            exc.position = expr.pos
        raise
    except _Bad as exc:
        raise EvaluationError(f"Unable to evaluate the template language function '{expr.name}': {exc}",
                              expr.pos) from None


def unknown_function(call: ex.Call) -> EvaluationError:
    return EvaluationError(f"The template function '{call.name}' is not found. Please see "
                           "https://aka.ms/arm-template-expressions for usage details.", call.pos)


_MISSING = object()


def _lookup(obj: dict[str, Any], name: str) -> Any:
    """Property names are case-insensitive in ARM."""
    if name in obj:
        return obj[name]
    lower = name.lower()
    return next((v for k, v in obj.items() if k.lower() == lower), _MISSING)


def type_name(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "Object"
    return type(value).__name__


class _Bad(Exception):
    """A function's arguments are wrong; the evaluator adds the function's name and position."""


def _count(args: list[Any], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(args) <= high:
        want = str(low) if low == high else (f"at least {low}" if high >= 1 << 30 else f"{low} to {high}")
        raise _Bad(f"it expects {want} argument(s), got {len(args)}.")


def _str(value: Any, what: str = "argument") -> str:
    if not isinstance(value, str):
        raise _Bad(f"the {what} must be a string, got '{type_name(value)}'.")
    return value


def _int(value: Any, what: str = "argument") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"the {what} must be an integer, got '{type_name(value)}'.")
    return value


def _bounded(text: str) -> str:
    if len(text) > MAX_STRING:
        raise _Bad(f"the result is longer than {MAX_STRING} characters.")
    return text


def to_text(value: Any) -> str:
    """``string()``: booleans as ``True``/``False``, objects and arrays as compact JSON (as Azure does)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


# --- functions ------------------------------------------------------------------------------------------------
def _parameters(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    return scope.parameter(_str(args[0], "parameter name"))


def _variables(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    return scope.variable(_str(args[0], "variable name"))


def _concat(args: list[Any], scope: Scope) -> Any:
    _count(args, 1, 1 << 30)
    if all(isinstance(a, list) for a in args):
        return [x for a in args for x in a]
    if any(isinstance(a, (list, dict)) for a in args):
        raise _Bad("the arguments must all be arrays, or all be strings, integers or booleans.")
    return _bounded("".join(to_text(a) for a in args))


_FORMAT_ITEM = re.compile(r"\{\{|\}\}|\{(\d+)(?::([^}]*))?\}|[{}]")


def _format(args: list[Any], scope: Scope) -> Any:
    _count(args, 1, 1 << 30)
    text, values = _str(args[0], "format string"), args[1:]

    def item(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole in ("{{", "}}"):
            return whole[0]
        if m.group(1) is None:
            raise _Bad(f"the format string has an unmatched '{whole}'.")
        i = int(m.group(1))
        if i >= len(values):
            raise _Bad(f"the format string names argument {i} but only {len(values)} were given.")
        value, spec = values[i], m.group(2)
        if spec:
            kind, digits = spec[:1].upper(), spec[1:]
            if kind == "D" and digits.isdigit() and isinstance(value, int):
                return str(value).zfill(int(digits))
            if kind == "X" and isinstance(value, int):
                return format(value, "x" if spec[0] == "x" else "X").zfill(int(digits or 0))
            raise _Bad(f"the format specifier '{spec}' is not supported.")
        return to_text(value)

    return _bounded(_FORMAT_ITEM.sub(item, text))


def _resource_id(args: list[Any], scope: Scope) -> Any:
    _count(args, 2, 1 << 30)
    parts = [_str(a, "resourceId argument") for a in args]
    sub = scope.subscription()["subscriptionId"]
    group = scope.resource_group()["name"]
    at = next(i for i, p in enumerate(parts) if "/" in p) if any("/" in p for p in parts) else None
    if at is None:
        raise _Bad("the resource type must be given as 'Namespace/type'.")
    if at == 1:
        group = parts[0]
    elif at == 2:
        sub, group = parts[0], parts[1]
    elif at != 0:
        raise _Bad("the resource type must come first, after an optional subscription id and resource group.")
    rtype, names = parts[at], parts[at + 1:]
    namespace, *types = rtype.split("/")
    if len(types) != len(names) or not names:
        raise _Bad(f"the type '{rtype}' has {len(types)} segment(s) but {len(names)} name(s) were given.")
    path = "".join(f"/{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"/subscriptions/{sub}/resourceGroups/{group}/providers/{namespace}{path}"


def _subscription_resource_id(args: list[Any], scope: Scope) -> Any:
    _count(args, 2, 1 << 30)
    parts = [_str(a, "subscriptionResourceId argument") for a in args]
    sub = scope.subscription()["subscriptionId"]
    if "/" not in parts[0]:
        sub, parts = parts[0], parts[1:]
    namespace, *types = parts[0].split("/")
    names = parts[1:]
    if len(types) != len(names) or not names:
        raise _Bad(f"the type '{parts[0]}' has {len(types)} segment(s) but {len(names)} name(s) were given.")
    return f"/subscriptions/{sub}/providers/{namespace}" + "".join(
        f"/{t}/{n}" for t, n in zip(types, names, strict=True))


def _reference(args: list[Any], scope: Scope) -> Any:
    _count(args, 1, 3)
    target = _str(args[0], "resource name or id")
    version = _str(args[1], "api-version") if len(args) > 1 else None
    full = len(args) > 2 and _str(args[2], "third argument").lower() == "full"
    return scope.reference(target, version, full)


def unique_string(*parts: str) -> str:
    """13 lower-case base32 characters, deterministic in the inputs (Azure's length and alphabet)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


def _unique_string(args: list[Any], scope: Scope) -> Any:
    _count(args, 1, 1 << 30)
    return unique_string(*[_str(a) for a in args])


_GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")


def _guid(args: list[Any], scope: Scope) -> Any:
    _count(args, 1, 1 << 30)
    return str(uuid.uuid5(_GUID_NAMESPACE, "-".join(_str(a) for a in args)))


def _equals(args: list[Any], scope: Scope) -> Any:
    _count(args, 2)
    a, b = args
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _empty(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    value = args[0]
    if value is None:
        return True
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    raise _Bad(f"the argument must be a string, an array or an object, got '{type_name(value)}'.")


def _length(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    if isinstance(args[0], (str, list, dict)):
        return len(args[0])
    raise _Bad(f"the argument must be a string, an array or an object, got '{type_name(args[0])}'.")


def _create_object(args: list[Any], scope: Scope) -> Any:
    if len(args) % 2:
        raise _Bad("it expects pairs of property names and values.")
    return {_str(args[i], "property name"): args[i + 1] for i in range(0, len(args), 2)}


def _union(args: list[Any], scope: Scope) -> Any:
    _count(args, 1, 1 << 30)
    if all(isinstance(a, dict) for a in args):
        out: dict[str, Any] = {}
        for a in args:
            out.update(a)
        return out
    if all(isinstance(a, list) for a in args):
        items: list[Any] = []
        for a in args:
            for x in a:
                if x not in items:
                    items.append(x)
        return items
    raise _Bad("the arguments must all be objects or all be arrays.")


def _copy_index(args: list[Any], scope: Scope) -> Any:
    _count(args, 0, 2)
    loop: str | None = None
    offset = 0
    for a in args:
        if isinstance(a, str):
            loop = a
        else:
            offset = _int(a, "offset")
    return scope.copy_index(loop) + offset


def _to_int(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    value = args[0]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise _Bad(f"the value '{to_text(value)}' can't be converted to an integer.")


def _to_bool(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    value = args[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _Bad(f"the value '{to_text(value)}' can't be converted to a boolean.")


def _json(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    try:
        return json.loads(_str(args[0]))
    except ValueError as exc:
        raise _Bad(f"the string is not valid JSON: {exc}.") from None


def _logic(op: str) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 1 if op == "not" else 2, 1 if op == "not" else 1 << 30)
        if not all(isinstance(a, bool) for a in args):
            raise _Bad("the arguments must be booleans.")
        return not args[0] if op == "not" else (all(args) if op == "and" else any(args))

    return fn


def _compare(op: Callable[[Any, Any], bool]) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 2)
        a, b = args
        if not ((isinstance(a, int) and isinstance(b, int)) or (isinstance(a, str) and isinstance(b, str))):
            raise _Bad("the arguments must both be integers or both be strings.")
        return op(a, b)

    return fn


def _arith(op: str) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 2)
        a, b = _int(args[0]), _int(args[1])
        if op in "/%" and b == 0:
            raise _Bad("division by zero.")
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)  # .NET truncates towards zero
        return q if op == "/" else a - q * b

    return fn


def _contains(args: list[Any], scope: Scope) -> Any:
    _count(args, 2)
    container, item = args
    if isinstance(container, str):
        return to_text(item) in container
    if isinstance(container, list):
        return item in container
    if isinstance(container, dict):
        return _lookup(container, _str(item, "property name")) is not _MISSING
    raise _Bad(f"the first argument must be a string, an array or an object, got '{type_name(container)}'.")


def _first_last(last: bool) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 1)
        value = args[0]
        if not isinstance(value, (str, list)):
            raise _Bad("the argument must be a string or an array.")
        if not value:
            return "" if isinstance(value, str) else None
        return value[-1] if last else value[0]

    return fn


def _take_skip(take: bool) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 2)
        value, n = args[0], max(0, _int(args[1], "count"))
        if not isinstance(value, (str, list)):
            raise _Bad("the first argument must be a string or an array.")
        return value[:n] if take else value[n:]

    return fn


def _substring(args: list[Any], scope: Scope) -> Any:
    _count(args, 2, 3)
    text, start = _str(args[0]), _int(args[1], "start index")
    length = _int(args[2], "length") if len(args) > 2 else len(text) - start
    if start < 0 or length < 0 or start + length > len(text):
        raise _Bad("the start index and length must lie within the string.")
    return text[start:start + length]


def _range(args: list[Any], scope: Scope) -> Any:
    _count(args, 2)
    start, count = _int(args[0], "start"), _int(args[1], "count")
    if not 0 <= count <= 10_000:
        raise _Bad("the count must be between 0 and 10000.")
    return list(range(start, start + count))


def _pad_left(args: list[Any], scope: Scope) -> Any:
    _count(args, 2, 3)
    text, width = to_text(args[0]), _int(args[1], "total length")
    pad = _str(args[2], "padding character") if len(args) > 2 else " "
    if len(pad) != 1 or width > MAX_STRING:
        raise _Bad("the padding must be one character and the length at most 131072.")
    return text.rjust(width, pad)


def _min_max(pick: Callable[..., Any]) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 1, 1 << 30)
        values = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        if not values:
            raise _Bad("it needs at least one value.")
        return pick(_int(v) for v in values)

    return fn


def _coalesce(args: list[Any], scope: Scope) -> Any:
    _count(args, 1, 1 << 30)
    return next((a for a in args if a is not None), None)


def _text1(fn: Callable[[str], Any]) -> Function:
    def call(args: list[Any], scope: Scope) -> Any:
        _count(args, 1)
        return fn(_str(args[0]))

    return call


def _text2(fn: Callable[[str, str], Any]) -> Function:
    def call(args: list[Any], scope: Scope) -> Any:
        _count(args, 2)
        return fn(_str(args[0]), _str(args[1]))

    return call


def _replace(args: list[Any], scope: Scope) -> Any:
    _count(args, 3)
    return _bounded(_str(args[0]).replace(_str(args[1]), _str(args[2])))


def _split(args: list[Any], scope: Scope) -> Any:
    _count(args, 2)
    text, delimiters = _str(args[0]), args[1]
    seps = [delimiters] if isinstance(delimiters, str) else [_str(d, "delimiter") for d in delimiters or []]
    if not seps or any(not s for s in seps):
        raise _Bad("the delimiters must be non-empty strings.")
    return re.split("|".join(re.escape(s) for s in seps), text)


def _constant(value: Any) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 0)
        return value

    return fn


def _scoped(getter: Callable[[Scope], Any]) -> Function:
    def fn(args: list[Any], scope: Scope) -> Any:
        _count(args, 0)
        return getter(scope)

    return fn


def _create_array(args: list[Any], scope: Scope) -> Any:
    return list(args)


def _to_string(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    return to_text(args[0])


def _array(args: list[Any], scope: Scope) -> Any:
    _count(args, 1)
    return args[0] if isinstance(args[0], list) else [args[0]]


# Every function by its lower-cased name. ``if`` is evaluated lazily by ``evaluate`` itself.
FUNCTIONS: dict[str, Function] = {
    "parameters": _parameters, "variables": _variables, "concat": _concat, "format": _format,
    "resourceid": _resource_id, "subscriptionresourceid": _subscription_resource_id,
    "resourcegroup": _scoped(lambda s: s.resource_group()), "subscription": _scoped(lambda s: s.subscription()),
    "deployment": _scoped(lambda s: s.deployment()), "reference": _reference, "uniquestring": _unique_string,
    "guid": _guid, "equals": _equals, "empty": _empty, "length": _length, "createarray": _create_array,
    "createobject": _create_object, "union": _union, "copyindex": _copy_index,
    "tolower": _text1(str.lower), "toupper": _text1(str.upper), "trim": _text1(str.strip),
    "string": _to_string, "int": _to_int, "bool": _to_bool, "json": _json, "array": _array,
    "not": _logic("not"), "and": _logic("and"), "or": _logic("or"),
    "true": _constant(True), "false": _constant(False), "null": _constant(None),
    "greater": _compare(lambda a, b: a > b), "greaterorequals": _compare(lambda a, b: a >= b),
    "less": _compare(lambda a, b: a < b), "lessorequals": _compare(lambda a, b: a <= b),
    "add": _arith("+"), "sub": _arith("-"), "mul": _arith("*"), "div": _arith("/"), "mod": _arith("%"),
    "contains": _contains, "first": _first_last(False), "last": _first_last(True), "take": _take_skip(True),
    "skip": _take_skip(False), "substring": _substring, "range": _range, "padleft": _pad_left,
    "min": _min_max(min), "max": _min_max(max), "coalesce": _coalesce, "replace": _replace, "split": _split,
    "startswith": _text2(lambda a, b: a.lower().startswith(b.lower())),
    "endswith": _text2(lambda a, b: a.lower().endswith(b.lower())),
    "indexof": _text2(lambda a, b: a.lower().find(b.lower())),
    "lastindexof": _text2(lambda a, b: a.lower().rfind(b.lower())),
    "base64": _text1(lambda t: base64.b64encode(t.encode()).decode()),
    "base64tostring": _text1(lambda t: base64.b64decode(t.encode(), validate=False).decode("utf-8", "replace")),
}
KNOWN = frozenset(FUNCTIONS) | {"if"}
