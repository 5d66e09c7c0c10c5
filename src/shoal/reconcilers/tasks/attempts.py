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
        self.nudge: Callable[[], Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.waiters.submit(fn, *args)

    def started(self, key: str, attempt: str, pid: int) -> None:
        with self.lock:
            self._running[key] = (attempt, pid)

    def started_extra(self, key: str, attempt: str, pid: int) -> None:
        """Another process of the attempt (killed with it) started."""
        with self.lock:
            self._extra.setdefault(key, (attempt, []))[1].append(pid)

    def ended_extra(self, key: str) -> None:
        """The attempt's other processes ended."""
        with self.lock:
            self._extra.pop(key, None)

    def running(self) -> dict[str, str]:
        """The attempts this process runs now: task key -> attempt id."""
        with self.lock:
            return {**{key: attempt for key, (attempt, _pids) in self._extra.items()},
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
        return item

    def wait(self, key: str, attempt: str, pid: int) -> None:
        self.finish(self.await_end(key, attempt, pid))

    def kill(self, task_key: str) -> None:
        """Kill the attempt of this task that runs in this process, if any (its end arrives as usual)."""
        with self.lock:
            entry = self._running.get(task_key)
            pids = ([entry[1]] if entry is not None else []) + list(self._extra.get(task_key, ("", []))[1])
        for pid in pids:
            try:
                self.agent.kill(pid)
            except Exception:
                log.exception("could not kill task %s", task_key)
