"""Keeps machines on this host in line with the VMs that should be running, and collects unused layers.

Level-triggered: each pass compares what the store says (VM power state) with what the host agent observes
(is the machine's init alive?) and boots or tears down machines. It is also what brings VMs back after a
host reboot or a crash of ``shoal serve`` (once the server has adopted the machines still running). VMs with
an operation in progress are left to that operation.

The loop runs on one replica at a time (``reconcilers/base.py`` LoopClaim "machines"): replicas sharing a
database share one machine store, and two of them booting or tearing down the same machines would fight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import select

from shoal.core.clock import Clock
from shoal.domain import operations
from shoal.domain.compute import content as ct
from shoal.domain.compute import sources, vms
from shoal.domain.host import HostAgent
from shoal.reconcilers.base import LoopClaim
from shoal.reconcilers.compute import ComputeWork
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)

GC_EVERY = 300.0  # seconds between layer garbage collections
# Seconds between sweeps for machines no VM or node owns (left by a crash, or by an operation cut short). A sweep
# lists every machine of every host and every node's machine: its cost follows the size of the whole system, so it
# does not run at every pass.
STRAY_SWEEP_EVERY = 10.0
GC_GRACE = 600.0  # a layer younger than this is never collected (it may belong to a capture in progress)


class MachineReconciler:
    name = "machines"

    def __init__(self, db: Database, clock: Clock, agent: HostAgent, work: ComputeWork,
                 other_machines: Callable[[], set[str]] = set, claim: LoopClaim | None = None) -> None:
        """``claim``: the loop's claim (None: this process is the only one on the database, e.g. tests)."""
        self.db, self.clock, self.agent, self.work = db, clock, agent, work
        self.claim = claim
        self.other_machines = other_machines  # machine ids owned by something else (pool nodes)
        self._last_gc = 0.0
        self._last_sweep = 0.0

    def release_claims(self) -> None:
        """At start-up: free this server's claim on the loop from before it restarted."""
        if self.claim is not None:
            self.claim.release_claims()

    def run_once(self) -> bool:
        if self.claim is not None and not self.claim.hold():
            return False
        # The host's machines were adopted before any reconciler started (``api/app.py``): adopting again here
        # would race with the allocator's boots (an init not yet recorded looks like a stray).
        busy, rows = self._vms()
        wanted = _wanted(busy, rows)
        for vm in rows:
            machine_id = vm.internal.get("machineId")
            if not machine_id or vm.id.lower() in busy or vm.provisioning_state == "Creating":
                continue
            if vm.internal.get("power") == vms.POWER_RUNNING and vm.provisioning_state == "Succeeded" \
                    and self.agent.status(machine_id) != "running":
                log.info("booting VM %s again (its machine was not running)", vm.id)
                try:
                    self.agent.boot(self.work.machine_of(vm))
                    self.work.start_guest_services(vm)
                except Exception:
                    log.exception("could not boot VM %s", vm.id)
        if time.monotonic() - self._last_sweep > STRAY_SWEEP_EVERY:
            self._last_sweep = time.monotonic()
            self.sweep_strays(wanted)
        if time.monotonic() - self._last_gc > GC_EVERY:
            self._last_gc = time.monotonic()
            self.collect_garbage()
        return False

    def sweep_strays(self, wanted: set[str]) -> None:
        """Tear down the machines that no VM (``wanted``) or node owns."""
        strays = set(self.agent.machine_ids()) - wanted - self.other_machines()
        if strays:
            # The VMs were read before the machines were listed: a VM created in between (its machine booted
            # since) is owned all the same. Read them again now that the list is taken.
            strays -= _wanted(*self._vms())
        for machine_id in strays:
            log.info("tearing down machine %s: no VM or node owns it", machine_id)
            self.agent.halt(machine_id)

    def _vms(self) -> tuple[set[str], list[models.Resource]]:
        """Ids of resources with an operation in progress, and every VM row.

        A VM in a resource group being deleted counts as busy: the deletion tears its machine down before it
        deletes the row, and booting the machine again in between would leave it behind with no VM."""
        with self.db.read() as s:
            busy = {op.target_id.lower() for op in s.scalars(select(models.Operation).where(
                models.Operation.status == operations.IN_PROGRESS))}
            deleting = set(s.scalars(select(models.ResourceGroup.key).where(
                models.ResourceGroup.provisioning_state == "Deleting")))
            rows = list(s.scalars(select(models.Resource).where(models.Resource.type_key == sources.VMS.lower())))
        busy |= {vm.id.lower() for vm in rows if vm.group_key in deleting}
        return busy, rows

    def collect_garbage(self) -> list[str]:
        return collect_garbage(self.db, self.agent, GC_GRACE)


def _wanted(busy: set[str], rows: list[models.Resource]) -> set[str]:
    """The machines that VMs own: those of VMs being worked on or created, of running VMs, and of generalized VMs
    (booted for a moment to be deprovisioned before a capture)."""
    return {vm.internal["machineId"] for vm in rows if vm.internal.get("machineId") and (
        vm.id.lower() in busy or vm.provisioning_state == "Creating" or vm.internal.get("deprovision")
        or (vm.internal.get("power") == vms.POWER_RUNNING and vm.provisioning_state == "Succeeded"))}


def referenced_layers(db: Database) -> set[str]:
    """Every layer digest some disk, snapshot, image or gallery version references (the mark phase)."""
    with db.read() as s:
        referenced: set[str] = set()
        for row in s.scalars(select(models.Resource).where(models.Resource.type_key.like("microsoft.compute/%"))):
            referenced |= ct.image_layers(row.internal)
    return referenced


def collect_garbage(db: Database, agent: HostAgent, grace: float) -> list[str]:
    """Mark and sweep: referenced layers stay, and so do layers younger than ``grace`` seconds (a capture
    that has produced a layer but not yet recorded it must not lose it)."""
    referenced = referenced_layers(db)
    young = {layer["digest"] for layer in agent.layer_inventory() if layer["ageSeconds"] < grace}
    removed = agent.gc_layers(sorted(referenced | young))
    if removed:
        log.info("garbage-collected %d unreferenced layers", len(removed))
    return removed
