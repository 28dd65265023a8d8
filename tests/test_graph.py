"""`meshc graph`: golden Mermaid and DOT graphs of every example, their syntax, what they say, the command.

Golden graphs live in tests/graph/<case>.mmd and .dot; `MESHC_REGEN=1 pytest tests/test_graph.py` rewrites
them (review the diff like code). Mermaid has no offline parser: `mermaid_problems` checks strictly the
subset meshc writes (front matter, one definition per node id, subgraphs closed, every edge between defined
nodes, every label quoted with nothing Mermaid reads as syntax inside). DOT goes through Graphviz's own
`dot -Tsvg` (CI installs the Debian package `graphviz`; CI=true fails without it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from compiler.build import check_policies
from compiler.cli import main
from compiler.graph import build_graph, focus, render
from compiler.graph.svg import to_svg
from compiler.lower import lower

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "graph"
CASES = sorted(p.name for p in (ROOT / "policies").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
REGEN = os.environ.get("MESHC_REGEN") == "1"
HAVE_DOT = shutil.which("dot") is not None


def graph(policy_dir: Path):
    diags, view = check_policies(policy_dir)
    assert view is not None, "\n".join(d.render() for d in diags)
    return build_graph(view, lower(view))


# -- a strict check of the Mermaid meshc writes --

ID = r"[A-Za-z_][A-Za-z0-9_]*"
LABEL = r'"(?:[^"#<>&`|\\]|#(?:quot|lt|gt|amp|35|92|96|124|65533);|<br>)*"'
SHAPES = [(r"\[", r"\]"), (r"\(\[", r"\]\)"), (r"\{\{", r"\}\}"), (r"\[/", r"/\]")]
NODE = re.compile(rf"^ +({ID})(?:{'|'.join(f'{o}{LABEL}{c}' for o, c in SHAPES)})$")
EDGE = re.compile(rf"^  ({ID}) (-->|-\.->|--x)\|{LABEL}\| ({ID})$")
SUBGRAPH = re.compile(rf"^  subgraph ({ID})\[{LABEL}\]$")
CLASSDEF = re.compile(r"^  classDef ([a-z_]+) [a-z-]+:[#a-z0-9]+(,[a-z-]+:[#a-z0-9]+)*$")
CLASS = re.compile(rf"^  class ({ID}(?:,{ID})*) ([a-z_]+)$")
LINKSTYLE = re.compile(r"^  linkStyle (\d+) [a-z-]+:[#a-z0-9]+(,[a-z-]+:[#a-z0-9]+)*$")
KEYWORDS = {"end", "subgraph", "graph", "flowchart", "class", "classDef", "style", "linkStyle", "click", "call",
            "default", "direction", "href"}


def mermaid_problems(text: str) -> list[str]:
    lines = text.split("\n")
    problems = []
    if len(lines) < 5 or lines[0] != "---" or lines[2:4] != ["---", "flowchart LR"]:
        problems.append("not front matter then `flowchart LR`")
    if not re.fullmatch(r'title: "[^"\\]*"', lines[1]):
        problems.append(f"title line: {lines[1]!r}")
    if lines[-1] != "" or lines[-2] == "":
        problems.append("must end with exactly one newline")
    defined: dict[str, int] = {}
    edges, classes, open_group = 0, set(), None
    for n, line in enumerate(lines[4:-1], start=5):
        if m := NODE.match(line):
            ident = m.group(1)
            if ident in defined:
                problems.append(f"line {n}: {ident} defined twice (first on line {defined[ident]})")
            defined[ident] = n
            if open_group is None and line.startswith("    "):
                problems.append(f"line {n}: indented node outside a subgraph")
        elif m := SUBGRAPH.match(line):
            if open_group is not None:
                problems.append(f"line {n}: nested subgraph")
            open_group = m.group(1)
            if open_group in defined:
                problems.append(f"line {n}: subgraph id {open_group} is also a node")
            defined[open_group] = n
        elif line == "  end":
            if open_group is None:
                problems.append(f"line {n}: `end` without subgraph")
            open_group = None
        elif m := EDGE.match(line):
            edges += 1
            for end in (m.group(1), m.group(3)):
                if end not in defined:
                    problems.append(f"line {n}: edge end {end} not defined before")
        elif m := CLASSDEF.match(line):
            classes.add(m.group(1))
        elif m := CLASS.match(line):
            problems += [f"line {n}: class of undefined {i}" for i in m.group(1).split(",") if i not in defined]
            if m.group(2) not in classes:
                problems.append(f"line {n}: class {m.group(2)} not defined")
        elif m := LINKSTYLE.match(line):
            if int(m.group(1)) >= edges:
                problems.append(f"line {n}: linkStyle {m.group(1)} of {edges} edges")
        else:
            problems.append(f"line {n}: not one of the forms meshc writes: {line!r}")
    if open_group is not None:
        problems.append(f"subgraph {open_group} not closed")
    problems += [f"id {i} is a Mermaid keyword" for i in defined if i in KEYWORDS]
    problems += [f"id {i} starts like an edge end (o/x)" for i in defined if i[:1] in "ox"]
    return problems


# -- golden graphs --


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt,ext", [("mermaid", "mmd"), ("dot", "dot")])
def test_golden_graph(case: str, fmt: str, ext: str) -> None:
    text = render(graph(ROOT / "policies" / case), fmt)
    path = GOLDEN / f"{case}.{ext}"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"tests/graph/{case}.{ext} is missing: run MESHC_REGEN=1 pytest tests/test_graph.py"
    assert text == path.read_text(encoding="utf-8"), f"{case}.{ext} differs: MESHC_REGEN=1 and review the diff"


def test_every_golden_graph_has_a_case() -> None:
    stale = sorted(p.name for p in GOLDEN.iterdir() if p.stem not in CASES)
    assert not stale, f"tests/graph/ files without a policies/ case: {stale}"


@pytest.mark.parametrize("case", CASES)
def test_mermaid_structure(case: str) -> None:
    text = render(graph(ROOT / "policies" / case), "mermaid")
    assert mermaid_problems(text) == []


def test_dot_renders_with_graphviz() -> None:
    """Every example's DOT is accepted by Graphviz itself and gives an SVG naming each node."""
    if not HAVE_DOT:
        assert os.environ.get("CI") != "true", "Graphviz's dot is missing in CI: .ci/run installs graphviz"
        with pytest.raises(Exception, match="apt-get install graphviz"):
            to_svg("digraph {}")
        return
    for case in CASES:
        g = graph(ROOT / "policies" / case)
        svg = to_svg(render(g, "dot"))
        assert svg.lstrip().startswith("<?xml") and "</svg>" in svg, case
        for node in g.nodes:
            assert f"<title>{node.id}</title>" in svg, (case, node.id)


# -- what the graph says --


def labels(g) -> dict[tuple[str, str, str], tuple[str, ...]]:
    return {(e.source, e.target, e.kind): e.label for e in g.edges}


def test_canary_weights_and_default_version() -> None:
    g = graph(ROOT / "policies" / "canary")
    edges = labels(g)
    assert edges["svc_reviews", "ver_reviews__v1", "split"] == ("90%",)
    assert edges["svc_reviews", "ver_reviews__v2", "split"] == ("10%",)
    assert [n.label for n in g.nodes if n.default and n.group == "box_reviews"] == [("v1 (default)",)]
    assert edges["svc_frontend", "svc_reviews", "call"] == ("plaintext", "authz open", "timeout 15s")


def test_gateway_hosts_match_rules_and_authorization() -> None:
    g = graph(ROOT / "policies" / "gateway")
    edges = labels(g)
    assert edges["svc_productpage", "ver_productpage__v2", "split"] == ("100% when end-user: jason", "10% otherwise")
    assert edges["svc_productpage", "ver_productpage__v1", "split"] == ("90% otherwise",)
    assert edges["gw_ingress", "svc_reviews", "call"] == (
        "api.example.com,*.api.example.com /reviews", "mTLS strict", "allowed: GET", "timeout 15s",
    )
    gateway = next(n for n in g.nodes if n.kind == "gateway")
    assert "http :8080 → https" in gateway.label
    assert any(line.startswith("https :8443 TLS 1.2+ (bookinfo.example.com") for line in gateway.label)


def test_authorization_per_caller() -> None:
    g = graph(ROOT / "policies" / "authz")
    edges = {(e.source, e.target): e for e in g.edges if e.kind == "call"}
    denied = edges["svc_productpage", "svc_ratings"]
    assert (denied.verdict, denied.label[1]) == ("denied", "denied")
    assert edges["svc_reviews", "svc_ratings"].label[1] == "allowed: GET,HEAD /ratings/ except /admin"
    assert edges["svc_productpage", "svc_reviews"].dry_run
    assert "  svc_productpage --x|" in render(g, "mermaid")
    assert 'svc_productpage -> svc_ratings [label="mTLS strict\\ndenied\\ntimeout 15s", color="#c62828"' in render(g, "dot")
    tcp = {(e.source, e.target): e for e in graph(ROOT / "policies" / "tcp-authz").edges}
    assert tcp["svc_reports", "svc_ledger"].label == ("tcp", "mTLS strict", "denied")
    assert tcp["svc_web", "svc_ledger"].label == ("tcp", "mTLS strict", "allowed")


def test_rules_for_some_callers_are_labelled_with_them() -> None:
    # A caller-limited split names its callers, so the picture does not suggest every caller gets it; each
    # call edge shows only the rules its caller's sidecar has (reviews' 2s timeout is not productpage's).
    edges = labels(graph(ROOT / "policies" / "callers"))
    assert edges["svc_ratings", "ver_ratings__v2", "split"] == ("100% from reviews",)
    assert edges["svc_ratings", "ver_ratings__v1", "split"] == ("100% otherwise",)
    assert edges["svc_productpage", "ver_productpage__v2", "split"] == ("100% when x-canary: 1 from ingress",)
    assert edges["svc_reviews", "svc_ratings", "call"][-1] == "timeout 2s / 15s"
    assert edges["svc_productpage", "svc_ratings", "call"][-1] == "timeout 15s"
    pods = labels(graph(ROOT / "policies" / "kubernetes-callers"))
    assert pods["svc_ratings", "ver_ratings__v2", "split"] == ("100% from reviews v3",)


def test_mtls_modes_and_plaintext_caller() -> None:
    edges = labels(graph(ROOT / "policies" / "mtls"))
    assert edges["svc_reviews", "svc_ratings", "call"][0] == "mTLS permissive"
    assert edges["svc_productpage", "svc_reviews", "call"][0] == "mTLS strict"
    assert edges["svc_batch", "svc_ratings", "call"][0] == "plaintext"  # batch: mtls disable, no certificate


def test_externals_retries_timeouts_and_tcp() -> None:
    g = graph(ROOT / "policies" / "egress")
    edges = labels(g)
    assert edges["svc_checkout", "ext_payments", "call"] == (
        "TLS 1.3+ sni=api.payments.example", "retries 2 (GET,HEAD /v1/charges*)", "timeout 3s / 2s",
    )
    assert edges["svc_checkout", "ext_orders_db", "call"] == ("tcp", "plaintext")
    geo = next(n for n in g.nodes if n.id == "ext_geo")
    assert geo.label == (
        "geo (external)", "geo.partner.example:8443 http", "TLS 1.2+ sni=api.geo.partner.example",
        "at 192.0.2.10:8443, 192.0.2.11:8443",
    )


def test_mirrors_are_dashed() -> None:
    g = graph(ROOT / "policies" / "dark-launch")
    mirrors = {(e.target, e.label, e.style) for e in g.edges if e.kind == "mirror"}
    assert mirrors == {
        ("svc_audit", ("mirror 100% (POST,PUT,PATCH,DELETE)",), "dashed"),
        ("ver_reviews__v3", ("mirror 5%",), "dashed"),
    }
    text = render(g, "mermaid")
    assert '  svc_reviews -.->|"mirror 5%"| ver_reviews__v3' in text


ODD = '''
kind: Mesh
name: odd
egress: {undeclared: allow}
mtls: {mode: strict}
---
kind: Service
name: web
port: 9080
app_port: 20001
sidecar: {address: 127.0.250.1}
calls: [a--b, a]
---
kind: Service
name: a--b
port: 9080
sidecar: {address: 127.0.250.2}
versions:
  c: {endpoints: ["127.0.0.1:20002"]}
---
kind: Service
name: a
port: 9080
sidecar: {address: 127.0.250.3}
versions:
  b--c: {endpoints: ["127.0.0.1:20003"]}
  v2: {endpoints: ["127.0.0.1:20004"]}
---
kind: Route
service: a
rules:
  - match:
      headers: [{name: x-odd, exact: 'say "hi" #1 | <b> & `x` \\d;'}]
    to: {v2: 100}
  - to: {b--c: 100}
---
kind: AuthorizationPolicy
service: a
mode: dry_run
allow:
  - from: [a--b]
'''
ODD_TEXT = 'say "hi" #1 | <b> & `x` \\d;'


def _unmermaid(label: str) -> str:
    return re.sub(r"#(\w+);", lambda m: {"quot": '"', "lt": "<", "gt": ">", "amp": "&"}.get(
        m.group(1), chr(int(m.group(1))) if m.group(1).isdigit() else m.group(0)), label)


def test_odd_names_and_text_are_escaped(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(ODD)
    g = graph(tmp_path)
    ids = [n.id for n in g.nodes]
    assert len(ids) == len(set(ids)) and {"ver_a__b__c", "ver_a__b__c_2"} <= set(ids)  # a--b/c and a/b--c
    text = render(g, "mermaid")
    assert mermaid_problems(text) == []
    assert g.notes == ("undeclared hosts: allowed (forward proxy)",)
    assert text.startswith('---\ntitle: "mesh odd · undeclared hosts: allowed (forward proxy)"\n')
    dry = next(e for e in g.edges if (e.source, e.target) == ("svc_web", "svc_a"))
    assert (dry.label[1], dry.verdict, dry.dry_run) == ("dry-run: would be denied", "denied", True)
    assert '  svc_web -->|"mTLS strict<br>dry-run: would be denied' in text  # logged, not refused: no cross
    quoted = re.findall(r'"([^"]*)"', text)
    assert f"100% when x-odd: {ODD_TEXT}" in {_unmermaid(q) for q in quoted}
    dot = render(g, "dot")
    assert 'x-odd: say \\"hi\\" #1 | <b> & `x` \\\\d;' in dot
    if HAVE_DOT:  # Graphviz reads the label back as written
        svg = to_svg(dot).replace("&#45;", "-")
        assert "x-odd: say &quot;hi&quot; #1 | &lt;b&gt; &amp; `x` \\d;" in svg


# -- the command --


def test_command_formats_and_output_file(tmp_path: Path, capsys) -> None:
    case = ROOT / "policies" / "gateway"
    assert main(["graph", str(case)]) == 0
    assert capsys.readouterr().out == render(graph(case), "mermaid")
    assert main(["graph", str(case), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ids = {n["id"] for n in doc["nodes"]}
    assert doc["format"] == 1 and doc["mesh"] == "bookinfo" and len(ids) == len(doc["nodes"])
    assert all(e["source"] in ids and e["target"] in ids for e in doc["edges"])
    target = tmp_path / "deep" / "mesh.dot"
    for _ in range(2):  # the same bytes every time
        assert main(["graph", str(case), "--format", "dot", "-o", str(target)]) == 0
        captured = capsys.readouterr()
        assert captured.out == "" and "-> " in captured.err
        assert target.read_text() == (GOLDEN / "gateway.dot").read_text()
    assert str(ROOT) not in target.read_text()


def test_command_errors(tmp_path: Path, capsys, monkeypatch) -> None:
    bad = ROOT / "tests" / "errors" / "app_port" / "policies"
    assert main(["graph", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "mesh.yaml:6:1: error[E215]" in captured.err
    with pytest.raises(SystemExit) as exc:
        main(["graph", str(ROOT / "policies" / "canary"), "--format", "png"])
    assert exc.value.code == 2
    capsys.readouterr()
    monkeypatch.setattr("compiler.graph.svg.shutil.which", lambda name: None)
    assert main(["graph", str(ROOT / "policies" / "canary"), "--format", "svg", "-o", str(tmp_path / "g.svg")]) == 1
    captured = capsys.readouterr()
    assert "apt-get install graphviz" in captured.err and not (tmp_path / "g.svg").exists()


ERROR_CASES = sorted(p.name for p in (ROOT / "tests" / "errors").iterdir() if (p / "policies").is_dir())


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_policies_are_reported_as_check_reports_them(case: str, capsys, monkeypatch) -> None:
    """Every error case: exit 1, nothing drawn, the very diagnostics `meshc check` prints (never a traceback)."""
    monkeypatch.chdir(ROOT / "tests" / "errors" / case)
    check_code = main(["check", "policies"])
    checked = capsys.readouterr()
    assert main(["graph", "policies"]) == 1
    drawn = capsys.readouterr()
    assert drawn.out == "" and drawn.err == checked.err
    assert check_code == 1 and "Traceback" not in drawn.err and "internal error" not in drawn.err


def test_readme_shows_the_current_graphs() -> None:
    """The README's example graphs are the golden ones (regenerate both together)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```mermaid\n(.*?)```\n", readme, re.S)
    for case in ("gateway", "authz"):
        assert (GOLDEN / f"{case}.mmd").read_text(encoding="utf-8") in blocks, case


def test_focus_keeps_one_service_and_its_neighbours(capsys) -> None:
    g = graph(ROOT / "policies" / "gateway")
    around = focus(g, "reviews")
    assert {n.id for n in around.nodes} == {
        "gw_ingress", "svc_productpage", "ver_productpage__v1", "ver_productpage__v2", "svc_reviews",
    }  # zipkin neither calls nor is called by reviews
    assert [(e.source, e.target) for e in around.edges if e.kind == "call"] == [
        ("gw_ingress", "svc_reviews"), ("svc_productpage", "svc_reviews"),
    ]
    assert around.notes == ("around reviews",) and focus(g, "nope") is None
    dark = focus(graph(ROOT / "policies" / "dark-launch"), "frontend")
    assert {"svc_audit", "ver_reviews__v3"} <= {n.id for n in dark.nodes}  # the mirrors of a kept service
    assert main(["graph", str(ROOT / "policies" / "gateway"), "--focus", "nope"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "--focus 'nope': no Service, Gateway or ExternalService" in captured.err


@pytest.mark.parametrize("case", CASES)
def test_focus_on_every_node_is_well_formed(case: str) -> None:
    g = graph(ROOT / "policies" / case)
    for node in g.nodes:
        if node.kind != "version":
            around = focus(g, node.name)
            assert mermaid_problems(render(around, "mermaid")) == [], (case, node.name)
            assert set(around.groups) <= set(g.groups) and set(around.edges) <= set(g.edges)


def test_direct_answers_and_faults(tmp_path: Path) -> None:
    edges = labels(graph(ROOT / "policies" / "rewrites"))
    assert edges["svc_frontend", "svc_catalog", "call"][2:5] == (
        "= /healthz: answered 200", "/old-shop/*: redirect 301", "/insecure*: redirect 308",
    )
    edges = labels(graph(ROOT / "policies" / "chaos"))
    assert edges["svc_frontend", "svc_ratings", "call"][2:4] == (
        "/grpc*: fault abort grpc 14 100%", "otherwise: fault delay 2s 50%, abort 503 10%, if x-chaos: on",
    )
    (tmp_path / "mesh.yaml").write_text(
        "kind: Mesh\nname: m\n---\nkind: Service\nname: a\nport: 9080\nsidecar: {address: 127.0.250.9}\n"
        "versions: {v1: {endpoints: ['127.0.0.1:20009']}}\n---\n"
        "kind: Route\nservice: a\nrules:\n  - respond: {status: 410}\n"
    )
    (only,) = graph(tmp_path).edges  # a Route that only answers sends nothing to any version
    assert (only.target, only.label, only.style) == ("ver_a__v1", ("no traffic",), "dotted")
