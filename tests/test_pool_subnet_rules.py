"""Fast unit tests of the rules for pools in a virtual network's subnet: addresses counted against the subnet as
declared, partial allocation then a resize error, and an NSG compiled for a whole subnet (its destinations
mapped onto the /20 the subnet is served on)."""

from __future__ import annotations

import fcntl
import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shoal.core import errors
from shoal.domain import network
from shoal.domain.batch import allocation, pool_subnets
from shoal.domain.networking import machines
from shoal.runtime import nodenet

NOW = datetime(2026, 12, 5, tzinfo=UTC)
SERVED_ON = "10.224.16.0/20"


def test_a_declared_subnet_holds_its_own_size_less_azures_reserved_addresses() -> None:
    assert network.declared_size("10.0.1.0/29") == 8
    first, last = network.usable_range(SERVED_ON, 8)
    assert (str(ipaddress.IPv4Address(first)), str(ipaddress.IPv4Address(last))) == ("10.224.16.4", "10.224.16.6")
    assert network.allocate_addresses(SERVED_ON, ["10.224.16.4"], 2, 8) == ["10.224.16.5", "10.224.16.6"]
    with pytest.raises(errors.SubnetIsFull):
        network.allocate_addresses(SERVED_ON, ["10.224.16.4"], 3, 8)
    # a declared subnet larger than the /20 it is served on holds what the /20 holds
    assert network.usable_range(SERVED_ON, 1 << 16) == network.usable_range(SERVED_ON)


def _pool(dedicated: int, low: int = 0) -> allocation.PoolView:
    return allocation.PoolView("active", "resizing", dedicated, low, NOW, timedelta(minutes=15))


def test_a_subnet_with_too_few_addresses_allocates_what_fits_then_reports_the_error() -> None:
    full = pool_subnets.subnet_full("/subscriptions/s/.../subnets/nodes")
    first = allocation.decide(_pool(3, 2), [], NOW, subnet_room=(2, full))
    assert (first.create_dedicated, first.create_low_priority, first.errors) == (2, 0, [])
    assert not first.complete
    made = [allocation.NodeView(f"n{i}", True, "creating", "") for i in range(2)]
    second = allocation.decide(_pool(3, 2), made, NOW, subnet_room=(0, full))
    assert (second.create_dedicated, second.create_low_priority) == (0, 0)
    assert second.settle and second.errors == [full] and second.errors[0]["code"] == "AllocationFailed"
    # low-priority nodes share the subnet's addresses with dedicated ones
    mixed = allocation.decide(_pool(1, 5), [], NOW, subnet_room=(3, full))
    assert (mixed.create_dedicated, mixed.create_low_priority) == (1, 2)
    # a shrink needs no address
    shrink = allocation.decide(_pool(1), made, NOW, subnet_room=(0, full))
    assert shrink.errors == [] and len(shrink.remove) == 1


def _rule(priority: int, access: str, port: str, destination: str = "*") -> dict[str, object]:
    return {"name": f"r{priority}", "properties": {
        "priority": priority, "access": access, "direction": "Inbound", "protocol": "Tcp", "sourcePortRange": "*",
        "destinationPortRange": port, "sourceAddressPrefix": "*", "destinationAddressPrefix": destination}}


def test_a_subnets_nsg_names_its_destinations_on_the_served_subnet() -> None:
    rules = [_rule(100, "Deny", "8080", "10.0.1.5/32"), _rule(110, "Allow", "8080", "10.0.1.0/24"),
             _rule(120, "Deny", "22", "10.0.2.0/24"), _rule(130, "Allow", "9000", "10.0.0.0/16")]
    compiled = machines.compile_rules(rules, None, [SERVED_ON], ("10.0.1.0/24", SERVED_ON))
    by_priority = {r["priority"]: r for r in compiled}
    assert by_priority[100]["destinations"] == ["10.224.16.5/32"] and not by_priority[100]["allow"]
    assert "destinations" not in by_priority[110] and "destinations" not in by_priority[130]  # the whole subnet
    assert 120 not in by_priority  # another subnet's rule
    assert [r["priority"] for r in compiled][-3:] == [65000, 65001, 65500]  # Azure's defaults close the list
    assert nodenet._filter_rule(by_priority[100]) == \
        "ip daddr { 10.224.16.5/32 } meta l4proto tcp th dport { 8080 } drop"


def test_a_node_address_space_is_in_use_while_a_server_holds_its_claim(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """What the claim of a running server looks like from outside (the test harness picks free spaces by it)."""
    monkeypatch.setattr(nodenet, "LOCK_DIR", tmp_path)
    space = "10.200.0.0/14"
    assert not nodenet.space_in_use(space)
    with open(nodenet.claim_path(space), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert nodenet.space_in_use(space) and not nodenet.space_in_use("10.204.0.0/14")
    assert not nodenet.space_in_use(space), "free once its owner is gone"
