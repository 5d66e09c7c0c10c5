"""What the processes of each machine use, read from ``/proc`` in one scan (for autoscale metrics).

A namespace machine's processes are those in its init's pid namespace. Per machine: CPU time (clock ticks of
live processes), resident memory, bytes and read/write calls through the block layer (``/proc/<pid>/io``).
Limits of the approach, documented for formula authors: processes that start and end between two samples are
not seen, and machines share the host's network, so per-node network counters are not available (0). Machines of
the ``process`` isolation level have no pid namespace: they report 0 too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ProcessUsage:
    cpu_ticks: int = 0
    rss_bytes: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    read_ops: int = 0
    write_ops: int = 0


def _namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def scan(init_pids: Mapping[str, int]) -> dict[str, dict[int, ProcessUsage]]:
    """Per machine id: the usage counters of each live process (by host pid)."""
    machine_of = {ns: machine for machine, pid in init_pids.items() if (ns := _namespace(pid))}
    out: dict[str, dict[int, ProcessUsage]] = {m: {} for m in init_pids}
    if not machine_of:
        return out
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        machine = machine_of.get(_namespace(entry.name) or "")
        if machine is None:
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            usage = ProcessUsage(cpu_ticks=int(fields[11]) + int(fields[12]), rss_bytes=int(fields[21]) * PAGE)
            for line in (entry / "io").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "read_bytes":
                    usage.read_bytes = int(value)
                elif key == "write_bytes":
                    usage.write_bytes = int(value)
                elif key == "syscr":
                    usage.read_ops = int(value)
                elif key == "syscw":
                    usage.write_ops = int(value)
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        out[machine][int(entry.name)] = usage
    return out
