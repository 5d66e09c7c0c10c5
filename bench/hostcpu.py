"""The host's busy CPU time, for benchmarks that say what a node costs in CPU rather than in wall time.

On a host whose cores are all busy (a pool growing on 2 cores), wall time follows the CPU the work takes, so
CPU seconds per node say where a difference comes from, and what it would take to close it. Counted host-wide
from /proc/stat (every state but idle and iowait), so it includes the kernel's own threads (RCU, workqueues)
and processes that ended meanwhile, which per-process counters miss.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICK  # user nice system idle iowait irq softirq steal


TARGET_RATIO = 0.85  # the isolation issue's target: hardened rates at least 0.85 of the limits baseline's


def allowed_extra_ms(limits_ms: float) -> float:
    """CPU per node that hardening may add to a limits node's `limits_ms` and still meet the target, where both
    servers keep the cores equally busy (then pool time follows CPU per node): limits / 0.85 - limits."""
    return limits_ms * (1 / TARGET_RATIO - 1)


def core_use(busy: float, wall: float) -> float:
    """The share of all the host's cores that `busy` CPU seconds kept busy over `wall` seconds."""
    return busy / (wall * (os.cpu_count() or 1))


def settle(busy_below: float = 0.1, window: float = 0.3, timeout: float = 30.0) -> float:
    """Wait until the host's cores are quiet (less than ``busy_below`` of them busy over ``window`` seconds):
    what the last measurement left running (the kernel releasing a deleted pool's cgroups and namespaces, a
    refill) must not run into the next one. Returns the seconds waited (at most ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        busy, at = busy_seconds(), time.monotonic()
        time.sleep(window)
        if core_use(busy_seconds() - busy, time.monotonic() - at) < busy_below:
            break
    return time.monotonic() - start
