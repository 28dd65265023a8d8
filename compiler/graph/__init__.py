"""`meshc graph`: the mesh as a picture (Mermaid, Graphviz DOT or SVG, JSON).

`graph_of(view, ir)` builds the Graph (compiler/graph/model.py) from the resolved view and the IR of a
checked mesh; `focus(graph, name)` keeps what is around one service; `render(graph, fmt)` writes it in one
format.
"""

from __future__ import annotations

from compiler.graph import dot, jsonout, mermaid
from compiler.graph.focus import focus
from compiler.graph.model import Edge, Graph, Node, build_graph
from compiler.graph.svg import SvgError, to_svg

FORMATS = ("mermaid", "dot", "svg", "json")

__all__ = ["FORMATS", "Edge", "Graph", "Node", "SvgError", "build_graph", "focus", "render"]


def render(graph: Graph, fmt: str) -> str:
    """The graph as text in `fmt` (one of FORMATS); SvgError when `svg` cannot be made."""
    if fmt == "mermaid":
        return mermaid.render(graph)
    if fmt == "dot":
        return dot.render(graph)
    if fmt == "svg":
        return to_svg(dot.render(graph))
    if fmt == "json":
        return jsonout.render(graph)
    raise ValueError(f"unknown graph format {fmt!r}")
