"""A node host's side of the cluster: this machine's host agent, served to the control plane.

``shoal host join`` starts a Ray node on the machine and one long-lived actor pinned to it whose body is
:class:`HostSide`. The actor holds the machine's own :class:`shoal.runtime.agent.HostAgent` and answers the
calls of ``domain/host.py`` with plain data; nothing here knows Ray (``raylink.py`` makes it an actor), so the
same body could be served by another transport.

What lives on this machine stays here: machines are recorded under the store directory and their inits run
in sessions of their own, so a restart of the actor (or of Ray) finds them again (:meth:`HostSide.__init__`
adopts them). Layers arrive over Shoal's HTTPS, content-addressed, into this host's layer store
(:meth:`HostSide.ensure_layers`); never through Ray's object store.

Spawned commands are watched here, one thread each, and their ends are kept in a numbered log that the control
plane reads with a cursor (:meth:`HostSide.ends`): one call per host and poll, whatever the number of running
tasks, and several API replicas can each follow the log without taking ends from one another.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from shoal.auth import at_rest
from shoal.core import hosterrors, hostfiles
from shoal.core.hosterrors import AgentError
from shoal.runtime.agent import HostAgent
from shoal.runtime.marketplace import Catalog
from shoal.runtime.sandbox import SandboxOptions
from shoal.runtime.transfers import Transfers

log = logging.getLogger(__name__)

# The calls the control plane may make through :meth:`HostSide.call` (the HostAgent protocol, nothing more).
CALLS = frozenset({
    "boot", "halt", "retire", "forget_logs", "status", "machine_ids", "usage_samples", "run", "spawn",
    "spawn_many", "kill",
    "alive", "read_exit", "clear_exit", "find_spawned", "make_dirs", "remove_path", "write_file",
    "download_resource", "upload_output", "list_node_files", "stat_node_file", "read_node_file",
    "delete_node_file", "prepare_replica", "delete_replicas", "gc_layers", "layer_inventory", "publish_endpoints",
    "publish_vm_networks",
})
ENDS_KEPT = 100_000  # ends kept for readers that fall behind (an end is also in its exit file)
SLOT_FILE = "host-slot"
HEAD_FILE = "head.json"  # where and how this host tells the head that it fenced itself (private: holds the token)
FENCED_FILE = "fenced"  # written by ``shoal host join`` before it stops the machines (join.py)
# Calls that start or change work in machines: refused once the host has fenced itself (its machines are being
# stopped; the Ray node may still pass calls to this actor for seconds after the raylet died).
FENCED_REFUSES = frozenset({"boot", "run", "spawn", "spawn_many", "make_dirs", "write_file", "download_resource",
                            "upload_output"})


def error_data(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data: the shared error types travel as themselves, anything else as AgentError."""
    if isinstance(exc, hosterrors.TransferError):
        return {"type": "TransferError", "code": exc.code, "message": exc.message, "category": exc.category,
                "details": [list(d) for d in exc.details]}
    if isinstance(exc, hostfiles.NodeFileError):
        return {"type": "NodeFileError", "kind": exc.kind, "message": str(exc)}
    for name, cls in (("HostUnavailable", hosterrors.HostUnavailable), ("AgentError", hosterrors.AgentError),
                      ("LayerError", hosterrors.LayerError)):
        if isinstance(exc, cls):
            return {"type": name, "args": [a if isinstance(a, (str, int, float)) else str(a) for a in exc.args]}
    return {"type": "AgentError", "args": [f"{type(exc).__name__}: {exc}"]}


def raise_error(data: dict[str, Any]) -> None:
    """The control plane's side of :func:`error_data`."""
    kind = data.get("type")
    if kind == "TransferError":
        raise hosterrors.TransferError(data["code"], data["message"], data.get("category", "usererror"),
                                       tuple(tuple(d) for d in data.get("details") or ()))
    if kind == "NodeFileError":
        raise hostfiles.NodeFileError(str(data["kind"]), str(data["message"]))
    classes: dict[Any, type[Exception]] = {"LayerError": hosterrors.LayerError,
                                           "HostUnavailable": hosterrors.HostUnavailable}
    raise classes.get(kind, AgentError)(*data.get("args") or ["the host agent failed"])


def _start_time(pid: int) -> int:
    """A process's start time (clock ticks since boot; 0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 0


class HostSide:
    """One host's agent, as the actor serves it. ``options``: what the host's operator chose at ``shoal host
    join`` (runtime, node network, address space, user namespaces, cgroups, cores, memory, overcommit)."""

    def __init__(self, name: str, store_dir: str, options: dict[str, Any]) -> None:
        self.name = name
        self.store = Path(store_dir)
        self.store.mkdir(parents=True, exist_ok=True)
        self.options = dict(options)
        sandbox = SandboxOptions(
            user_namespaces=bool(options.get("userNamespaces", True)),
            network=str(options.get("nodeNetwork", "isolated")),
            address_space=str(options.get("addressSpace", "10.224.0.0/12")),
            api_ports=tuple(int(p) for p in options.get("apiPorts") or ()),
            cgroups=bool(options.get("cgroups", True)),
            api_forward=options.get("apiForward"),
            node_reserve=int(options.get("nodeReserve") or 0))
        self.agent = HostAgent(self.store, Catalog.load(None), runtime=options.get("runtime"),
                               sandbox_options=sandbox, hide=(str(self.store),))
        self.adopted = self.agent.adopt()  # machines that outlived the last agent process
        self.started = time.time()
        self._ends: list[tuple[int, int, dict[str, Any]]] = []  # (sequence, pid, result)
        self._seq = 0
        self._cond = threading.Condition()
        self._routes: dict[str, str] = {}
        self.config: dict[str, Any] = {}
        log.info("host %s: agent up with %d machines adopted", name, len(self.adopted))

    # --- what the host is ----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        slot = self._read_slot()
        return {"name": self.name, "pid": os.getpid(), "started": self.started, "slot": slot,
                "cores": int(self.options.get("cores") or os.cpu_count() or 1),
                "memoryMb": int(self.options.get("memoryMb") or _memory_mb()),
                "overcommit": self.options.get("overcommit"), "storeDir": str(self.store),
                "address": self.options.get("address"), "machines": self.agent.machine_ids(),
                "isolation": self.agent.isolation_level, "gateway": self.agent.gateway, "fenced": self.fenced()}

    def fenced(self) -> bool:
        """Whether ``shoal host join`` has fenced this host (its machines are stopped or being stopped)."""
        return (self.store / FENCED_FILE).exists()

    def _read_slot(self) -> int | None:
        try:
            return int((self.store / SLOT_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def claim_slot(self, slot: int) -> int:
        """This host's number in the cluster, given by the control plane once and kept (first claim wins)."""
        found = self._read_slot()
        if found is not None:
            return found
        (self.store / SLOT_FILE).write_text(f"{int(slot)}\n")
        return int(slot)

    def configure(self, config: dict[str, Any]) -> None:
        """Where this host's nodes reach Shoal, and the CA that signs its certificate (from the control plane)."""
        if config == self.config:
            return
        ca = self.store / "cluster-ca.pem"
        ca.write_text(str(config["caPem"]))
        if config.get("fenceUrl"):  # for ``shoal host join``, which tells the head when it fences (join.py)
            head = self.store / HEAD_FILE
            at_rest.create_private_file(head)
            head.write_text(json.dumps({"host": self.name, "fenceUrl": config["fenceUrl"],
                                        "clusterToken": config["clusterToken"]}))
        node_url = str(config["nodeBaseUrl"])
        self.agent.download_root = str(config["baseUrl"])
        self.agent.transfers = Transfers(self.agent.machines.run, str(config["baseUrl"]), lambda: node_url,
                                         ca_bundle=ca)
        self.config = dict(config)

    # --- the protocol's calls -------------------------------------------------------------------------------
    def call(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """One HostAgent call: ``{"value": ...}`` or ``{"error": ...}`` (plain data either way)."""
        if method not in CALLS:
            return {"error": {"type": "AgentError", "args": [f"the host agent has no call {method!r}"]}}
        fenced = {"error": {"type": "HostUnavailable", "args": [f"the node host {self.name} fenced itself"]}}
        if method in FENCED_REFUSES and self.fenced():
            return fenced
        try:
            value = getattr(self.agent, method)(*args, **kwargs)
        except Exception as exc:  # every failure goes back as data; the actor stays up
            # A call the fence cut short (its machine vanished under it) is the host's loss, not the work's.
            return fenced if method in FENCED_REFUSES and self.fenced() else {"error": error_data(exc)}
        if method == "spawn":
            return self._watch(int(value))
        if method == "spawn_many":  # each command's answer as spawn's, or its own error
            cut = any(isinstance(found, Exception) for found in value) and self.fenced()
            return {"value": [self._watch(found) if not isinstance(found, Exception)
                              else fenced if cut else {"error": error_data(found)} for found in value]}
        return {"value": value}

    def _watch(self, pid: int) -> dict[str, Any]:
        """A spawned process, watched until it ends (see :meth:`ends`): its answer, pid and start time. The start
        time names it with its pid (a pid is reused; the pair is not); only this actor's watcher reaps it, so it
        is still there to be read."""
        started = _start_time(pid)
        threading.Thread(target=self._await, args=(pid, started), daemon=True, name=f"wait-{pid}").start()
        return {"value": pid, "started": started}

    def _await(self, pid: int, started: int) -> None:
        try:
            result: dict[str, Any] = self.agent.wait(pid) or {}
        except Exception as exc:
            result = {"exitCode": None, "error": str(exc)}
        if self.fenced():
            # Killed by the host's fence, not by its task: the attempt is lost (and requeued), not failed.
            result = {"exitCode": None, "lost": True, "fenced": True,
                      "error": f"the node host {self.name} fenced itself"}
        with self._cond:
            self._seq += 1
            self._ends.append((self._seq, pid, {**result, "started": started}))
            if len(self._ends) > ENDS_KEPT:
                del self._ends[: len(self._ends) - ENDS_KEPT]
            self._cond.notify_all()

    def ends(self, after: int, timeout: float = 1.0) -> dict[str, Any]:
        """The ends of spawned commands numbered after ``after`` (waiting up to ``timeout`` for one):
        ``{"epoch": this process's start, "last": n, "ends": [[seq, pid, result], ...]}``."""
        deadline = time.monotonic() + max(0.0, min(timeout, 5.0))
        with self._cond:
            while not (self._ends and self._ends[-1][0] > after):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            found = [[s, p, r] for s, p, r in self._ends if s > after]
            return {"epoch": self.started, "last": self._seq, "ends": found}

    # --- layers, over HTTPS from the control plane ----------------------------------------------------------
    def ensure_layers(self, digests: list[str]) -> list[str]:
        """Fetch the layers this host lacks (content-addressed: a layer is checked against its digest before
        it is kept); returns those fetched."""
        fetched = []
        for digest in dict.fromkeys(digests):
            if self.agent.layers.has(digest):
                continue
            self._fetch_layer(digest)
            fetched.append(digest)
        return fetched

    def _fetch_layer(self, digest: str) -> None:
        if not self.config:
            raise AgentError(f"host {self.name} is not configured by a control plane yet")
        url = f"{self.config['layerUrl'].rstrip('/')}/{digest}"
        context = ssl.create_default_context(cafile=str(self.store / "cluster-ca.pem"))
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.config['clusterToken']}"})
        tmp = Path(tempfile.mkdtemp(dir=self.store))
        try:
            target = tmp / "layer"
            try:
                with urllib.request.urlopen(request, context=context, timeout=60) as response, \
                        open(target, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except OSError as exc:
                raise AgentError(f"host {self.name} could not fetch layer {digest[:12]} from {url}: {exc}") from exc
            self.agent.layers.import_tar(target, expected_digest=digest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- routes to other hosts' nodes ----------------------------------------------------------------------
    def set_routes(self, routes: dict[str, str]) -> int:
        """Reach every node address of another host through that host: ``{address: via}``, all of them (the
        rest are withdrawn). One ``ip -batch`` for all the changes, whatever their number."""
        gone = [a for a in self._routes if a not in routes]
        return self.change_routes({a: via for a, via in routes.items() if self._routes.get(a) != via}, gone)

    def change_routes(self, changed: dict[str, str], gone: list[str]) -> int:
        """Only what changed since the last call (the control plane keeps what it sent): routes to add or
        move, and addresses to withdraw. A pool growing over several hosts then costs each push its new nodes,
        not every node of the cluster."""
        import subprocess

        gone = [a for a in gone if a in self._routes]
        changed = {a: via for a, via in changed.items() if self._routes.get(a) != via}
        if not gone and not changed:
            return 0
        script = "".join(f"route del {a}/32\n" for a in gone) + \
            "".join(f"route replace {a}/32 via {via}\n" for a, via in changed.items())
        done = subprocess.run(["ip", "-force", "-batch", "-"], input=script, capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("host %s: some routes to other hosts' nodes failed: %s", self.name, done.stderr.strip()[:500])
        for address in gone:
            self._routes.pop(address, None)
        self._routes.update(changed)
        return len(gone) + len(changed)

    def machine_addresses(self) -> dict[str, str]:
        """The network address of every machine on this host (from its record)."""
        records: Any = getattr(self.agent.machines, "records", None)
        found: dict[str, str] = {}
        for machine_id in self.agent.machine_ids():
            record = records.read(machine_id) if records is not None else None
            network = ((record or {}).get("spec") or {}).get("network") or {}
            if network.get("address"):
                found[machine_id] = str(network["address"])
        return found

    def fence(self) -> list[str]:
        """Stop every machine of this host (it lost the control plane): what was stopped."""
        stopped = []
        for machine_id in self.agent.machine_ids():
            try:
                self.agent.halt(machine_id, keep_temp=True)
                stopped.append(machine_id)
            except Exception:
                log.exception("host %s: could not stop machine %s", self.name, machine_id)
        return stopped
