"""Where each value of a JSON document starts (1-based line and column), by its path of keys and indexes.

Azure names the line and column of the template value an error is about (``InvalidTemplate``); Python's
``json`` keeps no positions, so the request body's text is scanned once more here. The body was already parsed
(and its nesting bounded) by the API, so this scanner can assume well-formed JSON and stay small.
"""

from __future__ import annotations

import re
from json import decoder
from typing import Any

Path = tuple[str | int, ...]

_scanstring: Any = getattr(decoder, "scanstring")  # noqa: B009 (typeshed leaves it out)

_SPACE = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


def locate(text: str) -> dict[Path, tuple[int, int]]:
    """``path -> (line, column)`` for every value of a well-formed JSON text (empty if it is not one)."""
    found: dict[Path, int] = {}
    try:
        _value(text, _skip(text, 0), (), found)
    except (ValueError, IndexError):
        return {}
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out: dict[Path, tuple[int, int]] = {}
    import bisect

    for path, offset in found.items():
        line = bisect.bisect_right(line_starts, offset)
        out[path] = (line, offset - line_starts[line - 1] + 1)
    return out


def _skip(text: str, i: int) -> int:
    m = _SPACE.match(text, i)
    return m.end() if m else i


def _value(text: str, i: int, path: Path, found: dict[Path, int]) -> int:
    found[path] = i
    c = text[i]
    if c == "{":
        i = _skip(text, i + 1)
        if text[i] == "}":
            return i + 1
        while True:
            key, i = _scanstring(text, i + 1)
            i = _skip(text, i)
            if text[i] != ":":
                raise ValueError("expected ':'")
            i = _value(text, _skip(text, i + 1), (*path, key), found)
            i = _skip(text, i)
            if text[i] == "}":
                return i + 1
            if text[i] != ",":
                raise ValueError("expected ','")
            i = _skip(text, i + 1)
    if c == "[":
        i = _skip(text, i + 1)
        if text[i] == "]":
            return i + 1
        n = 0
        while True:
            i = _skip(text, _value(text, i, (*path, n), found))
            n += 1
            if text[i] == "]":
                return i + 1
            if text[i] != ",":
                raise ValueError("expected ','")
            i = _skip(text, i + 1)
    if c == '"':
        return _scanstring(text, i + 1)[1]
    m = _SCALAR.match(text, i)
    if not m:
        raise ValueError("unexpected character")
    return m.end()
