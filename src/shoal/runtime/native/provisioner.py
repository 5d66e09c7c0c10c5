"""The Python half of ``shoal-machine serve``: a resident provisioner that builds machines on request.

Launching the helper costs a process start per machine; a provisioner is started once and then builds each
machine for the price of one message on a pipe (the fork happens in the small helper, not in the server).
The host agent keeps one for each gallery replica on the host (``runtime/replicas.py``): the replica's
prepared, ready-to-provision form, so that the nodes of a pool spread over several replicas are built side
by side, one stream per replica. Nodes of other images boot in the control plane's boot streams, one
provisioner for each stream.

A provisioner handles one request at a time (callers take turns on its lock). It ends when its stdin closes:
when it is stopped, or when the server process ends; the machines it built do not depend on it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Sequence

from shoal.runtime.native import MachineError

TITLE_SPACE = 8192  # bytes (see `shoal-machine serve`)
REPLY_TIMEOUT = 60.0  # seconds one machine may take to come up (as for a launched helper)


class ProvisionerGone(MachineError):
    """The provisioner process is not running (any more); nothing of the request was started."""


class Provisioner:
    def __init__(self, helper: str) -> None:
        self._lock = threading.Lock()
        # The blank argument is room for each build to show as `shoal-machine init --id ... --root ...`.
        self._proc = subprocess.Popen([helper, "serve", " " * TITLE_SPACE], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={},
                                      start_new_session=True, bufsize=0)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def init(self, args: Sequence[str]) -> int:
        """Build a machine with the arguments of ``shoal-machine init``; its init's host pid."""
        text = self._ask(args)
        try:
            return int(text)
        except ValueError as exc:
            raise MachineError(f"the machine provisioner replied {text!r}") from exc

    def shell(self, base: int, size: int, veth: str) -> tuple[int, ...]:
        """Make a reserve shell (see ``runtime/reserve.py``): the provisioner's descriptors of its user, network,
        IPC and UTS namespaces. A failure ends the provisioner."""
        text = self._ask(["shell", f"{base}:{size}", veth])
        try:
            fds = tuple(int(w) for w in text.split())
        except ValueError as exc:
            raise MachineError(f"the machine provisioner replied {text!r}") from exc
        if len(fds) != 4:
            raise MachineError(f"the machine provisioner replied {text!r}")
        return fds

    def drop(self, fds: Sequence[int]) -> None:
        """Close shells' descriptors (their machines hold the namespaces now, or they are given up)."""
        self._ask(["drop", *(str(fd) for fd in fds)])

    def _ask(self, args: Sequence[str]) -> str:
        """One request: the reply's text (MachineError with it when the request failed)."""
        payload = b"".join(os.fsencode(a) + b"\0" for a in args)
        with self._lock:
            stdin, stdout = self._proc.stdin, self._proc.stdout
            assert stdin is not None and stdout is not None
            try:
                view = memoryview(struct.pack("<I", len(payload)) + payload)
                while view:
                    view = view[stdin.write(view) or 0:]
            except (BrokenPipeError, ValueError) as exc:
                raise ProvisionerGone("the machine provisioner is not running") from exc
            try:
                head = self._read(stdout.fileno(), 5, time.monotonic() + REPLY_TIMEOUT)
                code, size = head[0], struct.unpack("<I", head[1:])[0]
                text = self._read(stdout.fileno(), size, time.monotonic() + REPLY_TIMEOUT).decode(errors="replace")
            except MachineError:
                self._kill()  # a half-read reply leaves the pipe out of step: this provisioner is done
                raise
        if code != 0:
            raise MachineError(text.strip() or f"the machine provisioner's build exited with status {code}")
        return text

    @staticmethod
    def _read(fd: int, size: int, deadline: float) -> bytes:
        chunks, got = [], 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise MachineError(f"the machine provisioner did not answer within {REPLY_TIMEOUT:.0f} s")
            chunk = os.read(fd, size - got)
            if not chunk:
                raise MachineError("the machine provisioner ended while building a machine")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def stop(self) -> None:
        """Close its stdin (it finishes the request it has, then ends) and reap it."""
        with self._lock:
            with contextlib.suppress(OSError):
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            try:
                self._proc.wait(timeout=REPLY_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
