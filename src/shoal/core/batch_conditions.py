"""Batch data-plane conditional headers for one existing resource (pool, job, task, ...).

The order of evaluation is RFC 9110 section 13.2.2: ``If-Match``, else ``If-Unmodified-Since``; then
``If-None-Match``, else ``If-Modified-Since``. Batch differs from plain HTTP in two ways:

* ``If-Modified-Since`` also guards writes ("the operation will be performed only if the resource on the
  service has been modified since the specified time"), so an unmodified resource fails a write with 412;
* ``If-None-Match`` that matches fails a write with 412 ``ConditionNotMet`` (ARM answers 409 for
  ``If-None-Match: *``; the data plane does not).

ETags are compared ignoring quotes and ``W/`` (azure-batch 15.x quotes the ``0x...`` value it was given;
a single-quoted value, which its ``quote_etag`` passes through, is accepted too). ``Last-Modified`` carries
whole seconds, so the resource's time is truncated to the second before comparing: echoing the header back
must not look like a modification. An unparseable date is ignored, as HTTP requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from shoal.core.etags import matches
from shoal.core.timefmt import TimeFormatError, parse_http_date

NOT_MODIFIED = 304
PRECONDITION_FAILED = 412

_READS = ("GET", "HEAD")


def check(method: str, etag: str, last_modified: datetime, headers: Mapping[str, str]) -> int | None:
    """None to proceed, 304 for a read the client already has, or 412 for a condition that does not hold."""
    lowered = {name.lower(): value for name, value in headers.items() if value and value.strip()}
    is_read = method.upper() in _READS
    modified = _whole_seconds(last_modified)

    if_match = lowered.get("if-match")
    if if_match is not None:
        if not matches(_double_quoted(if_match), etag):
            return PRECONDITION_FAILED
    else:
        since = _date(lowered.get("if-unmodified-since"))
        if since is not None and modified > since:
            return PRECONDITION_FAILED

    if_none_match = lowered.get("if-none-match")
    if if_none_match is not None:
        if matches(_double_quoted(if_none_match), etag):
            return NOT_MODIFIED if is_read else PRECONDITION_FAILED
    else:
        since = _date(lowered.get("if-modified-since"))
        if since is not None and modified <= since:
            return NOT_MODIFIED if is_read else PRECONDITION_FAILED
    return None


def _double_quoted(header: str) -> str:
    """Turn ``'0x8D...'`` entries into ``"0x8D..."`` so :func:`shoal.core.etags.matches` strips them."""
    parts = []
    for part in header.split(","):
        tag = part.strip()
        if len(tag) >= 2 and tag[0] == tag[-1] == "'":
            tag = f'"{tag[1:-1]}"'
        parts.append(tag)
    return ",".join(parts)


def _date(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_http_date(text)
    except TimeFormatError:
        return None


def _whole_seconds(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0)
