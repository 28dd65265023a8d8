"""A Graph as JSON (`meshc graph --format json`), for tools; the layout is documented in the README.

    {"format": 1, "mesh": NAME, "notes": [TEXT...],
     "groups": [{"id": ID, "service": NAME}...],
     "nodes": [{"id", "kind": gateway|service|version|external, "name", "label": [LINE...], "group": ID|null,
                "default": BOOL}...],
     "edges": [{"source", "target", "kind": call|split|mirror, "label": [LINE...],
                "style": solid|dashed|dotted, "verdict": ""|open|allowed|partial|denied, "dry_run": BOOL}...]}

Keys sorted, lists in the graph's order (which is sorted by names), two-space indent.
"""

from __future__ import annotations

import dataclasses
import json

from compiler.graph.model import Graph

FORMAT = 1


def render(graph: Graph) -> str:
    doc = {
        "format": FORMAT,
        "mesh": graph.name,
        "notes": list(graph.notes),
        "groups": [{"id": g, "service": s} for g, s in graph.groups],
        "nodes": [dataclasses.asdict(n) for n in graph.nodes],
        "edges": [dataclasses.asdict(e) for e in graph.edges],
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
