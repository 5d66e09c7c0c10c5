"""Wiring: one object that holds the process's settings, database, clock, token service and loops.

The CLI builds it for ``shoal serve`` (and, without the loops, for admin commands); the API reads it
from the application state. Nothing here holds rules: those live in ``domain``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shoal.auth import at_rest
from shoal.auth.tokens import TokenService
from shoal.config import Settings, load_vm_sizes
from shoal.core.clock import Clock
from shoal.domain import containers, identity, resource_groups
from shoal.domain import host as host_protocol
from shoal.domain.batch import node_agents, vmsizes
from shoal.domain.compute.kinds import ComputeContext
from shoal.domain.compute.registry import KINDS
from shoal.reconcilers.allocation import PoolAllocator
from shoal.reconcilers.autoscaler import AutoScaler
from shoal.reconcilers.base import LoopClaim, Reconciler, Runner
from shoal.reconcilers.batch_ops import BatchOperations
from shoal.reconcilers.compute import ComputeWork
from shoal.reconcilers.deployments import DeploymentWork
from shoal.reconcilers.faults import FaultClock, FaultSource
from shoal.reconcilers.host_loss import HostLossReconciler
from shoal.reconcilers.job_schedules import JobScheduleLoop
from shoal.reconcilers.machines import MachineReconciler
from shoal.reconcilers.node_users import NodeUserLoop
from shoal.reconcilers.operations import Handler, OperationReconciler
from shoal.reconcilers.resource_groups import ResourceGroupDeleter, ResourceTeardown
from shoal.reconcilers.tasks import TaskScheduler
from shoal.reconcilers.vmnet import VmNetworkReconciler
from shoal.runtime.agent import HostAgent
from shoal.runtime.blobs import BlobStore
from shoal.runtime.marketplace import Catalog
from shoal.runtime.sandbox import SandboxOptions
from shoal.runtime.transfers import Transfers
from shoal.store.db import Database

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    tokens: TokenService
    identity: identity.DevIdentity
    runner: Runner
    catalog: Catalog
    # The host agent, as the control plane sees it: plain-data calls (``domain/host.py``), never runtime objects.
    host: host_protocol.HostAgent | None = None
    _container_key: bytes | None = None
    cluster: Any = None  # the node hosts on Ray (cluster/control.py), when serving with --ray-address

    @property
    def blobs(self) -> BlobStore:
        """Blobs of Shoal-served containers (task output files, resource files)."""
        return BlobStore(self.settings.state_dir / "containers")

    def container_key(self) -> bytes:
        """The key that signs container URLs (read once; created on first use)."""
        if self._container_key is None:
            with self.db.write() as s:
                self._container_key = containers.signing_key(s)
        return self._container_key

    def compute_context(self) -> ComputeContext:
        return ComputeContext(self.clock, self.settings.regions, self.catalog, self.settings.base_url,
                              self.settings.image_limits, self.settings.subscription_core_quota,
                              self.settings.node_address_space, self.settings.own_networks,
                              host_address=self.settings.shared_host_address)

    @property
    def tenant_id(self) -> str:
        return self.identity.tenant_id

    @property
    def subscription_id(self) -> str:
        return self.identity.subscription_id

    def start(self) -> None:
        """Start the control loops. Before any of them creates machines, the host re-finds its running machines
        and clears what an interrupted create (a crash mid-boot) left behind; then whatever a previous process
        left in progress resumes."""
        if self.cluster is not None:
            self.cluster.start()  # finds the node hosts and what they hold, before anything is adopted
        if self.host is not None:
            self.host.adopt()
        self.runner.start()
        self.runner.nudge()

    def stop(self) -> None:
        """Stop the control loops (the server is shutting down)."""
        self.runner.stop()
        if self.cluster is not None:
            self.cluster.stop()

    def nudge(self, *names: str) -> None:
        self.runner.nudge(*names)

    def host_fenced(self, name: str) -> bool:
        return self.cluster is not None and self.cluster.host_fenced(name)

    def kill_task(self, task_key: str) -> None:
        """Kill a running task attempt (terminate/delete); its end arrives through the scheduler as usual."""
        for loop in self.runner.reconcilers:
            kill = getattr(loop, "kill", None)
            if loop.name == "tasks" and callable(kill):
                kill(task_key)


def build(settings: Settings, clock: Clock | None = None, *, with_runtime: bool = False) -> Services:
    """Open (and migrate) the state, bootstrap the dev identity, prepare the reconcilers."""
    faults = FaultSource(settings.state_dir / "faults.json")
    clock = clock or FaultClock(faults)
    # The state directory and its secret files are the server user's alone (auth/at_rest.py); the process
    # runtime's unprivileged user must pass through to the store inside it. The server sets the directory's
    # mode when it starts (other commands leave it as the server set it).
    if with_runtime:
        at_rest.lock_down_state_dir(settings.state_dir, traversable=settings.runtime == "process"
                                    and settings.store_dir.parent == settings.state_dir)
    else:
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not settings.database_url:
        at_rest.create_private_file(settings.state_dir / "shoal.db")  # SQLite's -wal/-shm take its mode
    db = Database(settings.db_url)
    db.migrate()
    with db.write() as s:
        dev = identity.bootstrap(s, clock)
    with db.read() as s:
        legacy_key = identity.legacy_signing_key(s)
    keys = [at_rest.load_signing_key(settings.signing_key_file, lambda: legacy_key)]
    if legacy_key is not None:
        with db.write() as s:
            identity.forget_legacy_signing_keys(s)
    at_rest.make_private(settings.secret_files)
    if dev.client_secret is None and settings.credentials_file.exists():
        saved = json.loads(settings.credentials_file.read_text())
        if saved.get("clientId") == dev.client_id:
            dev = identity.DevIdentity(dev.tenant_id, dev.subscription_id, dev.client_id, saved.get("clientSecret"))
    if dev.client_secret is None:
        # A state directory without the secret file (e.g. a new directory on a shared PostgreSQL):
        # give the dev principal a fresh secret rather than leave the operator without credentials.
        with db.write() as s:
            dev = identity.DevIdentity(dev.tenant_id, dev.subscription_id, dev.client_id,
                                       identity.add_secret(s, dev.client_id))
        write_credentials(settings, dev)
    elif not settings.credentials_file.exists():
        write_credentials(settings, dev)
    tokens = TokenService(settings.base_url, keys, clock)
    catalog = Catalog.load(settings.catalog_file)
    vmsizes.configure(load_vm_sizes(settings.vm_sizes_file))  # Azure's published sizes + the operator's
    node_agents.configure(allow_eol=settings.allow_eol_node_agents)
    agent = (HostAgent(settings.store_dir, catalog, runtime=settings.runtime, hide=(str(settings.state_dir),),
                       download_root=settings.base_url, sandbox_options=sandbox_options(settings),
                       import_dir=settings.import_dir, share_host_dirs=settings.share_host_dirs,
                       containers_dir=settings.state_dir / "containers")
             if with_runtime else None)
    if agent is not None:
        settings.node_gateway = agent.gateway
    # Node hosts on Ray (``--ray-address``): the head's agent keeps disks, images and VMs; nodes go to the hosts.
    host: host_protocol.HostAgent = agent  # type: ignore[assignment]
    cluster = None
    if agent is not None and settings.ray_address:
        from shoal.cluster import wiring

        host = cluster = wiring.wrap(agent, settings)
    teardown = agent_teardown(host) if host is not None else {}
    operation_handlers: dict[str, Handler] = {resource_groups.DELETE_KIND: ResourceGroupDeleter(db, clock, teardown)}
    operation_handlers.update(BatchOperations(db, clock).handlers())
    operation_handlers.update(DeploymentWork(db, ComputeContext(
        clock, settings.regions, catalog, settings.base_url, settings.image_limits,
        settings.subscription_core_quota, settings.node_address_space, settings.own_networks,
        host_address=settings.shared_host_address)).handlers())
    loops: list[Reconciler] = []
    allocator = None
    owner = replica_id(settings) if with_runtime else ""
    ttl = timedelta(seconds=settings.lease_seconds)
    if agent is not None:
        work = ComputeWork(db, clock, host, settings.node_address_space, host_address=settings.shared_host_address)
        operation_handlers.update(work.handlers(KINDS))
        allocator = PoolAllocator(db, clock, host, settings.base_url, faults=faults,
                                  core_quota=settings.subscription_core_quota,
                                  address_space=settings.node_address_space, owner=owner, lease_ttl=ttl)
        allocator.node_base_url = settings.node_base_url
        loops.append(allocator)
        agent.transfers = Transfers(agent.machines.run, settings.base_url, lambda: settings.node_base_url,
                                    ca_bundle=settings.tls_dir / "ca.pem")
        scheduler = TaskScheduler(db, clock, host, settings.base_url, claim=LoopClaim(db, clock, "tasks", ttl, owner))
        scheduler.node_base_url = settings.node_base_url
        loops.append(scheduler)
        scaler = AutoScaler(db, clock, host, limits=settings.image_limits,
                            claim=LoopClaim(db, clock, "autoscale", ttl, owner))
        loops.append(scaler)
        loops.append(MachineReconciler(db, clock, host, work, other_machines=lambda: node_machines(db),
                                       claim=LoopClaim(db, clock, "machines", ttl, owner)))
        loops.append(VmNetworkReconciler(db, clock, host, claim=LoopClaim(db, clock, "vmnet", ttl, owner)))
        loops.append(NodeUserLoop(db, clock, host, claim=LoopClaim(db, clock, "nodeusers", ttl, owner),
                                  host_address=settings.shared_host_address))
    loops.insert(0, OperationReconciler(db, clock, operation_handlers, owner=owner, lease_ttl=ttl))
    schedules = JobScheduleLoop(db, clock, claim=LoopClaim(db, clock, "jobschedules", ttl, owner))
    loops.append(schedules)
    if cluster is not None:  # nodes of lost node hosts
        losses = HostLossReconciler(db, clock, cluster, settings.fence_seconds)
        loops.append(losses)
    runner = Runner(loops, settings.reconcile_interval)
    schedules.nudge_tasks = lambda: runner.nudge("tasks")  # jobs it made, ended or deleted
    if allocator is not None:
        # Nodes that came up or finished their start task: another allocation pass (to settle the resize) and the
        # scheduler. Not every loop: this fires once per start task, and the other loops' passes cost in
        # proportion to all the nodes.
        allocator.nudge = lambda: runner.nudge("pools", "tasks")
        allocator.nudge_tasks = lambda: runner.nudge("tasks")  # nodes that came up while a pass goes on
        scheduler.nudge = lambda: runner.nudge("tasks")
        scaler.nudge = lambda: runner.nudge("pools")  # a new target: allocate now
    if cluster is not None:
        losses.nudge = lambda: runner.nudge("pools")
        cluster.on_change = lambda: runner.nudge("hosts")
    return Services(settings, db, clock, tokens, dev, runner, catalog, host, cluster=cluster)


def sandbox_options(settings: Settings) -> SandboxOptions:
    return SandboxOptions(user_namespaces=settings.user_namespaces, network=settings.node_network,
                          address_space=settings.node_address_space, api_ports=(settings.port,),
                          cgroups=settings.cgroups, node_reserve=settings.node_reserve)


def _container_key(db: Database) -> bytes:
    with db.write() as s:
        return containers.signing_key(s)


def replica_id(settings: Settings) -> str:
    """This server's replica id (up to 8 characters): the prefix of the claims it takes, so that at start-up it
    frees its own (it restarted: its work resumes at once) and leaves those of other servers sharing the database
    to expire.

    ``--replica-id`` names it; otherwise it is kept in the state directory so that a restart is the same replica:
    ``replica-id`` with SQLite (one server per database), ``replica-id-<port>`` with PostgreSQL, where several
    replicas of one host may share a state directory (each on its own port)."""
    if settings.replica_id:
        return settings.replica_id
    name = "replica-id" if settings.db_url.startswith("sqlite") else f"replica-id-{settings.port}"
    path = settings.state_dir / name
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if len(found) == 8 and all(c in "0123456789abcdef" for c in found):
        return found
    made = secrets.token_hex(4)
    path.write_text(made + "\n")
    return made


def node_machines(db: Database) -> set[str]:
    """Machines that belong to pool nodes (the VM reconciler must leave them alone)."""
    from sqlalchemy import select

    from shoal.store import models

    with db.read() as s:
        return set(s.scalars(select(models.Node.machine_id)))


def agent_teardown(agent: host_protocol.HostAgent) -> dict[str, ResourceTeardown]:
    """What deleting a resource group must undo on the host, per resource type."""
    return {
        "microsoft.compute/virtualmachines": lambda i: agent.halt(i["machineId"]) if i.get("machineId") else None,
        "microsoft.compute/disks": lambda i: agent.delete_disk(i["upper"]) if i.get("upper") else None,
        "microsoft.compute/galleries/images/versions":
            lambda i: agent.delete_replicas(i["uniqueId"]) if i.get("uniqueId") else None,
    }


def write_credentials(settings: Settings, dev: identity.DevIdentity) -> None:
    data = {"tenantId": dev.tenant_id, "subscriptionId": dev.subscription_id, "clientId": dev.client_id,
            "clientSecret": dev.client_secret}
    path = settings.credentials_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
