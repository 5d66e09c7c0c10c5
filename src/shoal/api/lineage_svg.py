"""An image lineage graph (``domain/lineage.py``) drawn as a standalone SVG: one column per stage, left to right,
a box per resource, curves for "made from". Plain text in, plain text out: the portal embeds it in a page and
serves it as ``image/svg+xml``."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

BOX_W, BOX_H = 190, 46
COL_GAP, ROW_GAP, MARGIN = 60, 18, 20
STAGE_TITLES = {"base": "Marketplace base", "vm": "VM", "disk": "Disks", "snapshot": "Snapshots",
                "image": "Managed image", "version": "Gallery version", "replica": "Replicas", "pool": "Pools"}
STAGE_COLOURS = {"base": "#e8eaf6", "vm": "#e3f2fd", "disk": "#e0f7fa", "snapshot": "#e0f2f1", "image": "#e8f5e9",
                 "version": "#f1f8e9", "replica": "#fffde7", "pool": "#fff3e0"}


def render(graph: dict[str, Any]) -> str:
    stages = [s for s in graph["stages"] if any(n["stage"] == s for n in graph["nodes"])]
    places: dict[str, tuple[int, int]] = {}
    rows = 0
    for col, stage in enumerate(stages):
        members = [n for n in graph["nodes"] if n["stage"] == stage]
        for row, node in enumerate(members):
            places[node["id"]] = (MARGIN + col * (BOX_W + COL_GAP), MARGIN + 24 + row * (BOX_H + ROW_GAP))
        rows = max(rows, len(members))
    width = MARGIN * 2 + max(1, len(stages)) * (BOX_W + COL_GAP) - COL_GAP
    height = MARGIN * 2 + 24 + max(1, rows) * (BOX_H + ROW_GAP)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           "<title>Image lineage</title>"]
    for col, stage in enumerate(stages):
        x = MARGIN + col * (BOX_W + COL_GAP)
        out.append(f'<text x="{x}" y="{MARGIN + 10}" font-weight="bold" fill="#444">'
                   f"{escape(STAGE_TITLES.get(stage, stage))}</text>")
    for edge in graph["edges"]:
        if edge["from"] not in places or edge["to"] not in places:
            continue
        (x1, y1), (x2, y2) = places[edge["from"]], places[edge["to"]]
        x1, y1, y2 = x1 + BOX_W, y1 + BOX_H // 2, y2 + BOX_H // 2
        mid = (x1 + x2) // 2
        out.append(f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" stroke="#888" '
                   'stroke-width="1.5"/>')
    for node in graph["nodes"]:
        x, y = places[node["id"]]
        gone = node.get("state") == "Deleted"
        label = node["label"] if len(node["label"]) <= 28 else node["label"][:27] + "…"
        detail = node.get("state") or node.get("location") or ""
        dashes = ' stroke-dasharray="4 3"' if gone else ""
        stroke = "#bbb" if gone else "#555"
        fill = STAGE_COLOURS.get(node["stage"], "#fff")
        full = escape(str(node.get("resourceId") or node["label"]))
        out.append(f'<g class="node stage-{escape(node["stage"])}"><title>{full}</title>'
                   f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
                   f'stroke="{stroke}"{dashes}/>'
                   f'<text x="{x + 10}" y="{y + 19}">{escape(label)}</text>'
                   f'<text x="{x + 10}" y="{y + 35}" fill="#666" font-size="11">{escape(str(detail))}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
