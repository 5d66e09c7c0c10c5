"""The one clock of the process, injectable so tests never wait on real time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall clock in UTC. Everything that reads the time goes through an instance of this."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock(Clock):
    """A clock that runs with real time plus an offset that can be advanced (tests, fault injection)."""

    def __init__(self, offset: timedelta | None = None) -> None:
        self._offset = offset or timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._offset += delta


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime (naive values from the database are UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
