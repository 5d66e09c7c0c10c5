"""The TCP ports something listens on in the host's network namespace (the one Shoal runs in).

Read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` (state ``0A`` is LISTEN; the local address ends in the
port, in hex), which is what ``ss -ltn`` reads too, without a subprocess. Machines that share the host's network
(``--node-network host``) get SSH ports that none of these is on (``domain/host_ssh.py``).
"""

from __future__ import annotations

from pathlib import Path

LISTEN = "0A"


def listening_ports(proc_net: Path = Path("/proc/net")) -> list[int]:
    """The TCP ports with a listening socket, on any address (IPv4 or IPv6), in order."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]  # the first line names the columns
        except OSError:  # no IPv6 on this host
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == LISTEN:
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return sorted(ports)
