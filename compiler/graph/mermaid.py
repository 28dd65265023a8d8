"""A Graph as a Mermaid flowchart that GitHub and GitLab render in Markdown (```mermaid blocks, .mmd files).

Left to right; every label is a quoted string with what Mermaid would read as syntax written as entity codes
(`#quot;`, `#35;`...); lines are joined by `<br>`. Ids are the graph's (letters, digits, `_`), each node is
defined once, every service with its versions in a box (subgraph). Mirrors and versions no rule reaches are
dashed, a call the callee's authorization refuses ends in a cross (red), gateways are hexagons, external
services parallelograms, a service's default version has rounded ends.
"""

from __future__ import annotations

import json

from compiler.graph.model import Edge, Graph, Node

_ESCAPES = {
    "#": "#35;",  # first: the others introduce '#'
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
    "|": "#124;",
    "\\": "#92;",
    "\n": " ",
    "\r": " ",
}


def escape(text: str) -> str:
    """One label line, safe inside Mermaid's double quotes (entity codes for what Mermaid or HTML would read)."""
    return "".join(_ESCAPES.get(ch, ch) if ch.isprintable() or ch in "\n\r" else "#65533;" for ch in text)


def label(lines: tuple[str, ...]) -> str:
    return '"' + "<br>".join(escape(line) for line in lines) + '"'


_SHAPES = {"gateway": ("{{", "}}"), "external": ("[/", "/]"), "service": ("[", "]")}


def _node(node: Node) -> str:
    opening, closing = ("([", "])") if node.default else _SHAPES.get(node.kind, ("[", "]"))
    return f"{node.id}{opening}{label(node.label)}{closing}"


def _arrow(edge: Edge) -> str:
    if edge.style != "solid":
        return "-.->"
    return "--x" if edge.verdict == "denied" and not edge.dry_run else "-->"


def render(graph: Graph) -> str:
    title = " · ".join((f"mesh {graph.name}",) + graph.notes)
    out = ["---", f"title: {json.dumps(title, ensure_ascii=False)}", "---", "flowchart LR"]  # YAML front matter
    grouped: dict[str | None, list[Node]] = {}
    for node in graph.nodes:
        grouped.setdefault(node.group, []).append(node)
    for node in graph.nodes:
        if node.kind == "gateway":
            out.append(f"  {_node(node)}")
    for group, service in graph.groups:
        out.append(f"  subgraph {group}[{label((service,))}]")
        out += [f"    {_node(n)}" for n in grouped[group]]
        out.append("  end")
    for node in graph.nodes:
        if node.group is None and node.kind != "gateway":
            out.append(f"  {_node(node)}")
    styles = []
    for i, edge in enumerate(graph.edges):
        out.append(f"  {edge.source} {_arrow(edge)}|{label(edge.label)}| {edge.target}")
        if edge.kind == "call" and edge.verdict == "denied":
            styles.append(f"  linkStyle {i} stroke:#c62828,color:#c62828")
    for cls, style, ids in (
        ("gateway", "fill:#e3f2fd,stroke:#1565c0", [n.id for n in graph.nodes if n.kind == "gateway"]),
        ("external", "fill:#fff8e1,stroke:#ef6c00", [n.id for n in graph.nodes if n.kind == "external"]),
        ("default_version", "stroke-width:3px", [n.id for n in graph.nodes if n.default]),
    ):
        if ids:
            out.append(f"  classDef {cls} {style}")
            out.append(f"  class {','.join(ids)} {cls}")
    out += styles
    return "\n".join(out) + "\n"
