"""Request bodies as JSON, with bounded nesting: a body nested deeper than any Azure body is refused before
the parser (which recurses) or any code walking the result can run out of stack."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # Azure's deepest bodies (a pool with its start task's container settings) nest about 10 deep


class TooDeep(ValueError):
    """The body nests objects or arrays deeper than ``MAX_DEPTH``."""


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def depth(raw: bytes | str) -> int:
    """How deep objects and arrays nest in ``raw`` (brackets inside strings do not count), without recursion."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    deepest = level = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        level += 1 if bracket in "[{" else -1
        deepest = max(deepest, level)
    return deepest


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    if depth(raw) > max_depth:
        raise TooDeep(f"The request body nests objects or arrays more than {max_depth} levels deep.")
    return json.loads(raw)
