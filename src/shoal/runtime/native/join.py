"""The Python half of ``shoal-machine join``: start it, feed and capture its stdio, decode its status line.

Speed matters here (Batch tasks, start tasks and VM run-commands all come through this), so the helper is
started with ``os.posix_spawn`` (a vfork in the C library) rather than ``subprocess.Popen``, which costs about
0.2 ms more per command, and the helper gets only raw pipe file descriptors: its stdio and the status pipe as
fd 3 (the helper closes everything else).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.runtime.native import MachineError

OUTPUT_CAP = 4 * 1024 * 1024
"""Captured stdout/stderr are truncated to this many bytes each."""

STATUS_FD = 3
_SAFETY_MARGIN = 30.0  # seconds past the helper's own timeout before we kill the helper itself


@dataclass
class Started:
    """A running ``join`` helper and our ends of its pipes (-1 where not piped)."""

    pid: int
    status: int
    stdin: int = -1
    stdout: int = -1
    stderr: int = -1

    def close(self) -> None:
        for fd in (self.status, self.stdin, self.stdout, self.stderr):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.status = self.stdin = self.stdout = self.stderr = -1


def _above_stdio(fd: int) -> int:
    """posix_spawn applies the dup2s in order: a source fd numbered 0-2 could be overwritten first (only
    possible when the server runs with its own stdio closed)."""
    return fd if fd >= 3 else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def start(args: Sequence[str], env: Mapping[str, str], *, feed_stdin: bool, capture_stdout: bool,
          capture_stderr: bool, new_session: bool = False) -> Started:
    """Start the helper (``args`` must say ``--status-fd 3``); unpiped stdio goes to /dev/null."""
    ours: list[int] = []  # parent ends
    theirs: list[int] = []  # child ends (closed here once the helper has started)
    try:
        status_r, status_w = os.pipe()
        ours.append(status_r)
        theirs.append(status_w)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        theirs.append(devnull)
        ends = []
        for piped, is_input in ((feed_stdin, True), (capture_stdout, False), (capture_stderr, False)):
            if not piped:
                ends.append((-1, devnull))
                continue
            r, w = os.pipe()
            mine, child = (w, r) if is_input else (r, w)
            ours.append(mine)
            theirs.append(child)
            ends.append((mine, child))
        sources = [_above_stdio(child) for _, child in ends] + [_above_stdio(status_w)]
        theirs.extend(sources)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(sources)]
        pid = os.posix_spawn(args[0], list(args), dict(env), file_actions=actions,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), setsid=new_session)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in set(theirs):
            with contextlib.suppress(OSError):
                os.close(fd)
    return Started(pid, status_r, ends[0][0], ends[1][0], ends[2][0])


def collect(job: Started, stdin: bytes | None, timeout: float | None) -> tuple[bytes, dict[str, bytes], int]:
    """Feed stdin, capture output (capped) and the status line; reap the helper.

    Returns (status line, captured outputs by name, the helper's wait status). Ends when the helper reports,
    not at end-of-file of the output pipes: background processes that the command left running in the machine
    may hold those open for ever.
    """
    sel = selectors.DefaultSelector()
    outputs: dict[int, tuple[str, bytearray]] = {}
    for name, fd in (("stdout", job.stdout), ("stderr", job.stderr)):
        if fd >= 0:
            outputs[fd] = (name, bytearray())
            sel.register(fd, selectors.EVENT_READ)
    sel.register(job.status, selectors.EVENT_READ)
    pending = memoryview(stdin or b"")
    if job.stdin >= 0:
        if pending:
            os.set_blocking(job.stdin, False)
            sel.register(job.stdin, selectors.EVENT_WRITE)
        else:
            os.close(job.stdin)
            job.stdin = -1
    status = bytearray()
    deadline = None if timeout is None else time.monotonic() + timeout + _SAFETY_MARGIN
    done = False
    while not done:
        events = sel.select(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not events and deadline is not None and time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):  # the helper hangs: last resort
                os.kill(job.pid, signal.SIGKILL)
            deadline = None
        for key, _ in events:
            fd = key.fd
            if fd == job.status:
                chunk = os.read(fd, 4096)
                status += chunk
                done = not chunk
            elif fd == job.stdin:
                try:
                    pending = pending[os.write(fd, pending[:65536]):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # the command does not read all its input: fine
                    pending = pending[:0]
                if not pending:
                    sel.unregister(fd)
                    os.close(fd)
                    job.stdin = -1
            else:
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                _append_capped(outputs[fd][1], chunk)
    sel.close()
    _, wait_status = os.waitpid(job.pid, 0)
    result = {}
    for fd, (name, buf) in outputs.items():
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, 65536):  # what the command wrote before it exited
                _append_capped(buf, chunk)
        result[name] = bytes(buf)
    job.close()
    return bytes(status), result, wait_status


def abort(job: Started) -> None:
    """The caller gave up (an exception while waiting): kill the command's tree and reap the helper."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(job.pid, signal.SIGTERM)  # the helper turns this into a kill of the whole tree
    with contextlib.suppress(ChildProcessError):
        os.waitpid(job.pid, 0)
    job.close()


def _append_capped(buf: bytearray, chunk: bytes) -> None:
    room = OUTPUT_CAP - len(buf)
    if room > 0:
        buf += chunk[:room]


def decode(machine_id: str, status: bytes, wait_status: int) -> dict[str, Any]:
    """Turn the helper's ``R <code> <signal> <timed out> <stage> <errno> <message>`` line into a result dict:
    ``{"exitCode", "signal", "timedOut"[, "error"]}``. Raises MachineError when the command never started
    because of the machine or the helper (as opposed to the command's own program, user or cwd)."""
    parts = status.decode(errors="replace").strip().split(" ", 6)
    if len(parts) < 7 or parts[0] != "R":
        raise MachineError(f"machine {machine_id}: the helper failed (wait status {wait_status:#x})")
    code, sig, timed_out, stage, err = int(parts[1]), int(parts[2]), parts[3] == "1", parts[4], int(parts[5])
    if stage in ("machine", "helper"):
        raise MachineError(f"machine {machine_id}: {parts[6].strip()}")
    result: dict[str, Any] = {"exitCode": code, "signal": sig or None, "timedOut": timed_out}
    if stage != "-":
        result["error"] = f"{stage}: {os.strerror(err)}"
    return result
