"""``shoal host join``: make this machine a node host of a Shoal cluster, and watch over it.

The process stays in the foreground as the host's supervisor (run it under systemd in production):

1. it starts a Ray node (``ray start --block``) that joins the head, with the custom resources ``shoal_host``
   and ``host_<name>``;
2. it starts this host's agent actor, pinned to that node (``raylink.start_agent``), and waits for it to answer;
   then it leaves Ray (it is not a driver: a driver dies with the head, and the supervisor must outlive it);
3. it **fences** the host: when the Ray node stops (killed, crashed, or stopped by the operator), or the head
   has been unreachable for ``fence_seconds`` (default 3 s), it stops every machine of the host at once. The
   control plane requeues a lost host's tasks only after the same time, so a task never runs on a lost host
   and elsewhere at once.

Stopping the supervisor (SIGTERM, Ctrl-C) stops the machines too, for the same reason: once the host leaves
Ray its tasks are run again elsewhere. A restart of the agent actor alone (Ray restarts it in place) keeps the
machines, and the new agent adopts them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.cluster import raylink
from shoal.cluster.hostside import FENCED_FILE, HEAD_FILE

log = logging.getLogger(__name__)
CHECK_EVERY = 0.25  # seconds between checks of the Ray node and the head
START_ATTEMPTS = 3
FENCE_NOTICE_TIMEOUT = 5.0  # seconds: telling the head that this host fenced itself


class RayNodeFailed(Exception):
    """The host's Ray node exited."""


@dataclass
class JoinOptions:
    ray_address: str
    name: str
    store_dir: Path
    fence_seconds: float = 3.0
    agent: dict[str, Any] = field(default_factory=dict)  # HostSide options (runtime, network, cores, ...)
    node_ip: str | None = None
    temp_dir: Path | None = None


def ray_executable() -> str:
    found = Path(sys.executable).parent / "ray"
    return str(found) if found.exists() else "ray"


def ray_start_argv(opts: JoinOptions) -> list[str]:
    resources = {raylink.HOST_RESOURCE: 1, raylink.host_resource(opts.name): 1}
    argv = [ray_executable(), "start", "--address", opts.ray_address, "--num-cpus", "0", "--block",
            "--resources", json.dumps(resources), "--disable-usage-stats"]
    if opts.node_ip:
        argv += ["--node-ip-address", opts.node_ip]
    return argv


def _creation_error(exc: BaseException) -> str:
    """What the agent's constructor failed with (Ray wraps it in its own text)."""
    text = str(exc.__cause__ or exc)
    lines = [line.strip() for line in text.splitlines() if "Error:" in line and "ray." not in line]
    return lines[-1] if lines else text.splitlines()[0] if text else "the agent did not answer"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (the raylet killed, not yet reaped by ray start) is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def head_reachable(address: str, timeout: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def fence(store_dir: Path) -> int:
    """Stop every machine of the host's store (without the agent: it may be gone). Returns how many."""
    from shoal.cluster.hostside import FENCED_FILE
    from shoal.runtime.machines import detect_runtime

    # Said first: the agent reports what the fence kills as lost (requeued), not as failed tasks.
    (store_dir / FENCED_FILE).write_text(f"{time.time()}\n")
    # Then to the head, while the machines are killed: it counts the host lost from now, without waiting for Ray's
    # health checks, and requeues the tasks only the fence time later (the kill below takes far less). Told
    # before the kill, the head writes the nodes unusable before thousands of machines dying load the host.
    notice = threading.Thread(target=tell_head, args=(store_dir,), daemon=True, name="fenced")
    notice.start()
    runtime = detect_runtime(store_dir, hide=[str(store_dir)], probe=False)
    machines = runtime.list()
    # First every init at once (its pid namespace dies with it, and every task in it), then the orderly clean-up:
    # the control plane may requeue the tasks as soon as the fence time has passed.
    init_pid = getattr(runtime, "init_pid", None)
    for machine_id in machines:
        pid = init_pid(machine_id) if callable(init_pid) else None
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    stopped = 0
    with lowest_priority():  # nothing runs any more: the clean-up (long for thousands of machines) is not urgent
        for machine_id in machines:
            try:
                runtime.destroy(machine_id, keep_temp=True)
                stopped += 1
            except Exception:
                log.exception("fence: could not stop machine %s", machine_id)
    notice.join(FENCE_NOTICE_TIMEOUT)
    return stopped


@contextlib.contextmanager
def lowest_priority() -> Iterator[None]:
    """Run the calling thread (only) at the lowest CPU priority, then as before."""
    thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, thread)
    os.setpriority(os.PRIO_PROCESS, thread, 19)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # raising it back needs CAP_SYS_NICE (the supervisor runs as root)
            os.setpriority(os.PRIO_PROCESS, thread, before)


def tell_head(store_dir: Path) -> bool:
    """Tell the head that this host fenced itself (best effort: a head that cannot be reached learns it from
    Ray). Whether the head took it."""
    try:
        head = json.loads((store_dir / HEAD_FILE).read_text())
        request = urllib.request.Request(
            str(head["fenceUrl"]), data=json.dumps({"host": head["host"]}).encode(), method="POST",
            headers={"Authorization": f"Bearer {head['clusterToken']}", "Content-Type": "application/json"})
        context = ssl.create_default_context(cafile=str(store_dir / "cluster-ca.pem"))
        with urllib.request.urlopen(request, context=context, timeout=FENCE_NOTICE_TIMEOUT) as response:
            return bool(json.loads(response.read() or b"{}").get("lost"))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("could not tell the head that this host fenced itself: %s", exc)
        return False


class Supervisor:
    def __init__(self, opts: JoinOptions, say: Callable[[str], None] = print) -> None:
        self.opts, self.say = opts, say
        self.ray: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def start_ray(self) -> None:
        env = {**os.environ, **raylink.QUIET_ENV}
        log_path = self.opts.store_dir / "ray-start.log"
        self.opts.store_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 (the child writes to it for its lifetime)
        # The Ray node gets a session of its own: the operator's Ctrl-C reaches the supervisor, which stops it.
        self.ray = subprocess.Popen(ray_start_argv(self.opts), stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)

    def start_agent(self, timeout: float = 120.0) -> dict[str, Any]:
        """Start (or find) the agent actor and wait for it to answer. A child process does it: a Ray driver
        takes over the process's signals and dies with the head, and the supervisor must do neither."""
        argv = [sys.executable, "-m", "shoal.cluster.join", json.dumps({
            "rayAddress": self.opts.ray_address, "name": self.opts.name, "storeDir": str(self.opts.store_dir),
            "agent": self.opts.agent, "timeout": timeout})]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while child.poll() is None:
            if self.ray is not None and self.ray.poll() is not None:
                child.kill()
                child.wait()
                self._check_ray()
            if self._stopping:
                child.kill()
                child.wait()
                raise RuntimeError("stopped on request")
            time.sleep(CHECK_EVERY)
        out, err = child.communicate()
        self._check_ray()
        if child.returncode != 0:
            raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else f"exit status {child.returncode}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def _check_ray(self) -> None:
        if self.ray is not None and self.ray.poll() is not None:
            raise RayNodeFailed(f"the Ray node exited ({self.ray.returncode}); see "
                                f"{self.opts.store_dir / 'ray-start.log'}")

    def raylet(self) -> int | None:
        """The pid of this host's raylet (a descendant of ``ray start``): watched directly, since ``ray start``
        itself notices a dead raylet only seconds later."""
        if self.ray is None:
            return None
        todo, seen = [self.ray.pid], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            try:
                if b"/raylet" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                    return pid
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return None

    def watch(self) -> int:
        """Fence the host when its Ray node stops or the head is unreachable for ``fence_seconds``."""
        unreachable_since: float | None = None
        fenced = False
        raylet = self.raylet()
        while True:
            if self._stopping:
                return self._stop("stopping on request")
            if self.ray is not None and self.ray.poll() is not None:
                return self._stop(f"the Ray node stopped ({self.ray.returncode})")
            if raylet is not None and not _alive(raylet):
                return self._stop("the raylet died")
            if head_reachable(self.opts.ray_address):
                if fenced:  # the head is back and this Ray node lives on: machines may run here again
                    (self.opts.store_dir / FENCED_FILE).unlink(missing_ok=True)
                unreachable_since, fenced = None, False
            else:
                unreachable_since = unreachable_since or time.monotonic()
                if not fenced and time.monotonic() - unreachable_since >= self.opts.fence_seconds:
                    stopped = fence(self.opts.store_dir)
                    fenced = True
                    self.say(f"host {self.opts.name}: the head has been unreachable for "
                             f"{self.opts.fence_seconds:g} s: fenced ({stopped} machines stopped)")
            time.sleep(CHECK_EVERY)

    def _stop(self, why: str) -> int:
        stopped = fence(self.opts.store_dir)
        self.say(f"host {self.opts.name}: {why}: fenced ({stopped} machines stopped)")
        if self.ray is not None and self.ray.poll() is None:
            os.killpg(self.ray.pid, signal.SIGTERM)
            try:
                self.ray.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.ray.pid, signal.SIGKILL)
        return 0 if self._stopping else 1

    def request_stop(self, *_: Any) -> None:
        self._stopping = True


def run(opts: JoinOptions, say: Callable[[str], None] = print) -> int:
    opts.store_dir.mkdir(parents=True, exist_ok=True)
    (opts.store_dir / FENCED_FILE).unlink(missing_ok=True)  # a new start: the host runs machines again
    supervisor = Supervisor(opts, say)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, supervisor.request_stop)
    for attempt in range(1, START_ATTEMPTS + 1):
        supervisor.start_ray()
        try:
            info = supervisor.start_agent()
            break
        except RayNodeFailed as exc:  # e.g. the raylet timed out starting on a busy machine: try again
            if attempt == START_ATTEMPTS:
                say(f"host {opts.name}: {exc}")
                return supervisor._stop("the Ray node did not start")
            say(f"host {opts.name}: {exc}; starting it again")
        except Exception as exc:
            say(f"host {opts.name}: could not start its agent: {exc}")
            return supervisor._stop("the agent did not start")
    say(f"host {opts.name} joined {opts.ray_address}: {info['cores']} cores, {info['memoryMb']} MB, "
        f"{len(info['machines'])} machines adopted; fencing after {opts.fence_seconds:g} s without the head")
    (opts.store_dir / "host.json").write_text(json.dumps({"name": opts.name, "pid": os.getpid(),
                                                          "rayAddress": opts.ray_address}) + "\n")
    return supervisor.watch()


def _create_agent(ray_address: str, name: str, store_dir: str, agent: dict[str, Any], timeout: float) -> dict[str, Any]:
    import ray

    deadline = time.monotonic() + timeout
    while True:
        try:
            raylink.connect(ray_address)
            break
        except Exception as exc:  # the head is not there yet, or this host's node is still joining
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach the Ray head at {ray_address}: {exc}") from exc
            time.sleep(1.0)
    try:
        handle = raylink.start_agent(name, store_dir, agent)
        while True:
            try:
                return dict(raylink.call(handle, "info", timeout=5.0))
            except raylink.HostUnreachable as exc:
                if "creation task" in str(exc.__cause__) or time.monotonic() > deadline:
                    raise RuntimeError(_creation_error(exc)) from exc
    finally:
        ray.shutdown()


if __name__ == "__main__":  # the supervisor's child that starts the agent (see Supervisor.start_agent)
    _spec = json.loads(sys.argv[1])
    try:
        _info = _create_agent(_spec["rayAddress"], _spec["name"], _spec["storeDir"], _spec["agent"],
                              float(_spec["timeout"]))
    except Exception as _exc:
        print(f"{_exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(_info))
