"""Node boot: new nodes' machines are booted through the host agent, in provisioning streams side by side.

Nodes of a pool from a gallery version are provisioned from the version's replicas in the pool's region,
spread round robin across them; a replica is a ready-to-mount, flattened copy of the image's disks with a
resident provisioner of its own (``runtime/replicas.py``), so each replica is a provisioning stream. A managed
(or marketplace) image is a single source: its nodes boot in ``BOOT_STREAMS`` streams side by side, each through
a resident provisioner on the host named by the thread that runs the stream (no process launched per node; two
streams of one server never share one at a time, whichever pools they boot). Booted nodes are written in
batches as they come up (``idle`` at once without a start task).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shoal.core.hosterrors import MountFailed
from shoal.domain.batch import allocation, mounts
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch.pool_nodes import NodeRecord
from shoal.reconcilers import app_packages
from shoal.reconcilers.allocation.context import Context
from shoal.reconcilers.faults import Faults
from shoal.store import models

log = logging.getLogger(__name__)
PROVISIONING_WORKERS = 16
# Nodes of one managed (or marketplace) image boot this many at a time. Most of a hardened boot is kernel work
# outside the interpreter lock (namespaces, a veth pair, mounts), and much of that waits on the kernel's own locks
# and grace periods, so streams beyond the core count still overlap. While a pool grows the server's threads are
# bound by the interpreter lock, which sits idle whenever every stream waits on its machine: the more streams, the
# less often that happens. Measured on 2 cores (bench_sandbox, 300 nodes): hardened nodes took 1.13 s in 2
# streams, 1.06 s in 4, 0.93 s in 8, 0.86 s in 16 and 0.88 s in 32; nodes with only cgroup limits 0.76 s in 8
# and in 16 streams.
BOOT_STREAMS = max(1, min(PROVISIONING_WORKERS, 8 * (os.cpu_count() or 1)))
BOOT_FLUSH_INTERVAL = 0.1  # seconds: booted nodes are written (and usable) in batches at least this often

Sources = dict[str, dict[str, str]]  # machine id -> the replica ({"region","id"}) it is provisioned from


@dataclass(frozen=True)
class Booted:
    """A node's boot: its errors ([] when it is up) and when it ended."""

    errors: list[dict[str, Any]]
    at: datetime


def sources(rows: list[NodeRecord], replicas: allocation.ReplicaView | None) -> Sources:
    """machine id -> the replica ({"region","id"}) each node is provisioned from, spread over the pool's nodes
    oldest first (so new nodes continue the round robin)."""
    if replicas is None or not replicas.ids:
        return {}
    ordered = sorted(rows, key=lambda n: (n.allocation_time, n.key))
    spread = allocation.spread([n.machine_id for n in ordered], replicas.ids)
    return {machine_id: {"region": replicas.region, "id": rid} for machine_id, rid in spread.items()}


class NodeBooter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Provisioning streams of one pass (one per image source); more sources than workers take turns.
        self._streams = ThreadPoolExecutor(PROVISIONING_WORKERS, thread_name_prefix="provision")

    def boot(self, rows: list[NodeRecord], pool: models.Pool, sources: Sources | None = None) -> list[str]:
        """Boot new nodes: one provisioning stream per image source, the streams side by side.

        A managed image (or a marketplace image) is one source; a gallery version has one per ready replica in
        the pool's region, each an independent ready-to-mount copy (as Azure spreads a pool's deployments over
        a version's replicas); a replica's nodes boot one after another. A single source's nodes boot in
        ``BOOT_STREAMS`` streams. Returns the keys of the nodes that came up."""
        if not rows:
            return []
        sources = sources or {}
        faults = self.ctx.faults_now()
        streams: dict[str, list[NodeRecord]] = {}
        for i, n in enumerate(rows):
            replica = (sources.get(n.machine_id) or {}).get("id")
            # A replica's nodes are built by its one resident provisioner; other nodes boot in side streams.
            streams.setdefault(replica or f"local-{i % BOOT_STREAMS}", []).append(n)
        ready = not app_packages.has_start_work(pool)
        results: dict[str, Booted] = {}  # booted, not yet written
        up: list[str] = []
        lock = threading.Lock()
        flushed = time.monotonic()

        def flush(batch: dict[str, Booted]) -> None:
            self.booted(batch, ready=ready)
            if batch and ready:
                self.ctx.wake_tasks()  # new idle nodes: the scheduler may use them now

        def provision(stream: list[NodeRecord]) -> None:
            nonlocal flushed
            builder = threading.current_thread().name  # the host's provisioner for this thread's builds
            for n in stream:
                errs = self.boot_node(pool, n, sources.get(n.machine_id), faults, stream=builder)
                with lock:
                    results[n.key] = Booted(errs, self.ctx.clock.now())
                    if not errs:
                        up.append(n.key)
                    if time.monotonic() - flushed < BOOT_FLUSH_INTERVAL:
                        continue
                    batch = dict(results)
                    results.clear()
                    flushed = time.monotonic()
                flush(batch)  # nodes come up as they boot, not when the whole pass ends

        if len(streams) == 1:
            provision(rows)
        else:
            for done in [self._streams.submit(provision, stream) for stream in streams.values()]:
                done.result()
        flush(results)
        return up

    def booted(self, results: dict[str, Booted], *, ready: bool) -> None:
        """Record booted nodes (one statement per outcome): ``starting``, or ``unusable`` with the errors; with
        ``ready`` (the pool has no start task) a node that booted is ``idle`` at once. State times are when each
        node booted. Nodes no longer ``creating`` (removed meanwhile) are left alone."""
        if not results:
            return
        failed = [(key, b.at, {"errors": b.errors, "last_boot_time": b.at}) for key, b in results.items() if b.errors]
        up = [(key, b.at, {"errors": [], "last_boot_time": b.at}) for key, b in results.items() if not b.errors]
        with self.ctx.write() as s:
            node_rules.set_states_each(s, "creating", "unusable", failed)
            if ready:
                node_rules.set_states_each(s, "creating", "idle", up, via=("starting",))
            else:
                node_rules.set_states_each(s, "creating", "starting", up)

    def boot_node(self, pool: models.Pool, n: NodeRecord, replica: dict[str, str] | None,
                  faults: Faults, stream: str | None = None) -> list[dict[str, Any]]:
        """Boot one node's machine (in boot stream ``stream``): its errors ([] when it is up)."""
        try:
            if faults.node_provision_delay:
                time.sleep(faults.node_provision_delay)
            if faults.node_provision_failure:
                raise RuntimeError("provisioning failed (operator fault injection)")
            self._boot_once_more_on_failure(pool, n, replica, stream)
            self.prepare_dirs(n)
            return []
        except MountFailed as exc:  # the pool's mountConfiguration: Azure's own error for it
            log.warning("node %s: a file system could not be mounted: %s", n.node_id, exc)
            return [mounts.node_error(exc.path, exc.reason)]
        except Exception as exc:  # a node that cannot boot is unusable, with the reason
            log.warning("node %s could not be provisioned: %s", n.node_id, exc)
            return [{"code": "NodeProvisioningFailed", "message": f"The node could not be started: {exc}",
                     "errorDetails": []}]

    def _boot_once_more_on_failure(self, pool: models.Pool, node: NodeRecord,
                                   replica: dict[str, str] | None = None, stream: str | None = None) -> None:
        """Boot a node's machine; if that fails (say, a half-made machine left by a crash), tear down what is
        there and try once more before calling the node unusable."""
        try:
            self.ctx.agent.boot(self.machine(pool, node, replica, stream))
        except MountFailed:
            raise  # the same again on a second try: the mount's error is the node's
        except Exception:
            log.info("node %s: boot failed, retrying after a clean-up", node.node_id, exc_info=True)
            self.ctx.agent.halt(node.machine_id)
            self.ctx.agent.boot(self.machine(pool, node, replica, stream))

    def machine(self, pool: models.Pool, node: node_rules.NodeLike, replica: dict[str, str] | None,
                stream: str | None = None) -> dict[str, Any]:
        """What the host agent boots for a node, with the gallery replica it is provisioned from (if any), or
        else the boot stream it is built in (the host agent keeps a resident provisioner for each)."""
        machine = node_rules.machine_spec(pool, node, self.ctx.address_space)
        if replica is not None:
            machine["replica"] = replica
        elif stream is not None:
            machine["stream"] = stream
        wanted = pool.spec.get("mountConfiguration")
        if wanted:
            # Checked at every boot (reboots and reimages too): the container's key may have changed since.
            with self.ctx.db.read() as s:
                problems = mounts.credential_problems(wanted, mounts.container_key(s))
            if problems:
                raise MountFailed(*problems[0])
            machine["mounts"] = mounts.plan(wanted)
        return machine

    def prepare_dirs(self, node: node_rules.NodeLike) -> None:
        """The node's Batch directories on its temporary drive (``shared`` is writable by every task user)."""
        root = node_rules.NODE_ROOT
        self.ctx.agent.make_dirs(node.machine_id, [f"{root}/{sub}" for sub in ("startup", "workitems",
                                                                                "applications", "fsmounts")])
        self.ctx.agent.make_dirs(node.machine_id, [f"{root}/shared"], mode=0o1777)
