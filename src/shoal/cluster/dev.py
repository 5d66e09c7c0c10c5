"""``shoal dev cluster --hosts N``: a whole cluster on one machine, for tests and demos.

It starts, in order:

1. the simulated hosts' network (``simnet.py``): a bridge holding the head's address and one network namespace
   per host, so every host has an address of its own and its own node network, as separate machines would;
2. PostgreSQL, unless ``--database-url`` names one: a private server of Debian's packages, its data in a
   directory of its own, listening on 127.0.0.1 only;
3. the Ray head, in the root namespace on the bridge address, with the health checks tuned to see a lost host
   in about 3 s (``raylink.HEALTH_ENV``);
4. ``shoal serve --ray-address`` on the given port (listening on every address: clients use 127.0.0.1, hosts
   the bridge address), with the same ``--state-dir``, so ``shoal env --state-dir D`` and every client or
   script written for ``shoal serve`` work unchanged;
5. one ``shoal host join`` per host, inside its namespace, each with its own store directory.

The cluster is recorded in ``<state-dir>/cluster.json`` (``shoal dev cluster status`` reads it). Ctrl-C (or
SIGTERM) stops everything in the reverse order; hosts fence themselves as they leave, so no machine is left.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal.cluster import raylink, simnet
from shoal.cluster.join import head_reachable, ray_executable

RECORD = "cluster.json"


class _Stop(Exception):
    """Ctrl-C or SIGTERM: stop the cluster."""


class ClusterError(Exception):
    """The cluster cannot start as asked (the message says why and what to do)."""


@dataclass
class ClusterSpec:
    name: str
    hosts: int
    state_dir: Path
    port: int = 8443
    database_url: str | None = None
    network: str = simnet.DEFAULT_NETWORK
    ray_port: int = 6380
    fence_seconds: float = 3.0
    runtime: str | None = None
    node_network: str = "isolated"
    node_address_space: str = "10.224.0.0/12"
    store_dir: Path | None = None
    cgroups: bool = True  # each host's nodes get cgroups (`shoal host join --no-cgroups` otherwise)

    @property
    def head_ip(self) -> str:
        return str(ipaddress.ip_network(self.network).network_address + 1)

    @property
    def ray_address(self) -> str:
        return f"{self.head_ip}:{self.ray_port}"

    @property
    def hosts_dir(self) -> Path:
        return (self.store_dir / "hosts") if self.store_dir else self.state_dir / "hosts"


def _shoal(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal", *args]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- PostgreSQL --------------------------------------------------------------------------------------------
def _pg_dir(spec: ClusterSpec) -> Path:
    """Outside the state directory (that one is the server user's alone, and PostgreSQL runs as ``postgres``),
    named after an id kept in it: a new state directory gets a new, empty database."""
    marker = spec.state_dir / "cluster-database-id"
    try:
        tag = marker.read_text().strip()
    except FileNotFoundError:
        tag = ""
    if len(tag) != 16:
        tag = secrets.token_hex(8)
        marker.write_text(tag + "\n")
    return Path(tempfile.gettempdir()) / f"shoal-pg-{tag}"


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise ClusterError("PostgreSQL is not installed: give --database-url, or apt-get install postgresql")
    return Path(found[-1]).parent


def start_postgres(spec: ClusterSpec, port: int) -> str:
    """A private PostgreSQL for the cluster (trust on 127.0.0.1 only); its URL."""
    bin_dir, data = _pg_bin(), _pg_dir(spec)
    data.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(data, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    if not (data / "PG_VERSION").exists():
        done = subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ClusterError(f"initdb failed: {done.stderr.strip()[-500:]}")
    done = subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w",
                           "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"PostgreSQL did not start: {done.stderr.strip()[-500:]} (see {data / 'server.log'})")
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def stop_postgres(spec: ClusterSpec) -> None:
    data = _pg_dir(spec)
    if (data / "postmaster.pid").exists():
        subprocess.run(["runuser", "-u", "postgres", "--", str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "-w", "stop"], capture_output=True)


# --- processes ---------------------------------------------------------------------------------------------
class Processes:
    """The cluster's processes, each in a session of its own (stopped as a group)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                    start_new_session=True)
        self.started[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 30.0) -> None:
        self.stop_all([name], timeout)

    def stop_all(self, names: list[str], timeout: float = 30.0) -> None:
        """SIGTERM to each (at once), then wait; SIGKILL what is left after ``timeout``."""
        procs = [p for p in (self.started.pop(n, None) for n in names) if p is not None and p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api_ready(spec: ClusterSpec) -> bool:
    ca = spec.state_dir / "tls" / "ca.pem"
    if not ca.exists():
        return False
    try:
        context = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{spec.port}/healthz", context=context, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _joined(spec: ClusterSpec, name: str) -> bool:
    return (spec.hosts_dir / name / "host.json").exists()


def run(spec: ClusterSpec, console: Console) -> int:
    if os.geteuid() != 0:
        raise ClusterError("shoal dev cluster needs root (network namespaces and node machines)")
    if not 1 <= spec.hosts <= 32:
        raise ClusterError("--hosts must be between 1 and 32")
    raylink._ray()  # a clear message when Ray is not installed
    spec.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = read_record(spec.state_dir)
    if existing and _alive(existing.get("pid")):
        raise ClusterError(f"a cluster already runs in {spec.state_dir} (pid {existing['pid']}): stop it first")
    procs = Processes(spec.state_dir / "logs")

    def request_stop(*_: Any) -> None:
        raise _Stop

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    hosts: list[simnet.SimHost] = []
    try:
        with console.status("Starting the simulated hosts' network...") as progress:
            try:
                hosts = simnet.up(spec.name, spec.hosts, spec.network, bridge=simnet.bridge_name(spec.name))
            except simnet.SimNetError as exc:
                raise ClusterError(f"the simulated network could not be set up: {exc}") from exc
            database_url = spec.database_url
            if not database_url:
                progress.update("Starting PostgreSQL...")
                database_url = start_postgres(spec, _free_port())
            progress.update("Starting the Ray head...")
            env = {**raylink.HEALTH_ENV, **raylink.QUIET_ENV}
            procs.start("ray-head", [ray_executable(), "start", "--head", "--node-ip-address", spec.head_ip, "--port",
                                     str(spec.ray_port), "--num-cpus", "0", "--include-dashboard=false",
                                     "--disable-usage-stats", "--block"], env)
            _wait(lambda: head_reachable(spec.ray_address), 60, "the Ray head did not start (see logs/ray-head.log)",
                  procs)
            progress.update("Starting the API...")
            serve = _shoal("serve", "--state-dir", str(spec.state_dir), "--port", str(spec.port), "--host", "0.0.0.0",
                           "--public-url", f"https://127.0.0.1:{spec.port}", "--database-url", database_url,
                           "--ray-address", spec.ray_address, "--cluster-address", spec.head_ip,
                           "--fence-seconds", str(spec.fence_seconds), "--node-network", spec.node_network,
                           "--node-address-space", spec.node_address_space)
            if spec.runtime:
                serve += ["--runtime", spec.runtime]
            if spec.store_dir:
                serve += ["--store-dir", str(spec.store_dir / "head")]
            procs.start("serve", serve)
            for host in hosts:
                argv = _shoal("host", "join", "--ray-address", spec.ray_address, "--name", host.name, "--store-dir",
                              str(spec.hosts_dir / host.name), "--api", f"{spec.head_ip}:{spec.port}", "--node-ip",
                              host.address, "--fence-seconds", str(spec.fence_seconds), "--node-network",
                              spec.node_network, "--node-address-space", spec.node_address_space)
                if spec.runtime:
                    argv += ["--runtime", spec.runtime]
                if not spec.cgroups:
                    argv += ["--no-cgroups"]
                (spec.hosts_dir / host.name / "host.json").unlink(missing_ok=True)
                # One host at a time: Ray nodes starting together on a small machine time out.
                progress.update(f"Starting host {host.name}...")
                procs.start(f"host-{host.name}", simnet.exec_argv(host, argv))
                _wait(lambda h=host.name: _joined(spec, h), 180,
                      f"host {host.name} did not join (see logs/host-{host.name}.log)", procs)
            write_record(spec, hosts, procs)
            progress.update("Waiting for the API...")
            _wait(lambda: _api_ready(spec), 120, "the API did not start (see logs/serve.log)", procs)
        console.print(f"Shoal cluster [bold]{spec.name}[/bold] is ready: API https://127.0.0.1:{spec.port}, Ray head "
                      f"{spec.ray_address}, hosts {', '.join(f'{h.name} ({h.address})' for h in hosts)}.")
        console.print(f"Connection details: shoal env --state-dir {spec.state_dir}; hosts: shoal dev cluster status "
                      f"--state-dir {spec.state_dir}. Ctrl-C stops the cluster.", highlight=False)
        while procs.started["serve"].poll() is None:
            time.sleep(0.5)
        console.print("[red]The API stopped (see logs/serve.log); stopping the cluster.[/red]")
        return 1
    except _Stop:
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # the stop below is not interrupted
        console.print("Stopping the cluster...")
        procs.stop("serve")
        procs.stop_all([f"host-{h.name}" for h in hosts])  # each fences its machines and leaves Ray
        procs.stop("ray-head")
        for name in list(procs.started):
            procs.stop(name)
        # The head's own machines (VMs) outlive a server's restart, as on a single host; not the cluster's stop.
        destroy = _shoal("machines", "destroy", "--all", "--state-dir", str(spec.state_dir))
        if spec.store_dir:
            destroy += ["--store-dir", str(spec.store_dir / "head")]
        subprocess.run(destroy, capture_output=True)
        if not spec.database_url:
            stop_postgres(spec)
        with contextlib.suppress(simnet.SimNetError):
            simnet.down(spec.name)
        (spec.state_dir / RECORD).unlink(missing_ok=True)
        console.print("Cluster stopped.")


def _wait(ready: Any, timeout: float, failure: str, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [n for n, p in procs.started.items() if p.poll() is not None]
        if dead:
            raise ClusterError(f"{failure}: {', '.join(dead)} exited")
        if time.monotonic() > deadline:
            raise ClusterError(failure)
        time.sleep(0.3)


def write_record(spec: ClusterSpec, hosts: list[simnet.SimHost], procs: Processes) -> None:
    record = {"name": spec.name, "pid": os.getpid(), "rayAddress": spec.ray_address, "port": spec.port,
              "fenceSeconds": spec.fence_seconds,
              "hosts": [{"name": h.name, "netns": h.netns, "address": h.address,
                         "storeDir": str(spec.hosts_dir / h.name),
                         "pid": procs.started[f"host-{h.name}"].pid} for h in hosts]}
    path = spec.state_dir / RECORD
    path.write_text(json.dumps(record, indent=2) + "\n")


def read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def status(state_dir: Path) -> dict[str, Any]:
    """The recorded cluster, each host's supervisor state and the machines in its store."""
    from shoal.runtime.machines import detect_runtime

    record = read_record(state_dir)
    if record is None:
        raise ClusterError(f"no cluster runs in {state_dir} (start one with `shoal dev cluster --state-dir "
                           f"{state_dir}`)")
    for host in record["hosts"]:
        store = Path(host["storeDir"])
        host["running"] = _alive(host.get("pid"))
        machines: dict[str, str] = {}
        addresses: dict[str, str] = {}
        if store.is_dir():
            runtime = detect_runtime(store, hide=[str(store)], probe=False)
            records: Any = getattr(runtime, "records", None)
            for machine_id in runtime.list():
                machines[machine_id] = runtime.status(machine_id)
                kept = records.read(machine_id) if records is not None else None
                address = (((kept or {}).get("spec") or {}).get("network") or {}).get("address")
                if address:
                    addresses[machine_id] = str(address)
        host["machines"], host["addresses"] = machines, addresses
    return record
