"""Nodes that are gone, remembered while their logs are kept.

On Azure a task's ``stdout.txt``/``stderr.txt`` and a node's start-task logs are lost with the node (resized
away, its pool deleted, or reimaged as unusable), one of the most common complaints of Batch users. Shoal keeps
them: the host agent moves a retiring node's logs aside, and the file API keeps answering for them until the
retention time of the tasks that ran there (at least Azure's default task retention, 7 days, which also covers
the start task's logs).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.store import models

DEFAULT_RETENTION = timedelta(days=7)


_CHUNK = 500


class Retiring(Protocol):
    """What is remembered of a node that goes (its row, or a lighter record of it)."""

    @property
    def key(self) -> str: ...
    @property
    def pool_key(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def machine_id(self) -> str: ...


def remember(s: Session, clock: Clock, node: Retiring) -> str | None:
    """Record a node that is about to go, with how long its logs stay: the latest retention of the tasks that ran
    on it, and at least the default retention. Returns the machine of an earlier node of the same key whose logs
    are no longer reachable (to be forgotten), if any."""
    return next(iter(remember_all(s, clock, [node])), None)


def remember_all(s: Session, clock: Clock, nodes: Sequence[Retiring]) -> list[str]:
    """:func:`remember` for many nodes, with a few statements for all of them. Returns the machines whose logs
    are no longer reachable (to be forgotten)."""
    now = clock.now()
    latest: dict[str, datetime] = {}
    rows: dict[str, models.RetiredNode] = {}
    keys = [n.key for n in nodes]
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i:i + _CHUNK]
        latest.update((key, at) for key, at in s.execute(
            select(models.Task.node_key, func.max(models.Task.files_expire_at))
            .where(models.Task.node_key.in_(chunk)).group_by(models.Task.node_key)) if key is not None and at)
        rows.update((r.key, r) for r in s.scalars(select(models.RetiredNode).where(models.RetiredNode.key.in_(chunk))))
    replaced = []
    for node in nodes:
        expire = max(now + DEFAULT_RETENTION, latest[node.key]) if node.key in latest else now + DEFAULT_RETENTION
        row = rows.get(node.key)
        if row is None:
            rows[node.key] = row = models.RetiredNode(key=node.key, pool_key=node.pool_key, node_id=node.node_id,
                                                      machine_id=node.machine_id, retired_at=now,
                                                      logs_expire_at=expire)
            s.add(row)
            continue
        # A node id used again (a new node of the same name): the latest machine's logs are the ones served.
        if row.machine_id != node.machine_id:
            replaced.append(row.machine_id)
        row.machine_id, row.retired_at, row.logs_expire_at = node.machine_id, now, expire
    return replaced


def machine_of_node(s: Session, pool_key: str, node_id: str) -> str | None:
    """The machine of a node that is gone, while its logs are kept."""
    row = s.get(models.RetiredNode, f"{pool_key}/{node_id}")
    return row.machine_id if row is not None else None


def machine_of_key(s: Session, node_key: str) -> str | None:
    row = s.get(models.RetiredNode, node_key)
    return row.machine_id if row is not None else None


def expired(s: Session, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
    """(node key, machine id) of retired nodes whose logs are past their time."""
    return [(r.key, r.machine_id) for r in s.scalars(
        select(models.RetiredNode).where(models.RetiredNode.logs_expire_at <= now)
        .order_by(models.RetiredNode.logs_expire_at).limit(limit))]


def forget(s: Session, keys: list[str]) -> None:
    for key in keys:
        row = s.get(models.RetiredNode, key)
        if row is not None:
            s.delete(row)
