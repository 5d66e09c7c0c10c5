"""Metric samples as a formula sees them, and the sample methods (``GetSample`` and friends).

A formula sees the samples taken at or before ``now`` and within the history window. A time argument is
either a timestamp or a timeinterval counted back from ``now``; a window covers ``(earlier, later]``, so ten
minutes of 30-second samples hold 20 of them. The sample percent of a window is the share of the samples it
should hold (its length over the sample period, at least one) that it does hold, at most 100.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime

from shoal.domain.batch.autoscale.names import TICKS_PER_SECOND
from shoal.domain.batch.autoscale.values import Interval, Timestamp

DEFAULT_HISTORY_SECONDS = 7 * 86400.0


@dataclass(frozen=True)
class Sample:
    """One sample of a metric."""

    timestamp: datetime  # aware UTC (one without a time zone is taken as UTC)
    value: float


@dataclass
class Metrics:
    """What a formula reads: the evaluation time, sampled metrics and plain values.

    ``series`` maps a sampled metric's name without ``$`` (``"PendingTasks"``) to its samples; ``values`` maps a
    plain variable's name (``"TaskSlotsPerNode"``, ``"CurrentDedicatedNodes"``, ``"CurrentLowPriorityNodes"``,
    ``"UsableNodeCount"``) to its value. A metric without samples has none; a missing plain value has a default.
    """

    now: datetime
    series: dict[str, list[Sample]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    sample_period_seconds: float = 30.0
    history_seconds: float = DEFAULT_HISTORY_SECONDS


class SampleError(Exception):
    """Fewer samples than a GetSample asked for (the evaluator adds the position)."""


@dataclass(frozen=True)
class Series:
    """The visible samples of one metric, oldest first."""

    name: str  # with its "$"
    ticks: tuple[int, ...]
    values: tuple[float, ...]
    now: int
    period: int  # ticks

    @classmethod
    def of(cls, name: str, samples: list[Sample], metrics: Metrics) -> Series:
        if not (math.isfinite(metrics.sample_period_seconds) and metrics.sample_period_seconds > 0):
            raise ValueError(f"sample_period_seconds must be positive, not {metrics.sample_period_seconds}")
        now = Timestamp.of(metrics.now).ticks
        history = metrics.history_seconds  # infinite: every sample
        oldest = now - int(history * TICKS_PER_SECOND) if math.isfinite(history) else None
        visible = sorted((Timestamp.of(s.timestamp).ticks, float(s.value)) for s in samples)
        visible = [(t, v) for t, v in visible
                   if (oldest is None or oldest <= t) and t <= now and math.isfinite(v)]
        period = max(1, int(metrics.sample_period_seconds * TICKS_PER_SECOND))
        return cls(name, tuple(t for t, _ in visible), tuple(v for _, v in visible), now, period)

    def instant(self, when: Timestamp | Interval) -> int:
        return when.ticks if isinstance(when, Timestamp) else self.now - when.ticks

    def window(self, start: Timestamp | Interval, end: Timestamp | Interval | None) -> tuple[int, int]:
        a, b = self.instant(start), self.now if end is None else self.instant(end)
        return min(a, b), max(a, b)

    def between(self, low: int, high: int) -> tuple[float, ...]:
        i = bisect.bisect_right(self.ticks, low)
        j = bisect.bisect_right(self.ticks, high)
        return self.values[i:j]

    def percent(self, low: int, high: int, count: int) -> float:
        expected = max(1, (high - low) // self.period)
        return min(100.0, 100.0 * count / expected)

    # --- the methods ----------------------------------------------------------------------------------------
    def last(self, count: float) -> tuple[float, ...]:
        """``GetSample(count)``: the latest ``count`` samples (fewer if there are fewer)."""
        if count < 0:
            raise ValueError(f"GetSample() cannot take {count:g} samples")
        n = min(int(count), len(self.values))
        return self.values[len(self.values) - n:] if n else ()

    def get(self, start: Timestamp | Interval, end: Timestamp | Interval | None,
            percent: float | None) -> tuple[float, ...]:
        """``GetSample(start[, end][, percent])``: the samples of a window, failing below ``percent``."""
        low, high = self.window(start, end)
        found = self.between(low, high)
        if percent is not None:
            if not 0 <= percent <= 100:
                raise ValueError(f"the sample percent must be between 0 and 100, not {percent:g}")
            have = self.percent(low, high, len(found))
            if have < percent:
                raise SampleError(f"Insufficient data from data set: {self.name} wanted {percent:g}%, received "
                                  f"{math.floor(have * 100) / 100:g}%")
        return found

    def sample_percent(self, start: Timestamp | Interval, end: Timestamp | Interval | None) -> float:
        low, high = self.window(start, end)
        return self.percent(low, high, len(self.between(low, high)))

    def history_begin(self) -> Timestamp:
        if not self.ticks:
            raise SampleError(f"Insufficient data from data set: {self.name} has no samples")
        return Timestamp(self.ticks[0])
