"""Ray as the cluster's transport, placement and membership (``pip install 'shoal[ray]'``).

Only this module imports Ray. Each node host runs one **detached, named** actor (``agent-<host>`` in the
``shoal`` namespace), pinned to its machine by the custom resource ``host_<host>`` that ``shoal host join``
gives the Ray node (with ``shoal_host``), restarted by Ray on that machine whenever its process dies
(``max_restarts=-1``). Its body is :class:`shoal.cluster.hostside.HostSide`. The control plane finds the agents
by name and calls them with plain data; it never passes layers through Ray's object store (measured 4x slower
than HTTPS, and it pins objects in the head's memory).

Ray's health checks decide when a host is lost. Their defaults notice a dead host after about 15 s; the
settings below (checks every 0.5 s, three missed: about 1.5-2 s for a dead host; 2.75 s measured at 1 s) must be
in the environment of the Ray head (``ray start --head``), which ``shoal dev cluster`` does and the README shows.
"""

from __future__ import annotations

import os
from typing import Any

NAMESPACE = "shoal"
HOST_RESOURCE = "shoal_host"
HEALTH_ENV = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
              "RAY_health_check_failure_threshold": "3"}
# Ray daemons, quiet and without the usage-stats prompt; process-group cleanup pinned (it varies by version).
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_process_group_cleanup_enabled": "1",
             "RAY_DEDUP_LOGS": "0"}


class RayUnavailable(Exception):
    """Ray is not installed (the message says how to install it)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("Ray is not installed: pip install 'shoal[ray]'") from exc
    return ray


def actor_name(host: str) -> str:
    return f"agent-{host}"


def host_resource(host: str) -> str:
    return f"host_{host}"


def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` (``HOST:PORT`` of its head) as a driver, once per process."""
    ray = _ray()
    if ray.is_initialized():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING",
             configure_logging=False)


def start_agent(host: str, store_dir: str, options: dict[str, Any]) -> Any:
    """Create this host's agent actor (or get the one already running), pinned to the host's Ray node."""
    ray = _ray()
    from shoal.cluster.hostside import HostSide

    remote = ray.remote(num_cpus=0, max_concurrency=64, max_restarts=-1, max_task_retries=0)(HostSide)
    return remote.options(name=actor_name(host), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                          resources={host_resource(host): 1}).remote(host, store_dir, options)


def agent(host: str) -> Any:
    return _ray().get_actor(actor_name(host), namespace=NAMESPACE)


def host_names() -> list[str]:
    """Hosts whose agent actor exists (alive or being restarted by Ray)."""
    ray = _ray()
    from ray.util import list_named_actors

    names = list_named_actors(all_namespaces=True)
    found = []
    for entry in names:
        name = entry["name"] if isinstance(entry, dict) else str(entry)
        space = entry.get("namespace") if isinstance(entry, dict) else NAMESPACE
        if space == NAMESPACE and name.startswith("agent-"):
            found.append(name[len("agent-"):])
    del ray
    return sorted(found)


def live_hosts() -> set[str]:
    """Hosts whose Ray node is alive now (Ray's own view, from its health checks)."""
    ray = _ray()
    alive = set()
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        for resource in (node.get("Resources") or {}):
            if resource.startswith("host_"):
                alive.add(resource[len("host_"):])
    return alive


def call(handle: Any, method: str, *args: Any, timeout: float | None = 30.0, **kwargs: Any) -> Any:
    """Call an actor method and wait (a timeout bounds calls to a host that died but is not yet declared
    dead). Raises :class:`HostUnreachable` for a dead or unreachable host."""
    ray = _ray()
    try:
        return ray.get(getattr(handle, method).remote(*args, **kwargs), timeout=timeout)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError,
            ray.exceptions.ActorUnavailableError) as exc:
        raise HostUnreachable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def reserve(key: str, value: str) -> str:
    """Reserve ``key`` in the head's key-value store (first writer wins): the value that holds."""
    _ray()
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(key, value, overwrite=False, namespace=NAMESPACE)
    found = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
    return found.decode() if isinstance(found, bytes) else str(found)


class HostUnreachable(Exception):
    """A host's agent did not answer (dead, restarting, or cut off)."""
