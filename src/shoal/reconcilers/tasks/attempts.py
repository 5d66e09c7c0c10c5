"""What the scheduler's stages share in this process: the attempts whose processes run, the queue their ends
arrive on, and the threads that wait for them.

Each attempt has an id; a task is assigned only while it has no attempt, so it never runs twice at once. The
waiter threads block on the host agent (``wait``) and put each end on :attr:`Attempts.done`; the loop records
them in batches. Nothing here is stored: after a restart, the recovery stage finds the attempts again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shoal.core.hosterrors import HostUnavailable
from shoal.domain.batch.outcomes import Finished
from shoal.domain.host import HostAgent

log = logging.getLogger(__name__)


class Attempts:
    def __init__(self, agent: HostAgent, workers: int) -> None:
        self.agent = agent
        self.waiters = ThreadPoolExecutor(workers, thread_name_prefix="task-wait")
        self.done: queue.Queue[Finished] = queue.Queue()
        self.lock = threading.Lock()
        self._running: dict[str, tuple[str, int]] = {}  # task key -> (attempt, pid)
        # Other processes of an attempt (a multi-instance task's coordination commands): killed with it.
        self._extra: dict[str, tuple[str, list[int]]] = {}
        # Whole-attempt runs on a waiter thread (multi-instance tasks): task key -> (attempt, set when it ended).
        self._runs: dict[str, tuple[str, threading.Event]] = {}
        self._live: set[tuple[str, str]] = set()  # (task key, attempt) of the runs going on, new and previous
        self._doomed: set[tuple[str, str]] = set()  # (task key, attempt) of runs killed: what they start dies
        self.nudge: Callable[[], Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.waiters.submit(fn, *args)

    def started(self, key: str, attempt: str, pid: int) -> None:
        with self.lock:
            self._running[key] = (attempt, pid)
            doomed = (key, attempt) in self._doomed
        if doomed:
            self._kill_pid(key, pid)

    def started_extra(self, key: str, attempt: str, pid: int) -> None:
        """Another process of the attempt (killed with it) started."""
        with self.lock:
            self._extra.setdefault(key, (attempt, []))[1].append(pid)
            doomed = (key, attempt) in self._doomed
        if doomed:
            self._kill_pid(key, pid)

    def ended_extra(self, key: str) -> None:
        """The attempt's other processes ended."""
        with self.lock:
            self._extra.pop(key, None)

    def begin_run(self, key: str, attempt: str) -> tuple[threading.Event, str | None, threading.Event | None]:
        """A run of this attempt starts: its own end event, and the attempt and end event of an earlier run of
        the same task that still goes on in this process (an attempt taken off, e.g. requeued, whose processes
        are not dead yet)."""
        ended = threading.Event()
        with self.lock:
            previous = self._runs.get(key)
            self._runs[key] = (attempt, ended)
            self._live.add((key, attempt))
        if previous is None or previous[1].is_set():
            return ended, None, None
        return ended, previous[0], previous[1]

    def end_run(self, key: str, attempt: str, ended: threading.Event) -> None:
        with self.lock:
            if self._runs.get(key, ("", ended))[0] == attempt:
                self._runs.pop(key, None)
            self._live.discard((key, attempt))
            self._doomed.discard((key, attempt))
        ended.set()

    def doom(self, key: str, attempt: str) -> None:
        """Kill this attempt's processes, and any it starts from now on (a run may be between two commands when
        it is killed: downloading files, or between its coordination and application commands)."""
        with self.lock:
            pids = [pid for a, pid in [self._running.get(key, ("", 0))] if a == attempt]
            extra = self._extra.get(key)
            pids += list(extra[1]) if extra is not None and extra[0] == attempt else []
            if pids or (key, attempt) in self._live:  # (an attempt that ended already is left alone)
                self._doomed.add((key, attempt))
        for pid in pids:
            self._kill_pid(key, pid)

    def running(self) -> dict[str, str]:
        """The attempts this process runs now: task key -> attempt id."""
        with self.lock:
            return {**{key: attempt for key, (attempt, _ended) in self._runs.items()},
                    **{key: attempt for key, (attempt, _pids) in self._extra.items()},
                    **{key: attempt for key, (attempt, _pid) in self._running.items()}}

    def finish(self, item: Finished) -> None:
        """An attempt ended: queue it for the next pass, and wake the loop."""
        self.done.put(item)
        if callable(self.nudge):
            self.nudge()

    def drain(self) -> list[Finished]:
        """The ends that arrived since the last pass."""
        batch: list[Finished] = []
        while True:
            try:
                batch.append(self.done.get_nowait())
            except queue.Empty:
                return batch

    def await_end(self, key: str, attempt: str, pid: int) -> Finished:
        """Wait for an attempt's process to end; it is no longer killable then."""
        try:
            result = self.agent.wait(pid) or {}
            # A command on a host that was lost (and has fenced itself since): the attempt is requeued.
            item = Finished(key, attempt, None, lost=True) if result.get("lost") else \
                Finished(key, attempt, result.get("exitCode"), bool(result.get("timedOut")), result.get("error"))
        except HostUnavailable:
            item = Finished(key, attempt, None, lost=True)
        except Exception as exc:
            item = Finished(key, attempt, None, error=str(exc))
        with self.lock:
            if self._running.get(key, (None, 0))[0] == attempt:
                self._running.pop(key, None)
            self._doomed.discard((key, attempt))
        return item

    def wait(self, key: str, attempt: str, pid: int) -> None:
        self.finish(self.await_end(key, attempt, pid))

    def kill(self, task_key: str) -> None:
        """Kill the attempt of this task that runs in this process, if any (its end arrives as usual). A run on
        a waiter thread is doomed: the commands it starts later are killed too."""
        with self.lock:
            run = self._runs.get(task_key)
            entry = self._running.get(task_key)
            pids = ([entry[1]] if entry is not None else []) + list(self._extra.get(task_key, ("", []))[1])
        if run is not None:
            self.doom(task_key, run[0])
        for pid in pids:
            self._kill_pid(task_key, pid)

    def _kill_pid(self, task_key: str, pid: int) -> None:
        try:
            self.agent.kill(pid)
        except Exception:
            log.exception("could not kill task %s", task_key)
