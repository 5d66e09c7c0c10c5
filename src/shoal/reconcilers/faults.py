"""Operator-only fault injection for node provisioning (never reachable through the Azure APIs).

Lets tests and operators see how Shoal behaves when provisioning is slow or fails, without waiting for real
failures: ``<state-dir>/faults.json`` holds ``{"nodeProvisionDelaySeconds": 0.5, "nodeProvisionFailure": false,
"clockOffsetSeconds": 0}`` and is re-read when it changes. ``clockOffsetSeconds`` moves the server's clock
forward (resize timeouts, autoscale intervals) without waiting. Spot rehearsals: ``spotRecoverySeconds`` is how
long an evicted low-priority node stays ``preempted`` before capacity returns (default 5), and
``evictionRatesPerMinute`` (``{"<pool id>": 0.5}``) evicts that many of a pool's low-priority nodes a minute, at
random (domain/batch/eviction.py). Manage it with ``shoal faults set|evict|clear``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from shoal.core.clock import Clock


@dataclass(frozen=True)
class Faults:
    node_provision_delay: float = 0.0
    node_provision_failure: bool = False
    clock_offset: float = 0.0
    spot_recovery_seconds: float = 5.0
    eviction_rates: dict[str, float] = field(default_factory=dict)  # pool id (lower case) -> evictions a minute


LOOK_EVERY = 0.2  # seconds: how stale a running server's view of the faults file may be


class FaultSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: float | None = None
        self._faults = Faults()
        self._checked = -1.0

    def current(self, *, fresh: bool = False) -> Faults:
        """The faults in force. The clock reads this very often, so unless ``fresh`` the file is looked at
        at most every 0.2 s; decisions about provisioning ask for a fresh look."""
        now = time.monotonic()
        if not fresh and now - self._checked < LOOK_EVERY:
            return self._faults
        self._checked = now
        try:
            stamp = self.path.stat().st_mtime
        except FileNotFoundError:
            self._stamp, self._faults = None, Faults()
            return self._faults
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text() or "{}")
            except ValueError:
                data = {}
            rates = data.get("evictionRatesPerMinute") or {}
            self._faults = Faults(float(data.get("nodeProvisionDelaySeconds", 0) or 0),
                                  bool(data.get("nodeProvisionFailure", False)),
                                  float(data.get("clockOffsetSeconds", 0) or 0),
                                  float(data.get("spotRecoverySeconds", 5.0) or 0),
                                  {str(k).lower(): float(v) for k, v in rates.items()} if isinstance(rates, dict)
                                  else {})
            self._stamp = stamp
        return self._faults


def write(path: Path, faults: Faults) -> None:
    """Put these faults in force; returns once running servers have looked at the file again, so that the
    operator's next request already meets them (a clock moved back included)."""
    path.write_text(json.dumps({"nodeProvisionDelaySeconds": faults.node_provision_delay,
                                "nodeProvisionFailure": faults.node_provision_failure,
                                "clockOffsetSeconds": faults.clock_offset,
                                "spotRecoverySeconds": faults.spot_recovery_seconds,
                                "evictionRatesPerMinute": faults.eviction_rates}, indent=2))
    _until_servers_look_again()


def clear(path: Path) -> None:
    """Remove every fault; returns once running servers have seen that (as :func:`write`)."""
    path.unlink(missing_ok=True)
    _until_servers_look_again()


def _until_servers_look_again() -> None:
    time.sleep(LOOK_EVERY + 0.05)


class FaultClock(Clock):
    """The server's clock, moved forward by the operator's ``clockOffsetSeconds`` (zero unless injected)."""

    def __init__(self, source: FaultSource) -> None:
        self.source = source

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self.source.current().clock_offset)
