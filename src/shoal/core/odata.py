"""The OData subset that Batch list and get operations accept: ``$filter``, ``$select`` and ``$expand``.

``$filter`` grammar (keywords and operators are case-insensitive; property names are matched exactly first,
then case-insensitively, because a filter that silently matches nothing is worse than a lenient one)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [("eq" | "ne" | "gt" | "ge" | "lt" | "le") operand]
    operand    := "(" or_expr ")" | "startswith" "(" operand "," operand ")" | literal | property_path
    literal    := 'string' ('' escapes a quote) | integer | decimal | true | false | null
                | datetime'2024-01-01T00:00:00Z' | 2024-01-01T00:00:00Z
    property_path := name ("/" name)*          e.g. executionInfo/exitCode

``not`` binds more loosely than comparisons (``not state eq 'active'`` negates the comparison, as a reader
expects); for well-typed boolean operands this agrees with the OData precedence.

Evaluation is against a JSON-like dict. A missing property is ``null``; ``eq null`` matches it, relational
operators with ``null`` are false. Strings compare case-sensitively (Batch enum values are lower-case, so
``state eq 'active'`` is the spelling clients use). A timestamp literal compares with a property holding a
``datetime`` or an ISO 8601 string. Values of different types are never equal and never ordered.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shoal.core.timefmt import TimeFormatError, parse_timestamp

_MAX_DEPTH = 64  # nesting of parentheses and "not"; keeps recursion far from Python's limit


class ODataError(ValueError):
    """An invalid ``$filter`` / ``$select`` / ``$expand`` clause; ``position`` is a 0-based offset into it."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


# --- syntax tree -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: Any
    pos: int


@dataclass(frozen=True)
class Property:
    path: tuple[str, ...]
    pos: int


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True)
class Not:
    operand: Node
    pos: int


@dataclass(frozen=True)
class BoolOp:
    """``and`` / ``or`` over any number of operands (flat, so long chains do not nest deeply)."""

    op: str
    operands: tuple[Node, ...]
    pos: int


Node = Literal | Property | Compare | Call | Not | BoolOp


@dataclass(frozen=True)
class Predicate:
    """A parsed ``$filter``: call it with a resource dict to test whether the resource matches."""

    text: str
    root: Node | None  # None: an empty filter, which matches everything

    def __call__(self, obj: Mapping[str, Any]) -> bool:
        return True if self.root is None else _truth(self.root, obj)

    @property
    def properties(self) -> frozenset[str]:
        """The property paths the filter refers to (``executionInfo/exitCode``), e.g. to validate them."""
        found: set[str] = set()
        stack: list[Node] = [self.root] if self.root is not None else []
        while stack:
            node = stack.pop()
            if isinstance(node, Property):
                found.add("/".join(node.path))
            elif isinstance(node, Compare):
                stack += [node.left, node.right]
            elif isinstance(node, Call):
                stack += node.args
            elif isinstance(node, Not):
                stack.append(node.operand)
            elif isinstance(node, BoolOp):
                stack += node.operands
        return frozenset(found)


# --- tokenizer -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "(" ")" "," "string" "number" "datetime" "name" "end"
    text: str
    pos: int
    value: Any = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?",
    re.IGNORECASE)
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_TYPED_LITERALS = ("datetime", "datetimeoffset")
_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
_FUNCTIONS = {"startswith": 2}


def _filter_error(position: int, reason: str) -> ODataError:
    return ODataError(f"Invalid $filter clause at position {position}: {reason}", position)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            tokens.append(_Token(ch, ch, i))
            i += 1
        elif ch == "'":
            value, end = _read_string(text, i)
            tokens.append(_Token("string", text[i:end], i, value))
            i = end
        elif (m := _TIMESTAMP.match(text, i)) and not _continues_word(text, m.end()):
            tokens.append(_Token("datetime", m.group(), i, _timestamp(m.group(), i)))
            i = m.end()
        elif m := _NUMBER.match(text, i):
            if _continues_word(text, m.end()):
                raise _filter_error(i, f"'{_word_at(text, i)}' is not a valid number")
            tokens.append(_Token("number", m.group(), i, _number(m.group(), i)))
            i = m.end()
        elif m := _NAME.match(text, i):
            i = _read_name(text, i, m, tokens)
        else:
            raise _filter_error(i, f"unexpected character '{ch}'")
    tokens.append(_Token("end", "", n))
    return tokens


def _read_name(text: str, start: int, m: re.Match[str], tokens: list[_Token]) -> int:
    """A property path (``a/b/c``), a keyword, or a typed literal such as ``datetime'...'``."""
    end = m.end()
    if end < len(text) and text[end] == "'":
        kind = m.group().lower()
        if kind not in _TYPED_LITERALS:
            raise _filter_error(start, f"unsupported literal type '{m.group()}'; use datetime'...' or a plain "
                                       "'string'")
        raw, after = _read_string(text, end)
        tokens.append(_Token("datetime", text[start:after], start, _timestamp(raw, end + 1)))
        return after
    while end < len(text) and text[end] == "/":
        nxt = _NAME.match(text, end + 1)
        if not nxt:
            raise _filter_error(end + 1, "expected a property name after '/'")
        end = nxt.end()
    tokens.append(_Token("name", text[start:end], start))
    return end


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The value of the quoted string at ``start`` and the offset after its closing quote."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise _filter_error(start, "unterminated string literal (close it with ' and write '' for a quote inside)")


def _continues_word(text: str, end: int) -> bool:
    return end < len(text) and (text[end].isalnum() or text[end] in "_.:")


def _word_at(text: str, start: int) -> str:
    m = re.compile(r"[^\s(),']+").match(text, start)
    return m.group() if m else text[start:start + 1]


def _timestamp(raw: str, pos: int) -> datetime:
    try:
        return parse_timestamp(raw)
    except TimeFormatError:
        raise _filter_error(pos, f"'{raw}' is not a valid timestamp (for example 2024-01-01T00:00:00Z)") from None


def _number(raw: str, pos: int) -> int | float:
    try:
        return float(raw) if "." in raw else int(raw)
    except ValueError:  # more digits than int() accepts
        raise _filter_error(pos, "the number is too large") from None


# --- parser ----------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def keyword(self, *words: str) -> str | None:
        """The current token if it is one of ``words`` (case-insensitive), consumed."""
        tok = self.tok
        if tok.kind == "name" and tok.text.lower() in words:
            self.i += 1
            return tok.text.lower()
        return None

    def expect(self, kind: str, what: str) -> _Token:
        tok = self.tok
        if tok.kind != kind:
            raise _filter_error(tok.pos, f"expected {what}")
        self.i += 1
        return tok

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _filter_error(pos, f"the clause nests more than {_MAX_DEPTH} levels deep")

    def parse(self) -> Node | None:
        if self.tok.kind == "end":
            return None
        node = self.boolean(self.or_expr())
        if self.tok.kind != "end":
            raise _filter_error(self.tok.pos, "expected 'and', 'or' or the end of the clause")
        return node

    def or_expr(self) -> Node:
        return self.chain("or", self.and_expr)

    def and_expr(self) -> Node:
        return self.chain("and", self.not_expr)

    def chain(self, op: str, operand: Callable[[], Node]) -> Node:
        first = operand()
        operands = [first]
        while self.keyword(op):
            operands.append(operand())
        if len(operands) == 1:
            return first
        return BoolOp(op, tuple(self.boolean(o) for o in operands), first.pos)

    def not_expr(self) -> Node:
        pos = self.tok.pos
        if self.keyword("not"):
            self.nest(pos)
            operand = self.boolean(self.not_expr())
            self.depth -= 1
            return Not(operand, pos)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        op = self.keyword(*_COMPARISONS)
        if op is None:
            return left
        return Compare(op, left, self.operand(), left.pos)

    def operand(self) -> Node:
        tok = self.tok
        if tok.kind == "(":
            self.i += 1
            self.nest(tok.pos)
            inner = self.or_expr()
            self.expect(")", "')' to close the '(' at position " + str(tok.pos))
            self.depth -= 1
            return inner
        if tok.kind in ("string", "number", "datetime"):
            self.i += 1
            return Literal(tok.value, tok.pos)
        if tok.kind != "name":
            raise _filter_error(tok.pos, "expected a value")
        word = tok.text.lower()
        if word in ("true", "false", "null"):
            self.i += 1
            return Literal({"true": True, "false": False, "null": None}[word], tok.pos)
        if word in ("and", "or", "not", *_COMPARISONS):
            raise _filter_error(tok.pos, f"expected a value before '{tok.text}'")
        if self.tokens[self.i + 1].kind == "(":
            return self.call()
        self.i += 1
        return Property(tuple(tok.text.split("/")), tok.pos)

    def call(self) -> Node:
        name_tok = self.tok
        name = name_tok.text.lower()
        if name not in _FUNCTIONS:
            raise _filter_error(name_tok.pos, f"unsupported function '{name_tok.text}'; only startswith(property,"
                                              "'prefix') is supported")
        self.i += 2  # name and "("
        self.nest(name_tok.pos)
        args = [self.operand()]
        while self.tok.kind == ",":
            self.i += 1
            args.append(self.operand())
        self.expect(")", f"')' to close {name}(")
        self.depth -= 1
        if len(args) != _FUNCTIONS[name]:
            raise _filter_error(name_tok.pos, f"{name} takes {_FUNCTIONS[name]} arguments, not {len(args)}")
        return Call(name, tuple(args), name_tok.pos)

    @staticmethod
    def boolean(node: Node) -> Node:
        """Reject operands that can never be true or false, such as ``'abc'`` or ``42`` alone."""
        if isinstance(node, Literal) and not isinstance(node.value, bool):
            raise _filter_error(node.pos, "expected a condition (for example state eq 'active'), not a value")
        return node


def parse_filter(text: str) -> Predicate:
    """Parse a ``$filter`` clause; a blank clause matches everything. Raises :class:`ODataError`."""
    return Predicate(text, _Parser(text).parse())


# --- evaluation ------------------------------------------------------------------------------------------------


def _truth(node: Node, obj: Mapping[str, Any]) -> bool:
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_truth(o, obj) for o in node.operands)
        return any(_truth(o, obj) for o in node.operands)
    if isinstance(node, Not):
        return not _truth(node.operand, obj)
    return _value(node, obj) is True


def _value(node: Node, obj: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Property):
        return _resolve(obj, node.path)
    if isinstance(node, Compare):
        return _compare(node.op, _value(node.left, obj), _value(node.right, obj))
    if isinstance(node, Call):  # startswith, the only function
        subject, prefix = (_value(a, obj) for a in node.args)
        return isinstance(subject, str) and isinstance(prefix, str) and subject.startswith(prefix)
    return _truth(node, obj)


def _resolve(obj: Any, path: Sequence[str]) -> Any:
    for name in path:
        if not isinstance(obj, Mapping):
            return None
        if name in obj:
            obj = obj[name]
            continue
        folded = name.lower()
        obj = next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == folded), None)
    return obj


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le,
}


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        if op in ("eq", "ne"):
            return (left is right) == (op == "eq")
        return False
    pair = _comparable(left, right)
    if pair is None:
        return op == "ne"
    try:
        return bool(_OPERATORS[op](*pair))
    except TypeError:  # e.g. an unusual value type inside the resource dict
        return False


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Both values in one comparable type, or None when OData would call the comparison ill-typed."""
    if isinstance(left, bool) or isinstance(right, bool):
        return (left, right) if isinstance(left, bool) and isinstance(right, bool) else None
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left, right
    if isinstance(left, datetime) or isinstance(right, datetime):
        a, b = _as_datetime(left), _as_datetime(right)
        return (a, b) if a is not None and b is not None else None
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    return None


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except TimeFormatError:
            return None
    return None


# --- $select and $expand ---------------------------------------------------------------------------------------

_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")


def _name_list(text: str, option: str, *, allow_star: bool) -> list[str]:
    names: list[str] = []
    start = 0
    for item in text.split(","):
        stripped = item.strip()
        pos = start + (len(item) - len(item.lstrip()))
        start += len(item) + 1
        if not stripped:
            if text.strip():
                raise ODataError(f"Invalid {option} clause at position {pos}: expected a property name", pos)
            continue
        if not (_PATH.fullmatch(stripped) or (allow_star and stripped == "*")):
            raise ODataError(f"Invalid {option} clause at position {pos}: '{stripped}' is not a property name "
                             "(use comma-separated names such as id,state)", pos)
        if stripped not in names:
            names.append(stripped)
    return names


def parse_select(text: str) -> list[str]:
    """``id, state,stats`` -> ``["id", "state", "stats"]``; blank -> ``[]`` (no selection); ``*`` allowed."""
    return _name_list(text, "$select", allow_star=True)


def apply_select(obj: Mapping[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """Keep only the selected top-level properties; nested objects are kept whole.

    A path such as ``executionInfo/exitCode`` selects its top-level property. No fields or ``*`` keeps
    everything. ``odata.*`` annotations are always kept, as the service does.
    """
    if not fields or "*" in fields:
        return dict(obj)
    wanted = {f.split("/", 1)[0].lower() for f in fields}
    return {k: v for k, v in obj.items() if k.lower() in wanted or k.startswith("odata.")}


def parse_expand(text: str, allowed: Collection[str] | None = None) -> list[str]:
    """``stats`` -> ``["stats"]``. With ``allowed``, unknown names are rejected and the allowed spelling returned."""
    names = _name_list(text, "$expand", allow_star=False)
    if allowed is None:
        return names
    canonical = {a.lower(): a for a in allowed}
    out: list[str] = []
    for name in names:
        if name.lower() not in canonical:
            pos = text.find(name)
            expected = ", ".join(sorted(allowed)) or "nothing"
            raise ODataError(f"Invalid $expand clause at position {pos}: '{name}' cannot be expanded here; "
                             f"expected one of: {expected}", pos)
        if canonical[name.lower()] not in out:
            out.append(canonical[name.lower()])
    return out
