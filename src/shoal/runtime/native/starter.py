"""The Python half of a machine's starter: commands started by the machine's own init (see "starter" in
``shoal_machine.c``), one message each over the socket the init listens on, instead of a ``join`` helper
launched per command.

A request carries ``join``'s options, the command's argv and environment, and file descriptors: the command's
status socket (ours is the other end) and the host files the server opened for it (exit file, captured
output, stdin). The init forks a child for it, which first says ``S``: the kernel attaches the child's
credentials, so we learn its host pid without a reply on the shared connection. The child ends with the
same result line as ``join`` (``R <code> <signal> <timed out> <stage> <errno> <message>``).
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import struct
import threading
from collections.abc import Mapping, Sequence

from shoal.runtime.native import MachineError

REQUEST_MAX = 256 * 1024 - 1
"""The init's request buffer: a larger request (a huge environment) goes through ``join`` instead."""

KILLED = b"R 137 9 0 - 0 -\n"
"""What a command reports when its shim died without a word (the machine was destroyed under it)."""

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Unavailable(Exception):
    """The machine has no starter, or it does not answer: start the command with ``join``."""


class Job:
    """A command sent to a machine's init: our end of its status socket, and (once :meth:`started`) its host
    pid. A batch of commands is sent first and their pids read after, so the forks overlap."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = 0

    def started(self) -> int:
        """Wait for the child the init forked to say it runs; its host pid."""
        try:
            self.pid = _started(self.sock)
        except BaseException:
            self.sock.close()
            raise
        return self.pid

    def fileno(self) -> int:
        return self.sock.fileno()

    def wait(self, timeout: float | None) -> bytes | None:
        """The command's result line, or None while it runs after ``timeout`` seconds."""
        if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
            return None
        self.sock.settimeout(None)
        line = self.sock.recv(4096)
        return line if line.startswith(b"R ") else KILLED

    def kill(self) -> None:
        """Kill the command's whole process tree (its result then shows signal 9)."""
        with contextlib.suppress(OSError):
            self.sock.send(b"K", socket.MSG_DONTWAIT)

    def close(self) -> None:
        self.sock.close()


class Starter:
    """A connection to one machine's starter, shared by every thread that starts commands there (each
    request is one datagram, and nothing comes back on it)."""

    def __init__(self, path: str, *, usable: bool = True) -> None:
        self.path, self.usable = path, usable  # (not usable: every send says Unavailable)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, payload: bytes, fds: Sequence[int]) -> None:
        with self._lock:
            for attempt in range(2):  # a connection from before the init restarted answers EPIPE once
                if self._sock is None:
                    self._sock = _connect(self.path)
                try:
                    self._sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                    return
                except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError):
                    self._sock.close()
                    self._sock = None
                    if attempt:
                        raise Unavailable(self.path) from None

    def send(self, options: Sequence[str], argv: Sequence[str], env: Mapping[str, str], *, exit_file: str | None,
             stdin: str | None, stdout: str | None, stderr: str | None) -> Job:
        """Ask for ``argv`` to be started (:meth:`Job.started` says when it is). ``options`` are ``join``'s
        in-machine options (``--cwd``, ``--user``, ``--in-stdout``...); ``exit_file``, ``stdin``, ``stdout``
        and ``stderr`` are host files to open here."""
        if not self.usable:
            raise Unavailable(f"{self.path}: the machine's init runs another build of the helper")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        opened: list[int] = []
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            fds = [theirs.fileno()]
            args = list(options)
            for option, path, flags in (("--exit-fd", exit_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                        ("--stdin-fd", stdin, os.O_RDONLY),
                                        ("--stdout-fd", stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                        ("--stderr-fd", stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                if path is None:
                    continue
                if option == "--stderr-fd" and path == stdout:  # 2>&1: one open file, interleaved writes
                    args += [option, str(len(fds) - 1)]
                    continue
                opened.append(os.open(path, flags | os.O_CLOEXEC, 0o644))
                args += [option, str(len(fds))]
                fds.append(opened[-1])
            if exit_file is not None:
                args += ["--exit-path", exit_file]
            envs = [f"{k}={v}" for k, v in env.items()]
            args += ["--env", str(len(envs)), "--", *argv, *envs]
            payload = ("\0".join(args) + "\0").encode("utf-8", "surrogateescape")  # (os.fsencode, at once)
            if len(payload) > REQUEST_MAX:
                raise Unavailable("request too large")
            self._send(payload, fds)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            for fd in opened:
                os.close(fd)
        return Job(ours)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    directory = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:  # through the directory: the socket's path may be longer than an address holds
        sock.connect(f"/proc/self/fd/{directory}/{os.path.basename(path)}")
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise Unavailable(f"{path}: {exc.strerror}") from None
    finally:
        os.close(directory)
    return sock


def _started(sock: socket.socket) -> int:
    """The host pid of the child the init forked, from the credentials of its first word."""
    message, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
    if not message:  # the init went away with the request
        raise Unavailable("the machine's init did not answer")
    if message != b"S":  # the init could not fork, or refused the request: its result line says why
        line = message.decode(errors="replace").strip()
        raise MachineError(line.split(" ", 6)[-1] if line.startswith("R ") else line)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(_UCRED.unpack(data[:_UCRED.size])[0])
    raise MachineError("the machine's starter sent no credentials")
