"""`meshc graph --focus NAME`: the part of a graph around one service, gateway or external service.

A big mesh is too much for one picture (Graphviz takes minutes, GitHub renders Mermaid up to about 50,000
characters); its reviewer wants the neighbourhood of what a change touches: NAME with its versions, every
call to it and from it (whoever is at the other end, with that end's versions), and the mirrors of the
services kept.
"""

from __future__ import annotations

from dataclasses import replace

from compiler.graph.model import Graph


def focus(graph: Graph, name: str) -> Graph | None:
    """The sub-graph around the service, gateway or external service `name` (None: there is none), in the
    graph's order."""
    node_id = next((n.id for n in graph.nodes if n.name == name and n.kind != "version"), None)
    if node_id is None:
        return None
    calls = [e for e in graph.edges if e.kind == "call" and node_id in (e.source, e.target)]
    near = {node_id} | {e.source for e in calls} | {e.target for e in calls}
    groups = {n.group for n in graph.nodes if n.id in near and n.group}  # their versions come along
    edges = calls + [e for e in graph.edges if e.kind != "call" and e.source in near]
    keep = near | {n.id for n in graph.nodes if n.group in groups} | {e.target for e in edges}
    nodes = tuple(n for n in graph.nodes if n.id in keep)
    return replace(
        graph,
        notes=graph.notes + (f"around {name}",),
        groups=tuple(g for g in graph.groups if any(n.group == g[0] for n in nodes)),
        nodes=nodes,
        edges=tuple(e for e in graph.edges if e in edges),  # in the graph's order
    )
