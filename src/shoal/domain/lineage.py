"""An image's lineage as a graph: where it came from and what uses it.

    marketplace base -> VM -> disks -> snapshots -> managed image -> gallery version -> replicas by region
                                                                                      -> pools using it

Each disk, snapshot and image records where it came from (``internal["lineage"]``, see
``compute/content.py``); gallery versions record their source image; pools record the image they were made
from (``Pool.content["resolvedId"]``). This module reads those records into plain nodes and edges, by stage,
for the portal's lineage view (drawn on the page and as SVG).
"""

from __future__ import annotations

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
    """Add the resource and where it came from, each resource linked to its own direct sources."""
    me = _add_resource(graph, row)
    _link_sources(s, graph, me, graph.nodes[me]["stage"], _stages_of(s, row), set())
    return me


def _stages_of(s: Session, row: models.Resource | None, inherited: list[tuple[str, list[str]]] | None = None
               ) -> list[tuple[str, list[str]]]:
    """What a resource records of its sources, by stage (oldest first). A resource that records nothing (a VM,
    or one deleted since) is described by what its child recorded."""
    lineage = (row.internal.get("lineage") if row is not None else None) or {}
    stages: list[tuple[str, list[str]]] = []
    base = lineage.get("baseImage")
    if base:
        stages.append(("base", [":".join(str(base.get(k, "")) for k in ("publisher", "offer", "sku", "version"))]))
    # The VM: recorded when an image is captured from it; for a disk (and what was made from its snapshots), the
    # VM the disk is attached to.
    vms = [str(lineage["sourceVm"])] if lineage.get("sourceVm") else []
    disks = [str(d) for d in lineage.get("sourceDisks") or []]
    owners = [row] if row is not None and row.type_key == sources.DISKS.lower() else [_row(s, d) for d in disks]
    for disk in owners:
        owner = disk.internal.get("attachedTo") if disk is not None else None
        if owner and str(owner).lower() not in {v.lower() for v in vms}:
            vms.append(str(owner))
    stages += [("vm", vms), ("disk", disks), ("snapshot", [str(x) for x in lineage.get("sourceSnapshots") or []]),
               ("image", [str(lineage["sourceImage"])] if lineage.get("sourceImage") else [])]
    stages = [(stage, found) for stage, found in stages if found]
    return stages if stages or inherited is None else inherited


def _link_sources(s: Session, graph: Graph, child: str, child_stage: str, stages: list[tuple[str, list[str]]],
                  visited: set[tuple[str, int]]) -> None:
    """Link ``child`` to its direct sources (the nearest earlier stage it records), then each source to its own."""
    order = {stage: i for i, stage in enumerate(STAGES)}
    earlier = [(stage, found) for stage, found in stages if order[stage] < order[child_stage]]
    if not earlier:
        return
    stage, found = earlier[-1]
    for source in found:
        if stage == "base":
            key = graph.node(f"base:{source.lower()}", "base", source)
            row = None
        else:
            row = _row(s, source)
            key = _add_resource(graph, row) if row is not None else _gone(graph, source, stage)
        graph.edge(key, child)
        # A source reached again with more of the story (a VM found through its OS disk after its data disk)
        # is followed again; edges are a set, so nothing doubles.
        if (key, len(earlier)) not in visited:
            visited.add((key, len(earlier)))
            _link_sources(s, graph, key, stage, _stages_of(s, row, inherited=earlier[:-1]), visited)


def _gone(graph: Graph, resource_id: str, stage: str) -> str:
    """A source deleted since (an image outlives its snapshots): still part of the story, marked as gone."""
    name = resource_id.rstrip("/").rsplit("/", 1)[-1]
    return graph.node(resource_id.lower(), stage, name, resourceId=resource_id, state="Deleted")


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
