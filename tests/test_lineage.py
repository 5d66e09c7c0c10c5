"""An image's lineage graph, from the records the seed's workflow leaves: base -> VM -> disks -> snapshots ->
image -> gallery version -> replicas -> pools; and its SVG drawing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from azure.batch import models as bm

from batch_fixtures import NODE_AGENT, create_account, prepare_image
from harness import ShoalServer
from shoal.api import lineage_svg
from shoal.azure import Shoal
from shoal.domain.lineage import image_lineage
from shoal.store.db import Database


def test_lineage_of_a_prepared_image_reaches_from_its_base_to_the_pools_using_it(server: ShoalServer,
                                                                                   shoal: Shoal) -> None:
    image = prepare_image(shoal)
    account = create_account(shoal, image.group)
    client = shoal.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id="from-version", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(virtual_machine_image_id=image.version_id),
            node_agent_sku_id=NODE_AGENT)))
    db = Database(server.database_url or f"sqlite:///{server.state_dir / 'shoal.db'}")
    try:
        with db.read() as s:
            graph = image_lineage(s, image.image_id)
            from_version = image_lineage(s, image.version_id)
            unknown = image_lineage(s, image.image_id + "-gone")
    finally:
        db.dispose()

    by_stage: dict[str, list[str]] = {}
    for node in graph["nodes"]:
        by_stage.setdefault(node["stage"], []).append(node["label"])
    assert by_stage["base"] == ["shoal:host:host:latest"] or by_stage["base"][0].startswith("shoal:host:host:")
    assert by_stage["vm"] == ["prep"]
    assert len(by_stage["disk"]) == 2 and sorted(by_stage["snapshot"]) == ["data-snap", "os-snap"]
    assert by_stage["image"] == ["img"] and by_stage["version"] == ["1.0.0"]
    assert by_stage["replica"] == ["westus"] and by_stage["pool"] == [f"{account.name}/from-version"]
    ids = {n["id"]: n for n in graph["nodes"]}
    edges = {(ids[e["from"]]["stage"], ids[e["to"]]["stage"]) for e in graph["edges"]}
    assert {("base", "vm"), ("vm", "disk"), ("disk", "snapshot"), ("snapshot", "image"), ("image", "version"),
            ("version", "replica"), ("replica", "pool")} <= edges
    # Each snapshot comes from its own disk, not from every disk of the VM.
    snap_sources = {ids[e["to"]]["label"]: ids[e["from"]]["label"] for e in graph["edges"]
                    if ids[e["to"]]["stage"] == "snapshot"}
    assert snap_sources["os-snap"].startswith("prep_OsDisk") and not snap_sources["data-snap"].startswith("prep_Os")
    assert len([e for e in graph["edges"] if ids[e["to"]]["stage"] == "snapshot"]) == 2
    # From the version: its sources up the chain, and the pool.
    assert {n["stage"] for n in from_version["nodes"]} >= {"image", "version", "replica", "pool"}
    assert unknown["nodes"] == [] and unknown["edges"] == []

    svg = ET.fromstring(lineage_svg.render(graph))
    groups = [g for g in svg.iter("{http://www.w3.org/2000/svg}g")]
    assert len(groups) == len(graph["nodes"])
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}path"))) == len(graph["edges"])


def test_svg_escapes_what_users_named() -> None:
    graph = {"stages": ["image"], "nodes": [{"id": "x", "stage": "image", "label": "<script>&", "state": "\"'"}],
             "edges": []}
    svg = lineage_svg.render(graph)
    assert "<script>" not in svg and ET.fromstring(svg) is not None
