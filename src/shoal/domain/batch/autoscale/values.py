"""Run-time values and how Azure writes them in ``autoScaleRun.results``.

A double is a ``float``, a doubleVec a ``tuple`` of floats, a string a ``str``; timestamps and timeintervals
count 100 ns ticks (like .NET's ``DateTime`` and ``TimeSpan``), so ``TimeInterval_100ns`` is exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shoal.domain.batch.autoscale.names import TICKS_PER_SECOND

_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1) * 10 \
    + 9_999_999  # ticks of 9999-12-31T23:59:59.9999999Z
MAX_INTERVAL = 2**63 - 1  # .NET TimeSpan's range


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    ticks: int  # since 0001-01-01T00:00:00Z

    @classmethod
    def of(cls, when: datetime) -> Timestamp:
        """From a datetime (one without a time zone is taken as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls((when - _EPOCH) // timedelta(microseconds=1) * 10)

    def datetime(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.ticks // 10)


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    ticks: int


Value = float | tuple[float, ...] | str | Timestamp | Interval


def type_name(value: Value) -> str:
    if isinstance(value, float):
        return "double"
    if isinstance(value, tuple):
        return "doubleVec"
    if isinstance(value, str):
        return "string"
    return "timestamp" if isinstance(value, Timestamp) else "timeinterval"


# --- formatting ------------------------------------------------------------------------------------------------
def format_double(x: float) -> str:
    """Shortest round-trip form, integers without a fraction: ``4``, ``2.5``, ``0.1``, ``1E+20``."""
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x).replace("e", "E")


def format_timestamp(t: Timestamp) -> str:
    """ISO 8601 in UTC with milliseconds: ``2016-10-13T19:18:47.805Z``."""
    when = t.datetime()
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def format_interval(i: Interval) -> str:
    """.NET's constant TimeSpan format, ``[-][d.]hh:mm:ss[.fffffff]``: ``00:03:00``, ``1.02:00:00``."""
    ticks = abs(i.ticks)
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    text = f"{'-' if i.ticks < 0 else ''}{f'{days}.' if days else ''}{hour:02d}:{minute:02d}:{second:02d}"
    return text + (f".{fraction:07d}" if fraction else "")


def format_value(value: Value) -> str:
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, tuple):
        return "[" + ",".join(format_double(x) for x in value) + "]"
    if isinstance(value, str):
        return value
    return format_timestamp(value) if isinstance(value, Timestamp) else format_interval(value)


# --- time("...") -----------------------------------------------------------------------------------------------
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# W3C-DTF (a profile of ISO 8601): YYYY, YYYY-MM, YYYY-MM-DD, or a date with hh:mm[:ss[.s]] and a zone.
_W3C = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
                  r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?)?)?)?")
# RFC 1123, as .NET writes it with ToString("r"): "Tue, 14 Apr 2020 10:00:00 GMT".
_RFC1123 = re.compile(r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+"
                      r"(\d{2}):(\d{2})(?::(\d{2}))?\s*(GMT|UTC|UT|Z|[+-]\d{4})?", re.IGNORECASE)


def parse_time(text: str) -> Timestamp | None:
    """A W3C-DTF or RFC 1123 date and time (a time without a zone is UTC), or None if it is neither."""
    text = text.strip()
    try:
        if m := _W3C.fullmatch(text):
            year, month, day, hour, minute, second, fraction, _zulu, sign, zh, zm = m.groups()
            offset = 0 if not sign else (int(zh) * 60 + int(zm)) * (1 if sign == "+" else -1)
            return _ticks(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                          int(second or 0), fraction or "", offset)
        if m := _RFC1123.fullmatch(text):
            day, month_name, year, hour, minute, second, zone = m.groups()
            if month_name.lower() not in _MONTHS:
                return None
            zone = (zone or "GMT").upper()
            offset = 0 if zone[0] not in "+-" else (int(zone[1:3]) * 60 + int(zone[3:5])) * (1 if zone[0] == "+"
                                                                                              else -1)
            return _ticks(int(year), _MONTHS.index(month_name.lower()) + 1, int(day), int(hour), int(minute),
                          int(second or 0), "", offset)
    except (ValueError, OverflowError):
        return None
    return None


def _ticks(year: int, month: int, day: int, hour: int, minute: int, second: int, fraction: str,
           offset_minutes: int) -> Timestamp | None:
    local = datetime(year, month, day, hour, minute, second, tzinfo=UTC)  # ValueError for impossible dates
    ticks = Timestamp.of(local).ticks + int((fraction + "0000000")[:7]) - offset_minutes * 60 * TICKS_PER_SECOND
    return Timestamp(ticks) if 0 <= ticks <= MAX_TIMESTAMP else None

