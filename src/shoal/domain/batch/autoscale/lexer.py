"""Tokens of an autoscale formula: numbers, double-quoted strings, names (``$`` optional), operators.

Whitespace (line breaks included) and comments (``// to the end of the line`` and ``/* ... */``) separate tokens.
Each token remembers whether a line break came before it, so a statement may end at the end of a line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from shoal.domain.batch.autoscale.errors import SYNTAX_ERROR, FormulaError, located

MAX_LENGTH = 8192  # Azure: "The formula string cannot exceed 8 KB"


class Kind(Enum):
    NUMBER = "number"
    STRING = "string"
    NAME = "name"
    OP = "operator"
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str  # as written (for NAME and OP, the name or operator itself)
    pos: int  # 0-based offset of the first character
    end: int  # offset just past the last character
    newline_before: bool
    number: float = 0.0
    string: str = ""

    def describe(self) -> str:
        if self.kind is Kind.END:
            return "the end of the formula"
        if self.kind is Kind.STRING:
            return f"string {self.text}"
        if self.kind is Kind.NUMBER:
            return f"number {self.text}"
        if self.kind is Kind.NAME:
            return f"name '{self.text}'"
        return f"'{self.text}'"


# Longest first: "<=" before "<".
OPERATORS = ("&&", "||", "==", "!=", "<=", ">=", "<", ">", "=", "!", "+", "-", "*", "/", "?", ":", "(", ")",
             ",", ";", ".")
_WHITESPACE = " \t\r\n\f\v"
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_REST = _NAME_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")


def _char(c: str) -> str:
    return repr(c) if c.isprintable() else f"U+{ord(c):04X}"


def tokenize(text: str) -> list[Token]:
    """Every token of ``text``, ending with one END token; raises a positioned :class:`FormulaError`."""
    if len(text) > MAX_LENGTH:
        raise FormulaError(SYNTAX_ERROR, f"The formula is {len(text)} characters long; the limit is {MAX_LENGTH}.")
    tokens: list[Token] = []
    i, n, newline = 0, len(text), False

    def fail(at: int, detail: str) -> FormulaError:
        return located(SYNTAX_ERROR, text, at, detail)

    while True:
        while i < n:  # whitespace and comments
            c = text[i]
            if c in _WHITESPACE:
                newline = newline or c == "\n"
                i += 1
            elif text.startswith("//", i):
                j = text.find("\n", i)
                i = n if j < 0 else j
            elif text.startswith("/*", i):
                j = text.find("*/", i + 2)
                if j < 0:
                    raise fail(i, "unterminated comment: '/*' without '*/'")
                newline = newline or "\n" in text[i:j]
                i = j + 2
            else:
                break
        if i >= n:
            tokens.append(Token(Kind.END, "", n, n, newline))
            return tokens
        start, c = i, text[i]
        if c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            i = _scan_number(text, i)
            if i < n and (text[i] in _NAME_REST or text[i] == "."):
                raise fail(start, f"malformed number '{text[start:i + 1]}'")
            value = float(text[start:i])
            if not math.isfinite(value):
                raise fail(start, f"number {text[start:i]} is too large")
            tokens.append(Token(Kind.NUMBER, text[start:i], start, i, newline, number=value))
        elif c == '"':
            i, value_text = _scan_string(text, i)
            tokens.append(Token(Kind.STRING, text[start:i], start, i, newline, string=value_text))
        elif c in _NAME_START or c == "$":
            i += 1
            if c == "$" and (i >= n or text[i] not in _NAME_START):
                raise fail(start, "'$' must be followed by a variable name")
            while i < n and text[i] in _NAME_REST:
                i += 1
            tokens.append(Token(Kind.NAME, text[start:i], start, i, newline))
        else:
            op = next((o for o in OPERATORS if text.startswith(o, i)), None)
            if op is None:
                hint = {"%": "'%' is not an operator of autoscale formulas",
                        "&": "unexpected '&' (the logical and is '&&')",
                        "|": "unexpected '|' (the logical or is '||')",
                        "'": "strings are written in double quotes"}.get(c, f"unexpected character {_char(c)}")
                raise fail(start, hint)
            i += len(op)
            tokens.append(Token(Kind.OP, op, start, i, newline))
        newline = False


def _scan_number(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _DIGITS:
        i += 1
    if i < n and text[i] == "." and (i + 1 >= n or text[i + 1] not in _NAME_START):
        i += 1  # "5." and "5.25"; but "5.x" is not a number followed by a member
        while i < n and text[i] in _DIGITS:
            i += 1
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        if j < n and text[j] in _DIGITS:
            i = j
            while i < n and text[i] in _DIGITS:
                i += 1
    return i


def _scan_string(text: str, i: int) -> tuple[int, str]:
    start, n = i, len(text)
    out: list[str] = []
    i += 1
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1, "".join(out)
        if c == "\n":
            break
        if c == "\\" and i + 1 < n and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    raise located(SYNTAX_ERROR, text, start, "unterminated string: a '\"' has no closing '\"'")
