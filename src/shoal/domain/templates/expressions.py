"""The ARM template expression language: tokens, a recursive-descent parser to a small syntax tree, and the
inverse (``render``), which the property tests use for round trips.

A JSON string of a template is an expression when it starts with ``[`` and ends with ``]``; ``[[`` at the start
escapes a literal ``[``. Inside the brackets::

    expr    := primary postfix*
    primary := STRING | INTEGER | NAME "(" [expr ("," expr)*] ")"
    postfix := "." NAME | "[" expr "]"

Strings are single-quoted with ``''`` for a quote; integers may be negative; names are function names
(``true``/``false``/``null`` are functions too, as in Azure). Every node keeps its 0-based offset into the
expression text (the text between the brackets) so errors name the position, as Azure's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_DEPTH = 64  # nesting of calls and indexes (keeps every recursion shallow)
MAX_LENGTH = 24_576  # Azure: "the expression is limited to 24,576 characters"


class ExpressionError(Exception):
    """An expression that does not parse. ``position`` is a 0-based offset into the expression text."""

    def __init__(self, message: str, position: int, text: str) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        return self.message


# --- syntax tree ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Literal:
    value: str | int
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Member:
    """``target.name``."""

    target: Expr
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Index:
    """``target[index]``."""

    target: Expr
    index: Expr
    pos: int = field(default=0, compare=False)


Expr = Literal | Call | Member | Index


def is_expression(value: str) -> bool:
    return len(value) >= 2 and value.startswith("[") and value.endswith("]") and not value.startswith("[[")


def unescape(value: str) -> str:
    """A JSON string that is not an expression, as its literal value (``[[x]`` is ``[x]``)."""
    return value[1:] if value.startswith("[[") else value


# --- tokens ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name" | "string" | "int" | "op" | "end"
    text: str
    pos: int
    value: str | int = ""

    def describe(self) -> str:
        return "the end of the expression" if self.kind == "end" else f"'{self.text}'"


_OPS = "().,[]"
_DIGITS = "0123456789"


def _is_name_start(c: str) -> bool:
    return c.isascii() and (c.isalpha() or c == "_")


def _is_name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c in _OPS:
            tokens.append(_Token("op", c, i))
            i += 1
        elif c == "'":
            start, i, chars = i, i + 1, []
            while True:
                if i >= n:
                    raise ExpressionError(f"the string starting at position '{start}' is not closed", start, text)
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        chars.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            tokens.append(_Token("string", text[start:i], start, "".join(chars)))
        elif c in _DIGITS or (c == "-" and i + 1 < n and text[i + 1] in _DIGITS):
            start = i
            i += 1
            while i < n and text[i] in _DIGITS:
                i += 1
            if i < n and (text[i] == "." and i + 1 < n and text[i + 1] in _DIGITS):
                raise ExpressionError(f"the number at position '{start}' is not an integer: template expressions "
                                      "have integers only", start, text)
            tokens.append(_Token("int", text[start:i], start, int(text[start:i])))
        elif _is_name_start(c):
            start = i
            while i < n and _is_name_char(text[i]):
                i += 1
            tokens.append(_Token("name", text[start:i], start))
        else:
            raise ExpressionError(f"the character '{c}' at position '{i}' is not expected", i, text)
    tokens.append(_Token("end", "", n))
    return tokens


# --- parser ---------------------------------------------------------------------------------------------------
def parse(text: str) -> Expr:
    """Parse the text between the brackets of an expression."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters", MAX_LENGTH, text)
    parser = _Parser(text)
    if parser.tok.kind == "end":
        raise ExpressionError("the expression is empty", 0, text)
    expr = parser.expr()
    if parser.tok.kind != "end":
        raise parser.fail(f"expected the end of the expression, found {parser.tok.describe()}")
    return expr


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        t = self.tokens[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def is_op(self, op: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == op

    def fail(self, detail: str) -> ExpressionError:
        return ExpressionError(f"{detail} at position '{self.tok.pos}'", self.tok.pos, self.text)

    def expect(self, op: str, context: str) -> None:
        if not self.is_op(op):
            raise self.fail(f"expected '{op}' {context}, found {self.tok.describe()}")
        self.advance()

    def expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"the expression is nested more than {MAX_DEPTH} levels deep")
        node = self.primary()
        while True:
            if self.is_op("."):
                at = self.advance().pos
                if self.tok.kind != "name":
                    raise self.fail(f"expected a property name after '.', found {self.tok.describe()}")
                node = Member(node, self.advance().text, at)
            elif self.is_op("["):
                at = self.advance().pos
                index = self.expr()
                self.expect("]", "to close the index")
                node = Index(node, index, at)
            else:
                break
        self.depth -= 1
        return node

    def primary(self) -> Expr:
        t = self.tok
        if t.kind == "string" or t.kind == "int":
            self.advance()
            return Literal(t.value, t.pos)
        if t.kind == "name":
            self.advance()
            if not self.is_op("("):
                raise self.fail(f"expected '(' after the function name '{t.text}', found {self.tok.describe()}")
            self.advance()
            args: list[Expr] = []
            if not self.is_op(")"):
                args.append(self.expr())
                while self.is_op(","):
                    self.advance()
                    args.append(self.expr())
            self.expect(")", f"to close the arguments of '{t.text}'")
            return Call(t.text, tuple(args), t.pos)
        raise self.fail(f"expected a function, a string or an integer, found {t.describe()}")


# --- the inverse ----------------------------------------------------------------------------------------------
def render(expr: Expr) -> str:
    """The expression text of a tree (``parse(render(e)) == e``)."""
    if isinstance(expr, Literal):
        if isinstance(expr.value, int):
            return str(expr.value)
        return "'" + expr.value.replace("'", "''") + "'"
    if isinstance(expr, Call):
        return f"{expr.name}({', '.join(render(a) for a in expr.args)})"
    if isinstance(expr, Member):
        return f"{render(expr.target)}.{expr.name}"
    return f"{render(expr.target)}[{render(expr.index)}]"


def calls(expr: Expr) -> list[Call]:
    """Every function call in a tree, outermost first."""
    out: list[Call] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            out.append(node)
            stack.extend(reversed(node.args))
        elif isinstance(node, Member):
            stack.append(node.target)
        elif isinstance(node, Index):
            stack.extend((node.index, node.target))
    return out
