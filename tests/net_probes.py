"""Probes of machines' networks from the host, shared by the network tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def connects(address: str, port: int) -> bool:
    """An HTTP listener at (address, port) answers from here."""
    try:
        with socket.create_connection((address, port), timeout=1.5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return conn.recv(12).startswith(b"HTTP/")
    except OSError:
        return False


def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for ``check`` to hold (the host applies network changes asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")
