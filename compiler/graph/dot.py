"""A Graph in Graphviz DOT (`dot -Tsvg`): the same nodes, boxes, edges and words as the Mermaid output.

Strings are double-quoted with `\\` and `"` escaped, lines joined by `\\n`; each service and its versions are
a cluster. Mirrors and versions no rule reaches are dashed, a refused call is red and ends in a bar.
"""

from __future__ import annotations

from compiler.graph.model import Edge, Graph, Node


def quote(text: str) -> str:
    """A DOT double-quoted string; backslashes doubled so that no label text reads as an escString (\\N, \\l)."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def label(lines: tuple[str, ...]) -> str:
    return '"' + "\\n".join(quote(line)[1:-1] for line in lines) + '"'  # DOT's line break inside one string


_SHAPES = {
    "gateway": 'shape=hexagon, style=filled, fillcolor="#e3f2fd"',
    "external": 'shape=component, style=filled, fillcolor="#fff8e1"',
    "service": "shape=box",
    "version": 'shape=box, style="rounded"',
}


def _node(node: Node) -> str:
    attrs = 'shape=box, style="rounded,bold", penwidth=2' if node.default else _SHAPES[node.kind]
    return f"{node.id} [{attrs}, label={label(node.label)}];"


def _edge(edge: Edge) -> str:
    attrs = [f"label={label(edge.label)}"]
    if edge.style != "solid":
        attrs.append("style=dashed" if edge.style == "dashed" else "style=dotted")
    if edge.kind == "call" and edge.verdict == "denied":
        attrs.append('color="#c62828", fontcolor="#c62828"')
        if not edge.dry_run:
            attrs.append("arrowhead=tee")
    return f"{edge.source} -> {edge.target} [{', '.join(attrs)}];"


def render(graph: Graph) -> str:
    title = " · ".join((f"mesh {graph.name}",) + graph.notes)
    out = [
        "digraph mesh {",
        f"  graph [rankdir=LR, labelloc=t, fontname=Helvetica, label={quote(title)}];",
        "  node [fontname=Helvetica, fontsize=10];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    for node in graph.nodes:
        if node.kind == "gateway":
            out.append(f"  {_node(node)}")
    for group, service in graph.groups:
        out.append(f"  subgraph cluster_{group} {{")
        out.append(f'    label={quote(service)}; style="rounded,dashed";')
        out += [f"    {_node(n)}" for n in graph.nodes if n.group == group]
        out.append("  }")
    for node in graph.nodes:
        if node.group is None and node.kind != "gateway":
            out.append(f"  {_node(node)}")
    out += [f"  {_edge(e)}" for e in graph.edges]
    out.append("}")
    return "\n".join(out) + "\n"
