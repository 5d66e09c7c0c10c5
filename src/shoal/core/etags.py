"""ETags and conditional requests, decided in one place for every resource type.

Data-plane ETags look like ``0x8DC...``; SDKs send them back quoted (and sometimes ``W/``-prefixed), so
comparison ignores both. ARM semantics: ``If-Match`` that does not match -> 412; ``If-Match: *`` on a
missing resource -> 412; ``If-None-Match: *`` on an existing resource -> 409 (create-only PUT).
"""

from __future__ import annotations

import time

from shoal.core import errors


def new_etag(counter: int | None = None) -> str:
    """A fresh ``0x``-style ETag; monotonic per process, unique enough across processes."""
    value = counter if counter is not None else time.time_ns() // 100 + 0x8D000000000000
    return f"0x{value:X}"


def normalize(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"')


def matches(header: str, current: str | None) -> bool:
    """Whether an If-Match / If-None-Match header value matches the current ETag."""
    if current is None:
        return False
    candidates = [normalize(t) for t in header.split(",") if t.strip()]
    return "*" in candidates or normalize(current) in candidates


def check_write(current: str | None, if_match: str | None, if_none_match: str | None) -> None:
    """Raise the ARM error for a conditional write that must not proceed."""
    if if_match is not None and if_match.strip():
        if current is None:
            raise errors.PreconditionFailed("The resource does not exist, so the If-Match condition cannot hold.")
        if not matches(if_match, current):
            raise errors.PreconditionFailed(
                f"The ETag '{if_match}' in If-Match does not match the resource's current ETag '{current}'. "
                "Read the resource again and retry with its current ETag.")
    if if_none_match is not None and if_none_match.strip() and current is not None:
        if normalize(if_none_match) == "*":
            raise errors.Conflict("The resource already exists and If-None-Match: * allows only creation.")
        if matches(if_none_match, current):
            raise errors.PreconditionFailed("The resource's ETag matches If-None-Match.")
