"""An image's lineage as a graph: where it came from and what uses it.

    marketplace base -> VM -> disks -> snapshots -> managed image -> gallery version -> replicas by region
                                                                                      -> pools using it

Each disk, snapshot and image records where it came from (``internal["lineage"]``, see
``compute/content.py``); gallery versions record their source image; pools record the image they were made
from (``Pool.content["resolvedId"]``). This module reads those records into plain nodes and edges, by stage,
for the portal's lineage view (drawn on the page and as SVG).
"""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.core import ids
from shoal.domain.compute import sources
from shoal.store import models

# Stages, left to right; every node has one.
STAGES = ("base", "vm", "disk", "snapshot", "image", "version", "replica", "pool")
_STAGE_OF_TYPE = {sources.VMS.lower(): "vm", sources.DISKS.lower(): "disk", sources.SNAPSHOTS.lower(): "snapshot",
                  sources.IMAGES.lower(): "image", sources.GALLERY_VERSIONS.lower(): "version"}


class Graph:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: set[tuple[str, str]] = set()

    def node(self, key: str, stage: str, label: str, **extra: Any) -> str:
        self.nodes.setdefault(key, {"id": key, "stage": stage, "label": label, **extra})
        return key

    def edge(self, source: str | None, target: str | None) -> None:
        if source and target and source != target:
            self.edges.add((source, target))

    def as_dict(self) -> dict[str, Any]:
        order = {stage: i for i, stage in enumerate(STAGES)}
        nodes = sorted(self.nodes.values(), key=lambda n: (order[n["stage"]], n["label"].lower()))
        return {"stages": list(STAGES), "nodes": nodes,
                "edges": [{"from": a, "to": b} for a, b in sorted(self.edges)]}


def image_lineage(s: Session, resource_id: str) -> dict[str, Any]:
    """The lineage graph around a managed image, gallery image version, snapshot, disk or VM: its sources up to
    the marketplace base, and downstream the gallery versions made from it, their replicas, and the pools using
    any of them. An unknown resource gives an empty graph."""
    graph = Graph()
    start = _row(s, resource_id)
    if start is None:
        return graph.as_dict()
    top = _upstream(s, graph, start)
    _downstream(s, graph, start, top)
    return graph.as_dict()


def _row(s: Session, resource_id: str) -> models.Resource | None:
    try:
        return s.get(models.Resource, ids.key(resource_id))
    except ValueError:
        return None


def _add_resource(graph: Graph, row: models.Resource) -> str:
    stage = _STAGE_OF_TYPE.get(row.type_key, "image")
    return graph.node(row.key, stage, row.name, resourceId=row.id, location=row.location,
                      state=row.provisioning_state)


def _upstream(s: Session, graph: Graph, row: models.Resource) -> str:
    """Add the resource and the chain it came from, each stage linked to the next one present."""
    lineage = row.internal.get("lineage") or {}
    chain: list[list[str]] = []
    base = lineage.get("baseImage")
    if base:
        urn = ":".join(str(base.get(k, "")) for k in ("publisher", "offer", "sku", "version"))
        chain.append([graph.node(f"base:{urn.lower()}", "base", urn)])
    # The VM: recorded when an image is captured from it; for images from its disks' snapshots, the VM the disks
    # are (still) attached to.
    vms = [lineage["sourceVm"]] if lineage.get("sourceVm") else []
    for disk_id in lineage.get("sourceDisks") or []:
        disk = _row(s, disk_id)
        owner = disk.internal.get("attachedTo") if disk is not None else None
        if owner and str(owner).lower() not in {v.lower() for v in vms}:
            vms.append(str(owner))
    if vms:
        chain.append([_source(s, graph, vm, "vm") for vm in vms])
    for field, stage in (("sourceDisks", "disk"), ("sourceSnapshots", "snapshot")):
        found = [_source(s, graph, v, stage) for v in lineage.get(field) or []]
        if found:
            chain.append(found)
    if lineage.get("sourceImage"):
        chain.append([_source(s, graph, lineage["sourceImage"], "image")])
    me = _add_resource(graph, row)
    chain = [[k for k in stage if k != me] for stage in chain]
    chain = [stage for stage in chain if stage] + [[me]]
    for before, after in itertools.pairwise(chain):
        for a in before:
            for b in after:
                graph.edge(a, b)
    return me


def _source(s: Session, graph: Graph, resource_id: str, stage: str) -> str:
    row = _row(s, resource_id)
    if row is not None:
        return _add_resource(graph, row)
    # Deleted since (an image outlives its snapshots): still part of the story, marked as gone.
    name = str(resource_id).rstrip("/").rsplit("/", 1)[-1]
    return graph.node(str(resource_id).lower(), stage, name, resourceId=str(resource_id), state="Deleted")


def _downstream(s: Session, graph: Graph, row: models.Resource, me: str) -> None:
    """Gallery versions made from the image, their replicas by region, and pools using the image or a version."""
    users = [row]
    if row.type_key == sources.IMAGES.lower():
        for version in s.scalars(select(models.Resource).where(
                models.Resource.type_key == sources.GALLERY_VERSIONS.lower())):
            source = ((version.properties.get("storageProfile") or {}).get("source") or {}).get("id") \
                or (version.internal.get("lineage") or {}).get("sourceImage")
            if source and str(source).lower() == row.key:
                graph.edge(me, _add_resource(graph, version))
                users.append(version)
    for user in users:
        if user.type_key != sources.GALLERY_VERSIONS.lower():
            continue
        regions = (user.properties.get("publishingProfile") or {}).get("targetRegions") or \
            [{"name": user.location}]
        for region in regions:
            name = str(region.get("name") or "").replace(" ", "").lower()
            if name:
                graph.edge(user.key, graph.node(f"{user.key}#replica:{name}", "replica", name,
                                                replicas=region.get("regionalReplicaCount", 1)))
    keys = {u.key for u in users}
    for pool in s.scalars(select(models.Pool)):
        resolved = str((pool.content or {}).get("resolvedId") or "").lower()
        if resolved not in keys:
            continue
        # A pool uses the replica in its account's region, where there is one.
        account_row = s.get(models.Resource, pool.account_key)
        region = str(account_row.location or "").replace(" ", "").lower() if account_row is not None else ""
        replica = f"{resolved}#replica:{region}"
        source = replica if replica in graph.nodes else resolved
        account = pool.account_key.rsplit("/", 1)[-1]
        graph.edge(source, graph.node(f"pool:{pool.key}", "pool", f"{account}/{pool.pool_id}",
                                      state=pool.state, nodes=pool.target_dedicated + pool.target_low_priority))
