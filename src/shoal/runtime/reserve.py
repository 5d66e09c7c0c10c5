"""A reserve of hardened machines' namespaces, made ahead while the host is quiet.

Most of what a hardened machine costs the host at boot is the kernel's work for its namespaces: a user
namespace with its id map, a network namespace (its loopback, its per-net sysctl tables) and a veth pair (its
sysfs and sysctl entries). Measured on 2 cores that is about 1 ms of CPU per machine, and when a pool grows by
hundreds of nodes every node queues behind it. So the host keeps a reserve of *shells*: each is a user namespace
mapped to an id range of its own, the network namespace it owns with a veth pair whose ``eth0`` is in it (up,
IPv6 off) and whose host end is up but without an address or a route (the host sends nothing into it), and the IPC
and UTS namespaces the machine's root will have (``make_shell`` in the helper).

A machine booted with a shell skips that work: its init enters the shell's namespaces (checked to be a user
namespace of the host's and namespaces it owns, and that it maps the machine's range), adds the route to the
machine's address on the host end, and goes on as any other hardened init. The machine gets the shell's id
range. A shell is made by Shoal, nothing runs in it before its machine, and it is used once: it is what the
machine's own boot would have made.

The shells are held by a resident provisioner of their own (the *keeper*) as descriptors, which inits open as
``/proc/KEEPER/fd/N``; once a machine is up (or its boot failed) the keeper drops them. Shells are refilled one at
a time once no machine has been created for ``QUIET`` seconds, by the keeper at a lower priority, so a pool that
grows uses the reserve and never waits for it. Shells held when the server ends go with the keeper (it ends when
its pipe closes); their id ranges are freed at the next start (``IdRanges.retain_only``). Each shell holds about
0.3 MB of kernel memory; ``shoal serve --node-reserve N`` sets how many (0: none).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shoal.runtime.idranges import RANGE_SIZE, IdRange, IdRangeError, IdRanges
from shoal.runtime.native import MachineError
from shoal.runtime.native.provisioner import Provisioner

log = logging.getLogger(__name__)

QUIET = 0.5  # seconds without a machine created before the reserve is refilled
DROP_EVERY = 0.25  # seconds: used shells' descriptors are dropped in batches at least this often
RETRY_AFTER = 5.0  # seconds after a keeper failed before a new one is tried, doubled while it keeps failing
RETRY_MAX = 300.0
KEEPER_NICE = 10  # the keeper makes shells at a lower priority than the host's other work


@dataclass(frozen=True)
class Shell:
    """A reserved user and network namespace, with its veth pair's host end and id range."""

    base: int  # its id range's first host id
    veth: str  # the host end
    fds: tuple[int, ...]  # the keeper's descriptors of its user, network, IPC and UTS namespaces
    keeper: Provisioner

    @property
    def paths(self) -> list[str]:
        """Its namespaces (user, network, IPC, UTS) as paths the machine's init opens."""
        return [f"/proc/{self.keeper.pid}/fd/{fd}" for fd in self.fds]

    @property
    def holder(self) -> str:
        """Who its id range belongs to while it waits in the reserve."""
        return holder_of(self.veth)


def holder_of(veth: str) -> str:
    return f"reserve {veth}"


class NodeReserve:
    """Shells for one host's hardened machines (see the module docstring)."""

    def __init__(self, helper: Callable[[], str], ids: IdRanges, space: str, size: int) -> None:
        self.size = size
        self._helper = helper
        self._ids = ids
        self._space = space
        self._ready: list[Shell] = []
        self._used: list[Shell] = []  # taken; their descriptors are dropped by the keeper in the next batch
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._keeper: Provisioner | None = None
        self._last_demand = 0.0  # monotonic time of the last machine created (a boot in progress holds off refills)
        self._made = 0
        self._retry = RETRY_AFTER
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what machines' boots call

    def start(self) -> None:
        """Start refilling (after start-up's clean-up freed the ranges of an earlier server's shells)."""
        if self._thread is None and self.size > 0:
            self._thread = threading.Thread(target=self._run, name="node-reserve", daemon=True)
            self._thread.start()

    def demand(self) -> None:
        """A machine is being created: hold refills off until the host is quiet again."""
        self._last_demand = time.monotonic()

    def take(self, machine_id: str) -> tuple[Shell, IdRange] | None:
        """A ready shell for ``machine_id``, with its id range now the machine's (None: the reserve is empty)."""
        with self._lock:
            if not self._ready or not self._ready[-1].keeper.alive:
                return None
            shell = self._ready.pop()
        try:
            return shell, self._ids.transfer(shell.base, shell.holder, machine_id)
        except IdRangeError:  # (freed meanwhile: cannot happen while the keeper runs; the machine boots cold)
            self.used(shell)
            return None

    def used(self, shell: Shell) -> None:
        """The machine is up (it holds the namespaces itself), or its boot failed: the keeper may let go."""
        with self._lock:
            self._used.append(shell)

    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    def holders(self) -> set[str]:
        """Who the id ranges of the shells held now belong to (a clean-up must not free them)."""
        with self._lock:
            return {shell.holder for shell in self._ready}

    def stop(self) -> None:
        """Stop refilling and end the keeper: the shells it holds are gone, their ranges freed."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._discard()

    # ------------------------------------------------------------------ refilling

    def _run(self) -> None:
        while not self._stopped.is_set():
            wait = self._step()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def _step(self) -> float:
        """Drop used shells' descriptors, or make one more shell when the host is quiet: seconds to wait."""
        with self._lock:
            used, self._used = self._used, []
        keeper = self._keeper
        try:
            if used and keeper is not None and keeper.alive:
                keeper.drop([fd for s in used if s.keeper is keeper for fd in s.fds])
            quiet = QUIET - (time.monotonic() - self._last_demand)
            if quiet > 0:
                return min(quiet, DROP_EVERY)
            if self.ready() >= self.size:
                return DROP_EVERY
            self._make()
            self._retry = RETRY_AFTER
            return 0.0
        except (MachineError, IdRangeError, OSError) as exc:
            wait, self._retry = self._retry, min(self._retry * 2, RETRY_MAX)
            log.warning("the node reserve stops for %.0f s (machines boot without it meanwhile; --node-reserve 0 "
                        "turns it off): %s", wait, exc)
            self._discard()
            return wait

    def _make(self) -> None:
        keeper = self._keeper
        if keeper is None or not keeper.alive:
            self._discard()
            keeper = self._keeper = Provisioner(self._helper())
            os.setpriority(os.PRIO_PROCESS, keeper.pid, KEEPER_NICE)
        self._made += 1
        tag = f"{self._space}|{os.getpid()}|{self._made}|{time.time_ns()}"
        veth = "sr" + hashlib.sha256(tag.encode()).hexdigest()[:12]
        ids = self._ids.allocate(holder_of(veth))
        try:
            fds = keeper.shell(ids.base, RANGE_SIZE, veth)
        except BaseException:
            self._ids.release(ids.base, holder_of(veth))
            raise
        with self._lock:
            self._ready.append(Shell(ids.base, veth, fds, keeper))

    def _discard(self) -> None:
        """End the keeper (it failed, ended, or the reserve stops): its shells go with it, their ranges are freed."""
        with self._lock:
            left, self._ready = self._ready, []
        for shell in left:
            self._ids.release(shell.base, shell.holder)
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
