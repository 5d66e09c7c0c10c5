"""The VM machines loop against a resource group's deletion (on SQLite and PostgreSQL): the deletion tears a VM's
machine down before it deletes the VM's row, and the loop must not boot the machine again in between. The same
path runs end to end through ``az``-style clients in ``test_cleanup_cascade.py``, where this race was seen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness import scratch_database
from shoal.core import ids
from shoal.core.clock import Clock
from shoal.domain import identity, resource_groups, resources
from shoal.domain.compute import sources, vms
from shoal.reconcilers.machines import MachineReconciler
from shoal.reconcilers.operations import OperationWork
from shoal.reconcilers.resource_groups import ResourceGroupDeleter
from shoal.store.db import Database


class Machines:
    """The host agent as the loop sees it: which machines run, and boots and halts."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.boots: list[str] = []

    def status(self, machine_id: str) -> str:
        return "running" if machine_id in self.running else "missing"

    def boot(self, machine: dict[str, Any]) -> dict[str, Any]:
        self.running.add(machine["id"])
        self.boots.append(machine["id"])
        return {}

    def halt(self, machine_id: str, *, keep_temp: bool = False) -> None:
        self.running.discard(machine_id)

    def machine_ids(self) -> list[str]:
        return sorted(self.running)

    def layer_inventory(self) -> list[dict[str, Any]]:
        return []

    def gc_layers(self, keep: list[str]) -> list[str]:
        return []


class Work:
    def machine_of(self, vm: Any) -> dict[str, Any]:
        return {"id": vm.internal["machineId"]}

    def start_guest_services(self, vm: Any) -> None:
        pass


@pytest.fixture
def db(database_url: str | None) -> Iterator[Database]:
    with scratch_database(database_url) as database:
        yield database


def running_vm(db: Database, clock: Clock) -> tuple[str, str]:
    """A resource group holding one running VM whose machine is up; its group id and machine id."""
    with db.write() as s:
        sub = identity.bootstrap(s, clock).subscription_id
        resource_groups.create_or_update(s, clock, sub, "rg", resource_groups.GroupSpec("westus", None, None),
                                         ("westus",))
        rid = ids.parse(f"/subscriptions/{sub}/resourceGroups/rg/providers/{sources.VMS}/vm1")
        resources.create_row(s, clock, rid, location="westus", properties={}, provisioning_state="Succeeded",
                             internal={"machineId": "vm-1", "power": vms.POWER_RUNNING})
    return ids.resource_group_id(sub, "rg"), "vm-1"


def test_a_vm_whose_group_is_being_deleted_is_not_booted_again_between_its_teardown_and_its_rows_deletion(
        db: Database) -> None:
    clock = Clock()
    group_id, machine_id = running_vm(db, clock)
    agent = Machines()
    loop = MachineReconciler(db, clock, agent, Work())  # type: ignore[arg-type]
    loop.run_once()
    assert agent.boots == [machine_id]  # a running VM whose machine is down is booted again: the loop is live

    def halt_then_let_the_loop_pass(internal: dict[str, Any]) -> None:
        agent.halt(internal["machineId"])
        loop.run_once()  # the loop's pass falls between the teardown and the deletion of the rows

    with db.write() as s:
        sub = ids.parse(group_id).subscription
        op = resource_groups.begin_delete(s, clock, sub, "rg")
        work = OperationWork(op.id, op.kind, op.target_id, op.subscription_id, dict(op.payload))
    deleter = ResourceGroupDeleter(db, clock, {sources.VMS.lower(): halt_then_let_the_loop_pass})
    assert deleter(work).done
    assert agent.boots == [machine_id]
    assert agent.running == set()


def test_the_sweep_tears_down_machines_that_no_vm_or_node_owns_and_keeps_the_others(db: Database) -> None:
    clock = Clock()
    _, owned = running_vm(db, clock)
    agent = Machines()
    agent.running |= {owned, "node-1", "left-by-a-crash"}
    loop = MachineReconciler(db, clock, agent, Work(), other_machines=lambda: {"node-1"})  # type: ignore[arg-type]
    loop.run_once()
    assert agent.running == {owned, "node-1"}
    assert agent.boots == []
