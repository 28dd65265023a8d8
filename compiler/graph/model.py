"""The mesh as a graph: nodes (gateways, services and their versions, external services) and edges (calls,
version splits, mirrors), with the words each carries. Built from the resolved view (what the policies
mean: Routes, gateways, externals) and the IR (what each sidecar does: mTLS, authorization).

Every list is sorted and every id is derived from names, so the same policies give the same graph,
byte for byte, in every format (compiler/graph/mermaid.py, dot.py, jsonout.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.graph.describe import authz_text, rule_effects, rule_texts, transport_text
from compiler.ir import HttpListener, MeshIR, Sidecar, TcpListener
from compiler.policy.caller import versions_for
from compiler.policy.resolved import Resolved


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # gateway | service | version | external
    name: str  # the policy's name of it (a version: its own name)
    label: tuple[str, ...]  # lines: the name first
    group: str | None = None  # the service box it sits in (a service and its versions)
    default: bool = False  # a service's default version


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # call | split | mirror
    label: tuple[str, ...]
    style: str = "solid"  # solid | dashed (mirror) | dotted (a version no rule sends traffic to)
    verdict: str = ""  # calls to mesh services: open | allowed | partial | denied (see describe.authz_text)
    dry_run: bool = False


@dataclass(frozen=True)
class Graph:
    name: str
    notes: tuple[str, ...]
    groups: tuple[tuple[str, str], ...]  # (group id, service name), sorted
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


@dataclass
class _Ids:
    """Readable ids (`svc_reviews`, `ver_reviews__v1`); a rare clash ('a--b') gets `_2`, `_3` in key order."""

    taken: dict[str, tuple] = field(default_factory=dict)
    by_key: dict[tuple, str] = field(default_factory=dict)

    def __call__(self, *key: str) -> str:
        if key in self.by_key:
            return self.by_key[key]
        base = key[0] + "_" + "__".join(k.replace("-", "_") for k in key[1:])
        ident, n = base, 1
        while ident in self.taken:
            n += 1
            ident = f"{base}_{n}"
        self.taken[ident] = key
        self.by_key[key] = ident
        return ident


def _sidecars(ir: MeshIR) -> dict[str, Sidecar]:
    return {s.service: s for s in ir.sidecars}


def _inbound(sidecar: Sidecar | None):
    if sidecar is None:
        return None
    return next((l for l in sidecar.listeners if l.direction == "inbound"), None)


def _outbound_cluster(caller: Sidecar | None, callee: str):
    if caller is None:
        return None
    return next((c for c in caller.clusters if c.direction == "outbound" and c.service == callee), None)


def _pieces_text(pieces: list[tuple[str, int]]) -> tuple[str, ...]:
    """One line per rule sending requests to a version: `90%`, `100% when end-user: jason`, `10% otherwise`,
    `100% from reviews v3` (a rule for some callers only)."""
    lines = []
    for cond, pct in pieces:
        when = "" if cond.startswith("from ") else "when "
        lines.append(f"{pct}% otherwise" if cond == "else" else f"{pct}% {when}{cond}" if cond else f"{pct}%")
    return tuple(lines)


class _Builder:
    def __init__(self, view: Resolved, ir: MeshIR):
        self.view, self.ir = view, ir
        self.sidecars = _sidecars(ir)
        self.ids = _Ids()
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.groups: list[tuple[str, str]] = []

    # -- nodes --

    def node_of(self, name: str) -> str:
        """The node a call to `name` (a service or an external) points at."""
        return self.ids("ext" if name in self.view.externals else "svc", name)

    def gateway(self, gv) -> None:
        gw = gv.gateway
        lines = [f"{gw.name} (gateway)"]
        for l in gw.listeners:
            text = f"{l.protocol} :{l.port}" + (f" [{l.name}]" if l.name != l.protocol else "")
            if l.redirect_to_https:
                text += " → https"
            if l.tls is not None:
                hosts = [h for c in l.tls.certificates for h in c.hosts]
                text += f" TLS {l.tls.min_version}+ ({', '.join(hosts)})"
                if l.tls.client_ca:
                    text += " client certs"
            lines.append(text)
        if gv.authn is not None:
            lines.append("JWT " + ", ".join(p.name for p in gv.authn.providers))
        if gw.rate_limit is not None:
            lines.append(f"rate limit {gw.rate_limit.requests}/{gw.rate_limit.per}")
        self.nodes.append(Node(self.ids("gw", gw.name), "gateway", gw.name, tuple(lines)))

    def service(self, sv) -> None:
        """A service; one that declares versions is a box of it and its versions (the default one marked)."""
        svc = sv.service
        group = self.ids("box", svc.name) if svc.versions else None
        if group:
            self.groups.append((group, svc.name))
        lines = [svc.name, svc.protocol + (f" · mTLS {sv.mtls}" if sv.mtls and sv.mtls != "disable" else "")]
        if sv.authn is not None:
            lines.append("JWT " + ", ".join(p.name for p in sv.authn.providers))
        self.nodes.append(Node(self.ids("svc", svc.name), "service", svc.name, tuple(lines), group=group))
        for v in svc.versions:
            label = f"{v} (default)" if v == sv.default_version else v
            self.nodes.append(
                Node(self.ids("ver", svc.name, v), "version", v, (label,), group=group, default=v == sv.default_version)
            )

    def version_node(self, service: str, version: str) -> str:
        """A version's node; the service's own for one without declared versions (or an external)."""
        sv = self.view.views.get(service)
        return self.ids("ver", service, version) if sv is not None and sv.service.versions else self.node_of(service)

    def external(self, ev) -> None:
        ext = ev.service
        lines = [f"{ext.name} (external)", f"{ext.host}:{ext.port} {ext.protocol}"]
        if ext.tls is not None:
            lines.append(f"TLS {ext.tls.min_version}+ sni={ev.sni}")
        if ext.endpoints:
            lines.append("at " + ", ".join(str(e) for e in ext.endpoints))
        else:
            lines.append("found by DNS")
        self.nodes.append(Node(self.ids("ext", ext.name), "external", ext.name, tuple(lines)))

    # -- edges --

    def splits(self, sv) -> None:
        """Service -> each declared version: the share of each rule's requests; mirrors dashed."""
        src = self.ids("svc", sv.name)
        rules = sv.route.rules if sv.route else []
        texts = rule_texts(rules)
        shares: dict[str, list[tuple[str, int]]] = {v: [] for v in sv.versions}
        mirrors: dict[str, list[str]] = {}
        for rule, text in zip(rules, texts):
            for version, pct in (rule.to or {}).items():
                shares.setdefault(version, []).append((text, pct))
            for m in rule.mirror:
                dst = self.version_node(m.service or sv.name, m.to)
                cond = text if text not in ("", "else") else ""
                mirrors.setdefault(dst, []).append(f"mirror {m.percent}%" + (f" ({cond})" if cond else ""))
        forwarding = sum(1 for r in rules if r.to)
        if not rules:  # no Route: everything to the default version (a Route that only answers sends nothing)
            shares[sv.default_version] = [("", 100)]
        elif any(len(p) == forwarding and all(pct == 100 for _, pct in p) for p in shares.values()):
            shares = {v: [("", 100)] if p else [] for v, p in shares.items()}  # every rule: all to one version
        for version in sv.service.versions:
            dst = self.ids("ver", sv.name, version)
            if shares[version]:
                self.edges.append(Edge(src, dst, "split", _pieces_text(shares[version])))
            elif dst not in mirrors:
                self.edges.append(Edge(src, dst, "split", ("no traffic",), style="dotted"))
        for dst, texts_ in sorted(mirrors.items()):
            self.edges.append(Edge(src, dst, "mirror", (" · ".join(texts_),), style="dashed"))

    def resilience(self, caller: str, callee: str) -> list[str]:
        """Direct answers, faults, retries and timeouts of `caller`'s calls to `callee` (its Route's rules that
        `caller`'s sidecar has: a rule for other callers only is not there; else the Mesh's default timeout)."""
        target = self.view.views.get(callee) or self.view.externals.get(callee)
        if target is None or target.listener == "tcp":
            return []
        all_rules = target.route.rules if target.route else []
        texts = [t for r, t in zip(all_rules, rule_texts(all_rules)) if versions_for(r.match.callers, caller) is not None]
        rules = [r for r in all_rules if versions_for(r.match.callers, caller) is not None]
        retries = []
        for rule, text in zip(rules, texts):
            if rule.retries is not None:
                cond = f" ({text})" if text not in ("", "else") else ""
                retries.append(f"retries {rule.retries.attempts}{cond}")
        forwarding = [r for r in rules if r.to]
        timeouts = [str(self.view.timeout_of(r)) for r in forwarding] or [str(self.view.mesh.defaults.timeout)]
        lines = [line for rule, text in zip(rules, texts) for line in rule_effects(rule, text)]
        lines += list(dict.fromkeys(retries))
        lines.append("timeout " + " / ".join(dict.fromkeys(timeouts)))
        return lines

    def call(self, caller_name: str, src: str, callee: str, first: list[str]) -> None:
        caller = self.sidecars.get(caller_name)
        callee_side = self.sidecars.get(callee)
        inbound = _inbound(callee_side)
        mode = inbound.tls_mode if isinstance(inbound, (HttpListener, TcpListener)) else None
        cluster = _outbound_cluster(caller, callee)
        transport = transport_text(caller, cluster, mode)
        lines = list(first)
        target = self.view.views.get(callee) or self.view.externals.get(callee)
        if target is not None and target.listener == "tcp":
            lines.append("tcp")
        lines.append(transport)
        verdict, dry_run = "", False
        if callee in self.view.views and inbound is not None:
            principal = caller.tls.identity if (caller and caller.tls and transport.startswith("mTLS")) else None
            verdict, text = authz_text(inbound.access, principal)
            dry_run = bool(inbound.access and inbound.access.dry_run)
            lines.append(text)
        lines += self.resilience(caller_name, callee)
        self.edges.append(Edge(src, self.node_of(callee), "call", tuple(lines), verdict=verdict, dry_run=dry_run))


def build_graph(view: Resolved, ir: MeshIR) -> Graph:
    """The graph of a checked mesh: `view` is what check_policies returned, `ir` what lower() made of it."""
    b = _Builder(view, ir)
    for name in sorted(view.gateways):
        b.gateway(view.gateways[name])
    for name in sorted(view.views):
        b.service(view.views[name])
    for name in sorted(view.externals):
        b.external(view.externals[name])
    for name in sorted(view.gateways):
        gv = view.gateways[name]
        for dest in gv.destinations:
            served = [
                f"{','.join(r.hosts) or '*'} {r.path}" for r, _ in gv.routes if r.to == dest
            ]
            b.call(name, b.ids("gw", name), dest, list(dict.fromkeys(served)))
    for name in sorted(view.views):
        for callee in sorted(view.views[name].service.calls):
            b.call(name, b.ids("svc", name), callee, [])
    for name in sorted(view.views):
        b.splits(view.views[name])
    notes = []
    if view.mesh.egress.undeclared == "allow":
        notes.append("undeclared hosts: allowed (forward proxy)")
    return Graph(view.mesh.name, tuple(notes), tuple(b.groups), tuple(b.nodes), tuple(b.edges))
