"""ISO 8601 durations and timestamps: parse leniently, emit canonically.

Clients send durations such as ``PT20M00S`` or ``PT01H00M00S`` (azure-batch 15.x) as well as ``PT20M``;
timestamps carry 0-7 fractional digits and either ``Z`` or an offset. We always emit ``...Z`` with seven
fractional digits, as the Batch service does, and the shortest canonical duration.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?!$)"
    r"(?:(?P<years>\d+(?:\.\d+)?)Y)?"
    r"(?:(?P<months>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<weeks>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)"
    r"(?:(?P<hours>\d+(?:\.\d+)?)H)?"
    r"(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)

# Batch's "infinite" duration (TimeSpan.MaxValue) as the service renders it.
INFINITE_DURATION_TEXT = "P10675199DT2H48M5.4775807S"
INFINITE_DURATION = timedelta(days=10675199, hours=2, minutes=48, seconds=5, microseconds=477580)


class TimeFormatError(ValueError):
    """A duration or timestamp that cannot be parsed."""


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration (``PT15M``, ``PT20M00S``, ``P1DT2H``...). Years/months are 365/30 days."""
    if not isinstance(text, str):
        raise TimeFormatError(f"'{text}' is not an ISO 8601 duration")
    m = _DURATION.match(text.strip())
    if not m:
        raise TimeFormatError(f"'{text}' is not an ISO 8601 duration (for example PT15M)")
    parts = {k: float(v) for k, v in m.groupdict().items() if v and k != "sign"}
    try:
        delta = timedelta(
            days=parts.get("years", 0) * 365 + parts.get("months", 0) * 30 + parts.get("weeks", 0) * 7
            + parts.get("days", 0),
            hours=parts.get("hours", 0),
            minutes=parts.get("minutes", 0),
            seconds=parts.get("seconds", 0),
        )
    except OverflowError:
        delta = timedelta.max
    # Azure's durations are .NET TimeSpans: nothing beyond TimeSpan.MaxValue (the "infinite" duration).
    if delta > INFINITE_DURATION + timedelta(microseconds=1):
        raise TimeFormatError(f"'{text}' is longer than the longest duration ({INFINITE_DURATION_TEXT})")
    return -delta if m.group("sign") else delta


def format_duration(delta: timedelta) -> str:
    """Canonical ISO 8601 form: ``PT15M``, ``P1DT2H``, ``PT0S``; the infinite value as Batch renders it."""
    if delta >= INFINITE_DURATION:
        return INFINITE_DURATION_TEXT
    sign = "-" if delta < timedelta(0) else ""
    delta = abs(delta)
    days = delta.days
    seconds = delta.seconds
    micros = delta.microseconds
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    out = f"{sign}P"
    if days:
        out += f"{days}D"
    time_part = ""
    if hours:
        time_part += f"{hours}H"
    if minutes:
        time_part += f"{minutes}M"
    if secs or micros:
        time_part += f"{secs}.{micros:06d}".rstrip("0").rstrip(".") + "S" if micros else f"{secs}S"
    if time_part:
        out += "T" + time_part
    if out in ("P", "-P"):
        out = "PT0S"
    return out


_TS = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<frac>\d+))?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp with up to 7 (or more) fractional digits."""
    m = _TS.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise TimeFormatError(f"'{text}' is not an ISO 8601 timestamp (for example 2024-01-01T00:00:00Z)")
    hms = m.group("time")
    if hms.count(":") == 1:
        hms += ":00"
    frac = (m.group("frac") or "")[:6].ljust(6, "0")
    tz = m.group("tz") or "Z"
    if tz.upper() == "Z":
        tz = "+00:00"
    elif ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    try:
        dt = datetime.fromisoformat(f"{m.group('date')}T{hms}.{frac}{tz}")
    except ValueError as exc:
        raise TimeFormatError(f"'{text}' is not a valid timestamp: {exc}") from exc
    return dt.astimezone(UTC)


def format_timestamp(dt: datetime) -> str:
    """``2024-01-01T00:00:00.1234560Z``: UTC with seven fractional digits, as Azure emits."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def format_http_date(dt: datetime) -> str:
    """RFC 1123 date for ``Last-Modified`` and friends."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def parse_http_date(text: str) -> datetime:
    try:
        dt = parsedate_to_datetime(text)
    except (TypeError, ValueError) as exc:
        raise TimeFormatError(f"'{text}' is not an RFC 1123 date") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
