"""A pool's node records as the allocator writes them: new nodes (ids, machines, addresses on the pool's
subnet, inbound NAT endpoints) and nodes marked to leave.

A pool gets its subnet with its first nodes and keeps it for life; a node keeps its address and its NAT port
index for life, and a removed node's address and index are free again for later nodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.domain import network
from shoal.domain.batch import natpools, pools
from shoal.store import models


def mark_leaving(nodes: dict[str, models.Node], keys: Iterable[str], option: str) -> None:
    """Mark nodes to leave the pool (with the deallocation option for their running tasks)."""
    for key in keys:
        node = nodes.get(key)
        if node is not None and node.pending != "remove":
            node.pending, node.pending_option = "remove", option


def subnet_for(s: Session, pool: models.Pool, space: str) -> str:
    """The pool's subnet, given on first use (the first subnet of the space no pool holds)."""
    if pool.subnet is None:
        pool.subnet = network.allocate_subnet(space, s.scalars(select(models.Pool.subnet)))
    return pool.subnet


def add(s: Session, clock: Clock, pool: models.Pool, dedicated: int, low_priority: int, existing: Iterable[models.Node],
        public_address: tuple[str, str], space: str, *, own_network: bool) -> None:
    """New ``creating`` nodes: ``dedicated`` then ``low_priority`` ones, each with a free address of the pool's
    subnet and the lowest free NAT index. ``public_address`` is (IP, name) where inbound endpoints listen; with
    ``own_network`` (machines with networks of their own) each pool's endpoints listen on an address of its own."""
    count = dedicated + low_priority
    if not count:
        return
    existing = list(existing)
    used = {i for i in (natpools.node_index(n.endpoints or []) for n in existing) if i is not None}
    subnet = subnet_for(s, pool, space)
    addresses = network.allocate_addresses(subnet, [n.ip_address for n in existing], count)
    if own_network:
        public_address = (network.public_address(space, subnet), public_address[1])
    now = clock.now()
    for i in range(count):
        s.add(new_node(pool, clock, now, dedicated=i < dedicated, address=addresses[i],
                       endpoints=natpools.assign(pool.spec, used, *public_address)))


def new_node(pool: models.Pool, clock: Clock, now: datetime, *, dedicated: bool, address: str,
             endpoints: list[dict[str, Any]]) -> models.Node:
    """A new node record: ``creating``, with a machine of its own to boot."""
    node_id = pools.new_node_id(clock)
    return models.Node(
        key=f"{pool.key}/{node_id}", pool_key=pool.key, node_id=node_id,
        machine_id=f"node-{uuid.uuid4().hex[:16]}", is_dedicated=dedicated,
        state="creating", scheduling_state="enabled", state_transition_time=now, allocation_time=now,
        ip_address=address, pending="", pending_option="", errors=[], endpoints=endpoints,
        total_tasks_run=0, total_tasks_succeeded=0, running_tasks=0, running_slots=0)
