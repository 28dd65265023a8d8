"""`meshc graph [POLICY_DIR] [--format mermaid|dot|svg|json] [--focus NAME] [-o FILE]`: the mesh as a picture.

Services with their versions and the share of requests each gets, gateways, external services, and every
call with its mTLS, authorization, retries and timeout (compiler/graph/). Policies with errors are reported as
`meshc check` reports them (exit 1), nothing is drawn; `svg` without Graphviz installed is exit 1 too, and so
is a `--focus` that names nothing in the mesh.
"""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_graph(args) -> int:
    from compiler.build import check_policies
    from compiler.cli import _error, _print_diags
    from compiler.graph import SvgError, build_graph, focus, render
    from compiler.lower import lower

    diags, view = check_policies(Path(args.policy_dir))
    _print_diags(diags, args.policy_dir)
    if view is None:
        return 1
    graph = build_graph(view, lower(view))
    if args.focus is not None:
        around = focus(graph, args.focus)
        if around is None:
            _error(f"--focus {args.focus!r}: no Service, Gateway or ExternalService of that name in {args.policy_dir}")
            return 1
        graph = around
    try:
        text = render(graph, args.format)
    except SvgError as exc:
        _error(str(exc))
        return 1
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"{args.policy_dir}: {args.format} graph of {len(graph.nodes)} node(s), {len(graph.edges)} edge(s) -> {out}",
          file=sys.stderr)
    return 0


def register(sub) -> None:
    from compiler.graph import FORMATS

    g = sub.add_parser("graph", help="draw the mesh: services, versions and weights, calls with mTLS/authz/retries")
    g.add_argument("policy_dir", nargs="?", default="policies", help="policy directory (default: policies)")
    g.add_argument("--format", choices=FORMATS, default="mermaid",
                   help="mermaid (default; GitHub/GitLab render it), dot (Graphviz), svg (runs Graphviz's dot), json")
    g.add_argument("--focus", metavar="NAME",
                   help="only NAME (a service, gateway or external service), what it calls and what calls it")
    g.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    g.set_defaults(func=cmd_graph)
