"""The control plane's host agent when node hosts run on Ray: one object with the calls of ``domain/host.py``
that places pool nodes on hosts and sends every later call about a machine to the host that holds it.

- **What stays on the head.** Disks, captures, imports and exports, the layer store that images are made of,
  and VMs run on the head's own host agent (``local``), as on a single host. Pool nodes go to the node hosts.
- **Placement.** A pool's nodes are spread over the hosts that are up and have room: each host declares its
  cores and memory, and an operator overcommit factor bounds what it takes (none: no bound, as on one host).
  The host with the fewest nodes of the pool, then the lowest load, gets the next one.
- **Layers** reach a host before its first node needs them: the host fetches them over Shoal's HTTPS from the
  head (``/_shoal/cluster/layers/{digest}``), checks their digest and caches them.
- **Process ids** of remote commands carry their host's slot: ``slot << 22 | pid`` (Linux pids fit in 22 bits);
  slot 0 is the head. A slot is given to a host once and kept on its disk.
- **Ends of commands** come from each host's numbered log of ends (one long poll per host, see ``hostside.py``).
- **Routes.** Each host learns a ``/32`` route to every node of the other hosts, through that host's address, so
  the nodes of a pool reach each other whichever host they run on.
- **Host loss.** Ray's health checks declare a host dead (about 3 s with the settings of ``raylink.py``); its
  machines then report ``lost`` (``lost_machines``), and the control plane marks their nodes unusable. A host
  that lost the head fences itself after ``fence_seconds`` (``shoal host join`` stops its machines); only after
  that much time does a waiting task attempt end as *lost* and get requeued, so a task never runs twice at once.
  When the host comes back, its machines are adopted again; those nobody wants any more are removed by the
  machines loop, as strays are on one host.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.cluster import raylink
from shoal.cluster.hostside import raise_error
from shoal.core.hosterrors import AgentError, HostUnavailable
from shoal.core.hostfiles import NodeFileError

log = logging.getLogger(__name__)

PID_BITS = 22
PID_MASK = (1 << PID_BITS) - 1
DISCOVER_EVERY = 2.0  # seconds between looks for new hosts
TICK = 0.25  # seconds between checks of the hosts' health


class Machines(dict[str, dict[str, Any]]):
    """A host's machines: id -> {"pool", "cores", "memoryMb", "address"}, with the sums placement reads kept up
    to date as machines come and go. Placement then costs the same whatever a host holds; summing the machines
    for each new node made a pool's growth quadratic (a third of the head's CPU at 4,000 nodes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.cores = 0
        self.memory_mb = 0
        self.per_pool: dict[str, int] = {}
        self.update(*args, **kwargs)

    def _count(self, machine: dict[str, Any], sign: int) -> None:
        self.cores += sign * int(machine.get("cores") or 0)
        self.memory_mb += sign * int(machine.get("memoryMb") or 0)
        pool = machine.get("pool")
        if pool is not None:
            left = self.per_pool.get(pool, 0) + sign
            if left > 0:
                self.per_pool[pool] = left
            else:
                self.per_pool.pop(pool, None)

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        if key in self:
            self._count(self[key], -1)
        super().__setitem__(key, value)
        self._count(value, 1)

    def __delitem__(self, key: str) -> None:
        self._count(self[key], -1)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            machine = super().pop(key)
            self._count(machine, -1)
            return machine
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, dict[str, Any]]:
        key, machine = super().popitem()
        self._count(machine, -1)
        return key, machine

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        super().clear()
        self.cores, self.memory_mb, self.per_pool = 0, 0, {}


@dataclass
class Host:
    name: str
    handle: Any
    slot: int
    cores: int
    memory_mb: int
    overcommit: float | None
    address: str | None
    state: str = "up"  # "up" | "lost"
    lost_at: float = 0.0  # monotonic time the host was declared lost
    epoch: float = 0.0  # when its agent process started (a restart changes it)
    cursor: int = 0  # the last end of a command read from its log
    machines: Machines = field(default_factory=Machines)  # id -> {"pool", "cores", "memoryMb", "address"}


@dataclass
class _Wait:
    started: int  # the process's start time on its host: with the pid, what names the process
    event: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    machine: str = ""
    exit_key: str = ""


class ClusterHostAgent:
    """``local``: the head's own host agent (runtime.agent.HostAgent); ``config``: what hosts are told (baseUrl,
    nodeBaseUrl, caPem, layerUrl, clusterToken)."""

    def __init__(self, local: Any, ray_address: str, config: Callable[[], dict[str, Any]], *,
                 fence_seconds: float = 3.0) -> None:
        self.local = local
        self.ray_address = ray_address
        self._config = config  # read at start (the TLS files exist by then)
        self.config: dict[str, Any] = {}
        self.fence_seconds = fence_seconds
        self.hosts: dict[str, Host] = {}
        self._subnet_filters: list[dict[str, Any]] = []  # published to every host (publish_vm_networks)
        self._by_slot: dict[int, Host] = {}
        self._where: dict[str, Host] = {}  # machine id -> host
        self._waits: dict[int, _Wait] = {}
        # Ends read before their spawn call returned, by (global pid, start time): an end of an earlier process
        # that had the same pid never matches.
        self._early: dict[tuple[int, int], dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._routes_dirty = threading.Event()
        # Node routes: the table last pushed (node address -> (its host, that host's address)), the hosts that
        # hold it, and how often each host was asked to get its whole table again (see _push_routes).
        self._pushed_routes: dict[str, tuple[str, str]] = {}
        self._in_sync: set[str] = set()
        self._resyncs: dict[str, int] = {}
        self._push_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.events: list[tuple[float, str, str]] = []  # (wall time, host, what): for tests and the CLI
        self.on_change: Callable[[], Any] | None = None  # wakes the host-loss loop

    # --- lifetime -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.config = self._config()
        deadline = time.monotonic() + 60.0
        while True:
            try:
                raylink.connect(self.ray_address)
                break
            except Exception as exc:  # the head is not up yet
                if time.monotonic() > deadline:
                    raise AgentError(f"cannot reach the Ray head at {self.ray_address}: {exc}. Start it first "
                                     "(ray start --head, see the README) or check --ray-address.") from exc
                time.sleep(1.0)
        self._discover()
        monitor = threading.Thread(target=self._monitor, daemon=True, name="cluster-hosts")
        monitor.start()
        self._threads.append(monitor)

    def stop(self) -> None:
        self._stop.set()

    def _event(self, host: str, what: str) -> None:
        log.warning("cluster host %s: %s", host, what)
        with self._lock:
            self.events.append((time.time(), host, what))
            del self.events[:-1000]

    def _discover(self) -> None:
        for name in raylink.host_names():
            if name in self.hosts:
                continue
            try:
                handle = raylink.agent(name)
                info = raylink.call(handle, "info", timeout=10.0)
            except (raylink.HostUnreachable, ValueError) as exc:
                log.info("cluster host %s not ready yet: %s", name, exc)
                continue
            slot = info.get("slot") or self._free_slot(name)
            slot = int(raylink.call(handle, "claim_slot", slot, timeout=10.0))
            raylink.reserve(f"slot-{slot}", name)
            raylink.call(handle, "configure", self.config, timeout=10.0)
            host = Host(name, handle, slot, int(info["cores"]), int(info["memoryMb"]),
                        float(info["overcommit"]) if info.get("overcommit") else None, info.get("address"),
                        epoch=float(info["started"]))
            addresses = raylink.call(handle, "machine_addresses", timeout=10.0)
            for machine_id in info.get("machines") or []:
                host.machines[machine_id] = {"pool": None, "cores": 0, "address": addresses.get(machine_id)}
            with self._lock:
                self.hosts[name] = host
                self._resync(name)
                self._by_slot[slot] = host
                for machine_id in host.machines:
                    self._where[machine_id] = host
            self._event(name, f"joined (slot {slot}, {host.cores} cores, {len(host.machines)} machines)")
            self._push_filters([host])
            poller = threading.Thread(target=self._poll_ends, args=(host,), daemon=True, name=f"ends-{name}")
            poller.start()
            self._threads.append(poller)
        self._push_routes()

    def _free_slot(self, name: str) -> int:
        with self._lock:
            used = set(self._by_slot)
        slot = 1
        while True:
            if slot not in used and raylink.reserve(f"slot-{slot}", name) == name:
                return slot
            slot += 1

    def _monitor(self) -> None:
        last_discovery = time.monotonic()
        while not self._stop.wait(TICK):
            try:
                if time.monotonic() - last_discovery > DISCOVER_EVERY:
                    last_discovery = time.monotonic()
                    self._discover()
                if self._routes_dirty.is_set():
                    self._routes_dirty.clear()
                    self._push_routes()
                alive = raylink.live_hosts()
                for host in list(self.hosts.values()):
                    if host.state == "up" and host.name not in alive:
                        with self._lock:
                            host.state, host.lost_at = "lost", time.monotonic()
                        self._event(host.name, f"lost ({len(host.machines)} machines)")
                    elif host.state == "lost" and host.name in alive:
                        self._rejoin(host)
                if any(h.state != "up" for h in self.hosts.values()) and callable(self.on_change):
                    self.on_change()  # a lost host: the host-loss loop runs at once, and again at the fence time
            except Exception:
                log.exception("checking the cluster's hosts failed")

    def host_fenced(self, name: str) -> bool:
        """The host ``name`` says (over the API) that it fenced itself: its machines are killed. Whether it is one
        of this cluster's hosts."""
        host = self.hosts.get(name)
        if host is None:
            return False
        self._fenced(host)
        return True

    def _fenced(self, host: Host) -> None:
        """The host says it fenced itself (its raylet died, or it lost the head): it is lost from now, before
        Ray declares its node dead, so no more work goes to its nodes. Its tasks are requeued after the fence
        time as for any lost host (those the fence killed are reported lost by the host itself)."""
        with self._lock:
            if host.state != "up":
                return
            host.state, host.lost_at = "lost", time.monotonic()
        self._event(host.name, f"fenced itself ({len(host.machines)} machines)")
        if callable(self.on_change):
            self.on_change()

    def _rejoin(self, host: Host) -> None:
        """A lost host is back: adopt what it still holds."""
        try:
            info = raylink.call(host.handle, "info", timeout=5.0)
            if info.get("fenced"):
                return  # its Ray node lingers, but the host has stopped its machines: not back yet
            raylink.call(host.handle, "configure", self.config, timeout=5.0)
            addresses = raylink.call(host.handle, "machine_addresses", timeout=5.0)
        except raylink.HostUnreachable:
            return
        with self._lock:
            for machine_id in list(host.machines):
                if machine_id not in (info.get("machines") or []):
                    host.machines.pop(machine_id, None)
                    self._where.pop(machine_id, None)
            for machine_id in info.get("machines") or []:
                host.machines.setdefault(machine_id, {"pool": None, "cores": 0, "address": addresses.get(machine_id)})
                self._where[machine_id] = host
            host.state, host.epoch, host.cursor = "up", float(info["started"]), 0
            self._resync(host.name)
        self._event(host.name, f"back ({len(host.machines)} machines adopted)")
        self._push_filters([host])
        self._push_routes()

    def _poll_ends(self, host: Host) -> None:
        while not self._stop.is_set():
            if host.state != "up":
                self._stop.wait(TICK)
                continue
            try:
                got = raylink.call(host.handle, "ends", host.cursor, 1.0, timeout=10.0)
            except raylink.HostUnreachable:
                self._stop.wait(TICK)
                continue
            if float(got["epoch"]) != host.epoch:
                host.epoch, host.cursor = float(got["epoch"]), 0
                self._resync(host.name)  # a new agent process: its whole table again
                self._routes_dirty.set()
                continue
            if [result.pop("fenced") for _, _, result in got["ends"] if "fenced" in result]:
                self._fenced(host)
            for seq, pid, result in got["ends"]:
                host.cursor = max(host.cursor, int(seq))
                self._ended((host.slot << PID_BITS) | int(pid), result)

    def _ended(self, gpid: int, result: dict[str, Any]) -> None:
        started = int(result.pop("started", 0))
        with self._lock:
            wait = self._waits.get(gpid)
            if wait is None or wait.started != started:
                self._early[(gpid, started)] = result
                if len(self._early) > 10_000:
                    self._early.pop(next(iter(self._early)))
                return
            wait.result = result
        wait.event.set()

    # --- helpers --------------------------------------------------------------------------------------------
    def _host(self, machine_id: str) -> Host | None:
        """The host that holds a machine (None: the head's own). A machine this server did not boot (another
        replica did, or it was booted before a restart) is looked for on the hosts."""
        with self._lock:
            found = self._where.get(machine_id)
        if found is not None or self.local.status(machine_id) != "missing":
            return found
        for host in self._up():
            try:
                held = raylink.call(host.handle, "call", "machine_ids", [], {}, timeout=10.0).get("value") or []
            except raylink.HostUnreachable:
                continue
            with self._lock:
                for other in held:
                    self._where.setdefault(other, host)
                    host.machines.setdefault(other, {"pool": None, "cores": 0, "address": None})
                if machine_id in held:
                    return host
        return None

    def _call(self, host: Host, method: str, *args: Any, wait: float | None = 60.0, whole: bool = False,
              **kwargs: Any) -> Any:
        """One protocol call on a host (``wait``: how long to wait for its answer; ``whole``: the answer with its
        extra fields, not only its value; kwargs are the call's)."""
        if host.state != "up":
            raise HostUnavailable(f"the node host {host.name} is lost; its machines are unreachable")
        try:
            answer = raylink.call(host.handle, "call", method, list(args), kwargs, timeout=wait)
        except raylink.HostUnreachable as exc:
            raise HostUnavailable(f"the node host {host.name} did not answer: {exc}") from exc
        if "error" in answer:
            if answer["error"].get("type") == "HostUnavailable":
                self._fenced(host)
            raise_error(answer["error"])
        return answer if whole else answer["value"]

    def _route(self, method: str, machine_id: str, *args: Any, **kwargs: Any) -> Any:
        host = self._host(machine_id)
        if host is None:
            return getattr(self.local, method)(machine_id, *args, **kwargs)
        return self._call(host, method, machine_id, *args, **kwargs)

    def _split_pid(self, gpid: int) -> tuple[Host | None, int]:
        slot = int(gpid) >> PID_BITS
        if slot == 0:
            return None, int(gpid)
        with self._lock:
            host = self._by_slot.get(slot)
        if host is None:
            raise AgentError(f"no node host holds process {gpid}")
        return host, int(gpid) & PID_MASK

    def _up(self) -> list[Host]:
        with self._lock:
            return [h for h in self.hosts.values() if h.state == "up"]

    # --- what the head is -----------------------------------------------------------------------------------
    @property
    def isolation(self) -> str:
        return str(self.local.isolation)

    @property
    def isolation_level(self) -> str:
        return f"{self.local.isolation_level}; node hosts on Ray at {self.ray_address}"

    @property
    def gateway(self) -> str | None:
        return self.local.gateway

    @property
    def transfers_enabled(self) -> bool:
        return True

    # --- machines -------------------------------------------------------------------------------------------
    def adopt(self) -> dict[str, str]:
        found = dict(self.local.adopt())
        with self._lock:
            for host in self.hosts.values():
                found.update({m: "running" for m in host.machines})
        return found

    def _place(self, machine: dict[str, Any]) -> Host:
        pool = (machine.get("placement") or {}).get("pool")
        cores = int((machine.get("limits") or {}).get("cores") or 1)
        memory = int((machine.get("limits") or {}).get("memoryBytes") or 0) >> 20
        candidates = []
        for host in self._up():
            used, used_memory = host.machines.cores, host.machines.memory_mb
            if host.overcommit is not None and (used + cores > host.cores * host.overcommit
                                                or used_memory + memory > host.memory_mb * host.overcommit):
                continue
            same = host.machines.per_pool.get(pool, 0) if pool is not None else 0
            candidates.append((same / max(host.cores, 1), used / max(host.cores, 1), len(host.machines), host.name,
                               host))
        if not candidates:
            raise AgentError("no node host has room for another node: add a host (`shoal host join`) or raise "
                             "the hosts' --overcommit")
        return min(candidates, key=lambda c: c[:4])[4]

    def boot(self, machine: dict[str, Any]) -> dict[str, Any]:
        if not machine.get("placement"):
            return dict(self.local.boot(machine))  # VMs run on the head
        machine_id = machine["machineId"]
        with self._lock:
            host = self._where.get(machine_id) or self._place(machine)
            address = (machine.get("network") or {}).get("address")
            limits = machine.get("limits") or {}
            host.machines[machine_id] = {"pool": machine["placement"].get("pool"),
                                         "cores": int(limits.get("cores") or 1),
                                         "memoryMb": int(limits.get("memoryBytes") or 0) >> 20, "address": address}
            self._where[machine_id] = host
        try:
            layers = list(machine["osDisk"].get("layers") or [])
            for disk in (machine.get("dataDisks") or {}).values():
                layers += disk.get("layers") or []
            base = machine.get("base") or {}
            if base.get("imported"):
                layers.insert(0, base["imported"])
            if layers:
                raylink.call(host.handle, "ensure_layers", layers, timeout=600.0)
            booted = self._call(host, "boot", machine, wait=300.0)
        except Exception:
            with self._lock:
                host.machines.pop(machine_id, None)
                self._where.pop(machine_id, None)
            raise
        if address:
            self._routes_dirty.set()  # pushed by the monitor, once for all the nodes booted meanwhile
        return dict(booted)

    def _resync(self, name: str) -> None:
        """The host gets its whole route table at the next push (it is new, or its agent restarted)."""
        with self._lock:
            self._in_sync.discard(name)
            self._resyncs[name] = self._resyncs.get(name, 0) + 1

    def _push_routes(self) -> None:
        """Give every host a route to the nodes of the others, through the host that holds each.

        What changed since the last push is found once for all hosts (one pass over the nodes), and each host
        that holds the last table gets only its share of that change: a push costs about the same with 4 hosts
        as with 1. (Rebuilding and comparing each host's whole table, as before, made the head's CPU per node
        grow with the host count: 4 tables of up to 7,500 routes at every tick while pools grew.) A host new to
        this server, restarted, or that missed a push gets its whole table."""
        with self._push_lock:
            with self._lock:
                hosts = [h for h in self.hosts.values() if h.state == "up" and h.address]
                table = {m["address"]: (h.name, str(h.address)) for h in hosts for m in h.machines.values()
                         if m.get("address")}
                in_sync = set(self._in_sync)
                resyncs = dict(self._resyncs)
            before = self._pushed_routes
            changed = {a: owner for a, owner in table.items() if before.get(a) != owner}
            gone = [a for a in before if a not in table]
            synced: set[str] = set()
            for host in hosts:
                try:
                    if host.name not in in_sync:
                        routes = {a: via for a, (name, via) in table.items() if name != host.name}
                        raylink.call(host.handle, "set_routes", routes, timeout=30.0)
                    else:
                        mine = {a: via for a, (name, via) in changed.items() if name != host.name}
                        # routes it holds no more: their node left, or it is now one of its own
                        dropped = [a for a in gone if before[a][0] != host.name]
                        dropped += [a for a, (name, _) in changed.items()
                                    if name == host.name and a in before and before[a][0] != host.name]
                        if mine or dropped:
                            raylink.call(host.handle, "change_routes", mine, dropped, timeout=30.0)
                    synced.add(host.name)
                except raylink.HostUnreachable:
                    # Pushed again, whole, at the next tick (else that host would lack them until the next node
                    # boots or goes); a host that stays unreachable is declared lost meanwhile and left out.
                    self._routes_dirty.set()
            with self._lock:
                self._pushed_routes = table
                # A host asked for a whole table during this push keeps waiting for it.
                self._in_sync = {name for name in synced if self._resyncs.get(name, 0) == resyncs.get(name, 0)}

    def _forget(self, machine_id: str) -> None:
        with self._lock:
            host = self._where.pop(machine_id, None)
            if host is not None:
                host.machines.pop(machine_id, None)
        self._routes_dirty.set()

    def halt(self, machine_id: str, *, keep_temp: bool = False) -> None:
        host = self._host(machine_id)
        if host is None:
            self.local.halt(machine_id, keep_temp=keep_temp)
            return
        if host.state != "up":
            return  # the host fenced itself; what it left is removed when it comes back (a stray then)
        self._call(host, "halt", machine_id, keep_temp=keep_temp)
        if not keep_temp:
            self._forget(machine_id)

    def retire(self, machine_id: str) -> None:
        host = self._host(machine_id)
        if host is None:
            self.local.retire(machine_id)
        elif host.state == "up":
            self._call(host, "retire", machine_id)
            with self._lock:
                host.machines.pop(machine_id, None)  # its logs stay reachable there until forget_logs

    def forget_logs(self, machine_id: str) -> None:
        host = self._host(machine_id)
        if host is None:
            self.local.forget_logs(machine_id)
            return
        if host.state == "up":
            self._call(host, "forget_logs", machine_id)
        with self._lock:
            self._where.pop(machine_id, None)

    def status(self, machine_id: str) -> str:
        host = self._host(machine_id)
        if host is not None and host.state != "up":
            return "lost"
        return str(self._route("status", machine_id))

    def machine_ids(self) -> list[str]:
        found = list(self.local.machine_ids())
        for host in self._up():
            try:
                found += self._call(host, "machine_ids")
            except AgentError:
                continue
        return found

    def lost_machines(self) -> dict[str, float]:
        """Machines on hosts that are lost now: ``{machine id: seconds since the host was lost}``."""
        now = time.monotonic()
        with self._lock:
            return {m: now - h.lost_at for h in self.hosts.values() if h.state == "lost" for m in h.machines}

    def publish_endpoints(self, endpoints: list[dict[str, Any]]) -> None:
        self.local.publish_endpoints(endpoints)

    def publish_vm_networks(self, entries: list[dict[str, Any]]) -> None:
        self.local.publish_vm_networks(entries)  # VMs live on the head
        # The inbound filters of pools in virtual network subnets: their nodes may be on any host.
        self._subnet_filters = [e for e in entries if e.get("subnet")]
        self._push_filters(list(self.hosts.values()))

    def _push_filters(self, hosts: list[Host]) -> None:
        for host in hosts:
            try:
                self._call(host, "publish_vm_networks", self._subnet_filters)
            except (HostUnavailable, AgentError) as exc:
                log.warning("host %s: the subnets' inbound filters are not published yet: %s", host.name, exc)

    def listening_ports(self) -> list[int]:
        # The head's: VMs live there, and so does the address nodes' SSH ports are given at with
        # --node-network host (nodes on other hosts share those hosts' networks: not served, see host_ssh.py).
        return list(self.local.listening_ports())

    def usage_samples(self, machine_ids: list[str]) -> dict[str, dict[str, Any]]:
        by_host: dict[str | None, list[str]] = {}
        for machine_id in machine_ids:
            host = self._host(machine_id)
            by_host.setdefault(host.name if host else None, []).append(machine_id)
        found: dict[str, dict[str, Any]] = {}
        for name, ids in by_host.items():
            if name is None:
                found.update(self.local.usage_samples(ids))
                continue
            try:
                found.update(self._call(self.hosts[name], "usage_samples", ids))
            except AgentError:
                continue
        return found

    # --- commands -------------------------------------------------------------------------------------------
    def run(self, machine_id: str, argv: list[str], **kwargs: Any) -> dict[str, Any]:
        host = self._host(machine_id)
        if host is None:
            return dict(self.local.run(machine_id, argv, **kwargs))
        limit = kwargs.get("timeout")
        return dict(self._call(host, "run", machine_id, argv, wait=None if limit is None else float(limit) + 60.0,
                               **kwargs))

    def spawn(self, machine_id: str, argv: list[str], **kwargs: Any) -> int:
        found = self.spawn_many([dict(machine_id=machine_id, argv=argv, **kwargs)])[0]
        if isinstance(found, Exception):
            raise found
        return found

    def spawn_many(self, requests: list[dict[str, Any]]) -> list[int | Exception]:
        """One call per host for its commands (the head's own run here); each result is a pid, or the error of
        that command alone (all of a host's when the host does not answer)."""
        results: list[int | Exception | None] = [None] * len(requests)
        by_host: dict[str | None, list[int]] = {}
        hosts: dict[str, Host] = {}
        for i, request in enumerate(requests):
            host = self._host(request["machine_id"])
            if host is not None:
                hosts[host.name] = host
            by_host.setdefault(host.name if host else None, []).append(i)
        for name, indexes in by_host.items():
            batch = [requests[i] for i in indexes]
            try:
                answers = self.local.spawn_many(batch) if name is None else \
                    [self._spawned(hosts[name], request, answer) for request, answer in
                     zip(batch, self._call(hosts[name], "spawn_many", batch, wait=30.0), strict=True)]
            except Exception as exc:
                answers = [exc] * len(batch)
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer
        return [r for r in results if r is not None]

    def _spawned(self, host: Host, request: dict[str, Any], answer: dict[str, Any]) -> int | Exception:
        """A command a host started (its answer as :meth:`HostSide._watch` gives it): its global pid, waited for
        through the host's ends."""
        if "error" in answer:
            try:
                raise_error(answer["error"])
            except Exception as exc:
                return exc
        gpid = (host.slot << PID_BITS) | int(answer["value"])
        wait = _Wait(int(answer.get("started") or 0), machine=request["machine_id"],
                     exit_key=str(request.get("exit_key") or ""))
        with self._lock:
            self._waits[gpid] = wait
            early = self._early.pop((gpid, wait.started), None)
            if early is not None:
                wait.result = early
                wait.event.set()
        return gpid

    def wait(self, gpid: int) -> dict[str, Any] | None:
        host, pid = self._split_pid(gpid)
        if host is None:
            return self.local.wait(pid)
        with self._lock:
            found = self._waits.get(gpid)
        if found is None:  # not spawned through this server (it restarted since): watch the process itself
            return self._watch_alive(host, pid)
        wait = found
        epoch = host.epoch
        try:
            while not wait.event.wait(1.0):
                if host.state != "up" and time.monotonic() - host.lost_at >= self.fence_seconds:
                    return {"exitCode": None, "lost": True,
                            "error": f"the node host {host.name} was lost while the task ran"}
                # The host's agent restarted: its watcher of this command is gone; the exit file is not.
                if host.state == "up" and host.epoch != epoch and wait.machine and not self._call(host, "alive", pid):
                    found = self._call(host, "read_exit", wait.machine, wait.exit_key)
                    return found or {"exitCode": None, "lost": True, "error": "the task's process vanished"}
            return wait.result
        finally:
            with self._lock:
                self._waits.pop(gpid, None)

    def _watch_alive(self, host: Host, pid: int) -> dict[str, Any] | None:
        while True:
            if host.state != "up":
                if time.monotonic() - host.lost_at >= self.fence_seconds:
                    return {"exitCode": None, "lost": True, "error": f"the node host {host.name} was lost"}
            elif not self._call(host, "alive", pid):
                return None
            time.sleep(0.5)

    def kill(self, gpid: int) -> None:
        host, pid = self._split_pid(gpid)
        if host is None:
            self.local.kill(pid)
        elif host.state == "up":
            self._call(host, "kill", pid)

    def alive(self, gpid: int) -> bool:
        host, pid = self._split_pid(gpid)
        if host is None:
            return bool(self.local.alive(pid))
        if host.state != "up":
            return time.monotonic() - host.lost_at < self.fence_seconds  # fenced after that
        return bool(self._call(host, "alive", pid))

    def read_exit(self, machine_id: str, exit_key: str) -> dict[str, Any] | None:
        host = self._host(machine_id)
        if host is not None and host.state != "up":
            return None
        return self._route("read_exit", machine_id, exit_key)

    def clear_exit(self, machine_id: str, exit_key: str) -> None:
        self._route("clear_exit", machine_id, exit_key)

    def find_spawned(self, machine_id: str, exit_key: str, pid: int | None) -> int | None:
        host = self._host(machine_id)
        if host is None:
            return self.local.find_spawned(machine_id, exit_key, pid)
        if host.state != "up":
            return None
        local_pid = int(pid) & PID_MASK if pid else None
        found = self._call(host, "find_spawned", machine_id, exit_key, local_pid)
        return (host.slot << PID_BITS) | int(found) if found else None

    # --- files on a machine's temporary drive, transfers, node files -----------------------------------------
    def make_dirs(self, machine_id: str, paths: list[str], **kwargs: Any) -> None:
        self._route("make_dirs", machine_id, paths, **kwargs)

    def remove_path(self, machine_id: str, path: str) -> None:
        self._route("remove_path", machine_id, path)

    def write_file(self, machine_id: str, path: str, data: bytes, **kwargs: Any) -> None:
        self._route("write_file", machine_id, path, data, **kwargs)

    def download_resource(self, machine_id: str, resource: dict[str, Any], wd: str, user: str | None) -> list[str]:
        return list(self._route("download_resource", machine_id, resource, wd, user))

    def upload_output(self, machine_id: str, output: dict[str, Any], env: dict[str, str],
                      user: str | None) -> dict[str, Any]:
        return dict(self._route("upload_output", machine_id, output, env, user))

    def _files(self, method: str, machine_id: str, *args: Any, **kwargs: Any) -> Any:
        """A node file call: on a host that cannot be reached, the files are not found (now), not a failure."""
        try:
            return self._route(method, machine_id, *args, **kwargs)
        except HostUnavailable as exc:
            raise NodeFileError("notfound", f"The node's files cannot be reached: {exc}.") from exc

    def list_node_files(self, machine_id: str, root: str, *, recursive: bool) -> list[dict[str, Any]]:
        return list(self._files("list_node_files", machine_id, root, recursive=recursive))

    def stat_node_file(self, machine_id: str, root: str, path: str) -> dict[str, Any]:
        return dict(self._files("stat_node_file", machine_id, root, path))

    def read_node_file(self, machine_id: str, root: str, path: str, start: int = 0,
                       end: int | None = None) -> tuple[dict[str, Any], bytes]:
        meta, data = self._files("read_node_file", machine_id, root, path, start, end)
        return dict(meta), bytes(data)

    def delete_node_file(self, machine_id: str, root: str, path: str, *, recursive: bool) -> None:
        self._files("delete_node_file", machine_id, root, path, recursive=recursive)

    # --- disks, layers, replicas: the head's, and each host's copies ------------------------------------------
    def prepare_disk(self, upper_id: str) -> None:
        self.local.prepare_disk(upper_id)

    def delete_disk(self, upper_id: str) -> None:
        self.local.delete_disk(upper_id)

    def capture_disk(self, upper_id: str) -> str | None:
        return self.local.capture_disk(upper_id)

    def import_disk_file(self, uri: str) -> str:
        return str(self.local.import_disk_file(uri))

    def export_disk(self, token: str, base: dict[str, Any] | None, layers: list[str], upper_id: str | None) -> str:
        return str(self.local.export_disk(token, base, layers, upper_id))

    def revoke_export(self, token: str) -> None:
        self.local.revoke_export(token)

    def export_size(self, token: str) -> int | None:
        return self.local.export_size(token)

    def read_export(self, token: str, start: int, length: int) -> bytes:
        return bytes(self.local.read_export(token, start, length))

    def layer_size(self, digest: str) -> int | None:
        return self.local.layer_size(digest)

    def read_layer(self, digest: str, start: int, length: int) -> bytes:
        return bytes(self.local.read_layer(digest, start, length))

    def prepare_replica(self, region: str, replica_id: str, os_stack: list[str],
                        data_stacks: dict[str, list[str]]) -> str:
        path = str(self.local.prepare_replica(region, replica_id, os_stack, data_stacks))
        for host in self._up():
            try:
                raylink.call(host.handle, "ensure_layers", [*os_stack, *(d for s in data_stacks.values() for d in s)],
                             timeout=600.0)
                self._call(host, "prepare_replica", region, replica_id, os_stack, data_stacks, wait=600.0)
            except (AgentError, raylink.HostUnreachable) as exc:
                log.warning("host %s could not prepare replica %s (its nodes mount the layers): %s", host.name,
                            replica_id, exc)
        return path

    def delete_replicas(self, replica_prefix: str) -> None:
        self.local.delete_replicas(replica_prefix)
        for host in self._up():
            try:
                self._call(host, "delete_replicas", replica_prefix)
            except AgentError as exc:
                log.warning("host %s could not delete replicas %s: %s", host.name, replica_prefix, exc)

    def layer_inventory(self) -> list[dict[str, Any]]:
        return list(self.local.layer_inventory())

    def gc_layers(self, referenced: list[str]) -> list[str]:
        removed = list(self.local.gc_layers(referenced))
        for host in self._up():
            try:
                self._call(host, "gc_layers", referenced)
            except AgentError as exc:
                log.warning("host %s could not collect layers: %s", host.name, exc)
        return removed

    # --- for the CLI ----------------------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"name": h.name, "slot": h.slot, "state": h.state, "address": h.address, "cores": h.cores,
                     "memoryMb": h.memory_mb, "overcommit": h.overcommit, "machines": sorted(h.machines)}
                    for h in sorted(self.hosts.values(), key=lambda h: h.slot)]


if TYPE_CHECKING:
    from shoal.domain.host import HostAgent

    def _is_a_host_agent(agent: ClusterHostAgent) -> HostAgent:
        return agent
