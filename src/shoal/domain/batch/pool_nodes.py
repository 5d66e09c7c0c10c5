"""A pool's node records as the allocator reads and writes them: light records of the pool's nodes (loaded once
per pass, without building ORM objects), new nodes (ids, machines, addresses on the pool's subnet, inbound NAT
endpoints) inserted in bulk, nodes marked to leave and deleted in bulk, and what is left to do as SQL EXISTS.

A pool gets its subnet with its first nodes and keeps it for life; a node keeps its address and its NAT port
index for life, and a removed node's address and index are free again for later nodes. Node rows of a pool
are inserted and deleted only by the allocator's pass that holds the pool's claim, so a pass's records of its
pool's nodes, addresses and NAT indexes stay true while it runs; states may change meanwhile (requests, the
scheduler), which is why the state changes here are compare-and-set.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, insert, or_, select, update
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.domain import network
from shoal.domain.batch import natpools, pool_subnets, pools
from shoal.domain.batch.nodes import BULK_CHUNK, NODES
from shoal.domain.networking import records as networking
from shoal.store import models


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What the allocator knows of a node in one pass."""

    key: str
    pool_key: str
    node_id: str
    machine_id: str
    is_dedicated: bool
    state: str
    pending: str
    pending_option: str
    running_tasks: int
    allocation_time: datetime
    ip_address: str
    nat_index: int | None = None  # the index its inbound NAT endpoints were made for (None without any)


_COLUMNS = (NODES.c.key, NODES.c.pool_key, NODES.c.node_id, NODES.c.machine_id, NODES.c.is_dedicated,
            NODES.c.state, NODES.c.pending, NODES.c.pending_option, NODES.c.running_tasks,
            NODES.c.allocation_time, NODES.c.ip_address)


def load(s: Session, pool: models.Pool) -> list[NodeRecord]:
    """The pool's nodes, by key. Their NAT endpoints are read only for a pool that has NAT pools."""
    nat = bool(natpools.node_capacity(pool.spec))
    columns = (*_COLUMNS, NODES.c.endpoints) if nat else _COLUMNS
    rows = s.execute(select(*columns).where(NODES.c.pool_key == pool.key).order_by(NODES.c.key)).all()
    return [_record(row, natpools.node_index(row[-1] or []) if nat else None) for row in rows]


def _record(row: Sequence[Any], nat_index: int | None) -> NodeRecord:
    return NodeRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
                      nat_index)


def mark_leaving(s: Session, keys: Sequence[str], option: str) -> list[str]:
    """Mark nodes to leave the pool, with the deallocation option for their running tasks (nodes already
    leaving keep theirs). Returns the keys marked now."""
    marked: list[str] = []
    for i in range(0, len(keys), BULK_CHUNK):
        stmt = (update(NODES).where(NODES.c.key.in_(keys[i:i + BULK_CHUNK]), NODES.c.pending != "remove")
                .values(pending="remove", pending_option=option, version=NODES.c.version + 1)
                .returning(NODES.c.key))
        marked.extend(s.execute(stmt).scalars())
    return marked


def subnet_for(s: Session, pool: models.Pool, space: str) -> str:
    """The pool's subnet, given on first use (the first subnet of the space no pool or virtual network holds)."""
    if pool.subnet is None:
        pool.subnet = network.allocate_subnet(space, [*s.scalars(select(models.Pool.subnet)),
                                                      *networking.held_subnets(s)])
    return pool.subnet


def add(s: Session, clock: Clock, pool: models.Pool, dedicated: int, low_priority: int,
        existing: Sequence[NodeRecord], public_address: tuple[str, str], space: str, *,
        own_network: bool) -> list[NodeRecord]:
    """New ``creating`` nodes, inserted in one statement: ``dedicated`` then ``low_priority`` ones, each with a
    free address of the pool's subnet and the lowest free NAT index (``existing``: the pool's nodes, as
    :func:`load` read them). ``public_address`` is (IP, name) where inbound endpoints listen; with
    ``own_network`` (machines with networks of their own) each pool's endpoints listen on an address of its own."""
    count = dedicated + low_priority
    if not count:
        return []
    used = {n.nat_index for n in existing if n.nat_index is not None}
    subnet = subnet_for(s, pool, space)
    taken, size = [n.ip_address for n in existing], None
    if pool.public_address:  # on a virtual network's subnet, which VMs and other pools share
        taken += pool_subnets.addresses_taken(s, subnet, pool.key)
        size = pool_subnets.size_of(s, pool)
    addresses = network.allocate_addresses(subnet, taken, count, size)
    if own_network:
        public_address = (pool.public_address or network.public_address(space, subnet), public_address[1])
    now = clock.now()
    rows: list[dict[str, Any]] = []
    records: list[NodeRecord] = []
    for i in range(count):
        node_id = pools.new_node_id(clock)
        endpoints = natpools.assign(pool.spec, used, *public_address)
        if not endpoints and own_network:  # Azure's default SSH endpoint (pools without NAT pools)
            endpoints = natpools.default_ssh(pool.spec, subnet, addresses[i], *public_address)
        record = NodeRecord(f"{pool.key}/{node_id}", pool.key, node_id, f"node-{uuid.uuid4().hex[:16]}",
                            i < dedicated, "creating", "", "", 0, now, addresses[i],
                            natpools.node_index(endpoints))
        records.append(record)
        rows.append({"key": record.key, "pool_key": pool.key, "node_id": node_id, "machine_id": record.machine_id,
                     "is_dedicated": record.is_dedicated, "state": "creating", "scheduling_state": "enabled",
                     "state_transition_time": now, "allocation_time": now, "ip_address": record.ip_address,
                     "pending": "", "pending_option": "", "errors": [], "endpoints": endpoints,
                     "total_tasks_run": 0, "total_tasks_succeeded": 0, "running_tasks": 0, "running_slots": 0,
                     "version": 1})
    s.execute(insert(NODES), rows)
    return records


def delete_nodes(s: Session, keys: Sequence[str]) -> None:
    """Delete node records (nodes that have left)."""
    for i in range(0, len(keys), BULK_CHUNK):
        s.execute(delete(NODES).where(NODES.c.key.in_(keys[i:i + BULK_CHUNK])))


def has_nodes(s: Session, pool_key: str) -> bool:
    return bool(s.scalar(select(exists().where(NODES.c.pool_key == pool_key))))


def has_leaving(s: Session, pool_key: str) -> bool:
    """Whether nodes of the pool are marked to leave and still there."""
    return bool(s.scalar(select(exists().where(NODES.c.pool_key == pool_key, NODES.c.pending == "remove"))))


def has_work_left(s: Session, pool_key: str) -> bool:
    """Whether nodes of the pool are still to boot or to remove (another pass should follow at once)."""
    return bool(s.scalar(select(exists().where(NODES.c.pool_key == pool_key, or_(
        NODES.c.state == "creating", NODES.c.pending == "remove")))))
