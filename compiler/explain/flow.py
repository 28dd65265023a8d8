"""One request, start to end: which sidecars it meets and in what order (see compiler/explain/__init__.py)."""

from __future__ import annotations

from dataclasses import replace

from compiler.explain import callee as inbound_side
from compiler.explain import jwt
from compiler.explain.caller import act, choose_route
from compiler.explain.match import query_params, split_path
from compiler.explain.model import Explanation, ExplainError, Outcome, Request
from compiler.explain.paths import normalise
from compiler.explain.trace import Trace
from compiler.ir import Cluster, HttpListener, MeshIR, Sidecar, TcpListener
from compiler.policy.types import percent_text


def explain(ir: MeshIR, request: Request) -> Explanation:
    sidecars = {s.service: s for s in ir.sidecars}
    caller = sidecars.get(request.caller)
    if caller is None:
        raise ExplainError(f"--from {request.caller!r}: no Service or Gateway of that name in mesh {ir.name} "
                           f"(known: {', '.join(sorted(sidecars)) or 'none'})")
    headers: dict[str, str] = {}
    for name, value in request.headers:  # a repeated header is seen as its values joined by commas (Envoy's matchers)
        name, value = name.lower(), value.strip(" \t")  # HTTP drops the whitespace around a value
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    t = Trace(request.method.upper(), request.path or "/", headers, caller_version=request.caller_version,
              pod_versions=_pod_versions(caller, request.caller_version))
    t.sidecars["edge" if caller.gateway is not None else "caller"] = caller.service
    if caller.gateway is not None:
        outcome = _from_gateway(t, ir, sidecars, caller, request)
    else:
        outcome = _from_service(t, ir, sidecars, caller, request)
    if t.depends:  # a rule for some caller versions matched, and the caller pod's version was not given
        outcome = replace(outcome, certain=False, summary=f"{outcome.summary}; {'; '.join(t.depends)}")
    return Explanation(request, tuple(t.steps), outcome)


def _pod_versions(caller: Sidecar, version: str | None) -> tuple[str, ...]:
    """The caller's versions in pods, and a check of `--from-version` against them: only a pod's sidecar knows
    its version (from its `version` label); on one host and in Docker the versions share one sidecar."""
    k = caller.kubernetes
    label = (k.version_label or "version") if k is not None else ""
    # Pods with a version label: not the implicit `default` version, nor one whose instances are not pods
    versions = tuple(v.name for v in k.versions if not v.explicit_endpoints and any(n == label for n, _ in v.selector)) \
        if k is not None else ()
    if version is None:
        return versions
    if caller.gateway is not None:
        raise ExplainError(f"--from-version {version!r}: {caller.service} is a Gateway, which has no versions")
    if k is None:
        raise ExplainError(f"--from-version {version!r}: {caller.service} does not run in pods, where its versions "
                           "share one sidecar: no route can tell them apart, so the version changes nothing")
    if not versions:
        raise ExplainError(f"--from-version {version!r}: {caller.service} declares no versions whose pods carry a "
                           f"`{label}` label, so no route can tell its pods apart")
    if version not in versions:
        raise ExplainError(f"--from-version {version!r}: {caller.service} has no such version "
                           f"(its versions: {', '.join(versions)})")
    return versions


def _known(ir: MeshIR, sidecars: dict[str, Sidecar]) -> set[str]:
    names = {s.service for s in ir.sidecars if s.gateway is None}
    names |= {c.service for s in ir.sidecars for c in s.clusters if c.external and not c.forward_proxy}
    return names


def _outbound(caller: Sidecar) -> HttpListener | None:
    return next((l for l in caller.listeners if l.direction == "outbound" and isinstance(l, HttpListener)), None)


def _from_service(t: Trace, ir: MeshIR, sidecars: dict[str, Sidecar], caller: Sidecar, r: Request) -> Outcome:
    host = t.headers.get("host")
    service = r.service
    if service is None and host is None:
        raise ExplainError("say which service the request is for: --to SERVICE (or a Host header: -H host:NAME)")
    if service is not None and service not in _known(ir, sidecars):
        raise ExplainError(f"--to {service!r}: no Service or ExternalService of that name in mesh {ir.name} "
                           f"(known: {', '.join(sorted(_known(ir, sidecars))) or 'none'})")
    tcp = next((l for l in caller.listeners if isinstance(l, TcpListener) and l.direction == "outbound"
                and l.cluster.service == service), None)
    if tcp is not None:
        return _tcp(t, sidecars, caller, tcp)
    listener = _outbound(caller)
    # Every virtual host but the egress catch-all (`*`) is a service the caller calls.
    called = {v.name for v in listener.routes.virtual_hosts if "*" not in v.domains} if listener else set()
    if listener is None and service is None:
        raise ExplainError(f"{caller.service} calls nothing: its sidecar has no outbound listener. Add the service "
                           f"to the `calls` of Service {caller.service}")
    if service is not None and service not in called:
        raise ExplainError(
            f"{caller.service} does not call {service}: its sidecar has no route to it. Add {service} to the `calls` "
            f"of Service {caller.service} (it calls: {', '.join(sorted(called)) or 'nothing'})")
    host = host or service
    t.headers["host"] = host
    pod = f" (a pod of version {t.caller_version})" if t.caller_version else ""
    t.step("caller", "request", f"{t.method} {t.path} Host {host} from {caller.service}'s app{pod} to its outbound "
           f"listener {listener.address}:{listener.port}", caller.source, method=t.method, path=t.path, host=host)
    answer = _http_hop(t, "caller", caller, listener, host)
    if isinstance(answer, Outcome):
        return answer
    return _reach(t, sidecars, caller, answer)


def _edge_listener(caller: Sidecar, r: Request) -> HttpListener:
    edges = [l for l in caller.listeners if isinstance(l, HttpListener) and l.edge is not None]
    order = {p.name: i for i, p in enumerate(caller.gateway.listeners)}
    edges.sort(key=lambda l: order.get(l.edge.listener, 0))
    if r.listener is not None:
        for l in edges:
            if l.edge.listener == r.listener:
                return l
        raise ExplainError(f"--listener {r.listener!r}: gateway {caller.service} has listeners "
                           f"{', '.join(l.edge.listener for l in edges)}")
    routing = [l for l in edges if l.edge.https_redirect_port is None]
    return (routing or edges)[0]


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _host_for(listener: HttpListener, service: str | None) -> tuple[str, str]:
    """No Host header given: one the client would send (a Host whose routes lead to `service` when named; exact
    domains first, then `*`, then a name under a wildcard), and the sentence that says so."""
    exact_first = sorted(listener.routes.virtual_hosts, key=lambda v: ("*" in v.domains[0], v.domains[0] != "*"))
    for vhost in exact_first:
        if service is None or any(x.cluster.service == service for r in vhost.routes for x in r.targets):
            domain = vhost.domains[0]
            if domain == "*":
                domain = listener.address
            elif domain.startswith("*."):
                domain = "www" + domain[1:]
            leads = f", the first whose routes lead to {service}" if service else ""
            return domain, f"no Host header: sending Host {domain} (virtual host {vhost.name}{leads}); -H host:NAME picks another"
    return listener.address, f"no Host header, and no virtual host leads to {service}: sending Host {listener.address}"


def _from_gateway(t: Trace, ir: MeshIR, sidecars: dict[str, Sidecar], gw: Sidecar, r: Request) -> Outcome:
    if r.service is not None and r.service not in _known(ir, sidecars):
        raise ExplainError(f"--to {r.service!r}: no Service or ExternalService of that name in mesh {ir.name} "
                           f"(known: {', '.join(sorted(_known(ir, sidecars))) or 'none'})")
    listener = _edge_listener(gw, r)
    e = listener.edge
    host, chosen = t.headers.get("host"), ""
    if host is None:
        host, chosen = _host_for(listener, r.service)
    bare = _strip_port(host)  # an edge listener ignores the Host's port (strip_any_host_port)
    tls = "https" if e.tls is not None else "http"
    extra = f"; a client certificate signed by {e.tls.client_ca} is required" if e.tls and e.tls.client_ca else ""
    t.step("edge", "listener", f"{gw.service} listener {e.listener} ({tls}, port {listener.port}){extra}: "
           f"{t.method} {t.path} Host {host}", e.source, listener=e.listener)
    t.headers["host"] = host
    if chosen:
        t.step("edge", "host", chosen)
    if e.trusted_hops:
        t.step("edge", "client address", f"{e.trusted_hops} trusted proxy hop(s) in X-Forwarded-For", e.source)
    answer = _http_hop(t, "edge", gw, listener, bare)
    if isinstance(answer, Outcome):
        return answer
    if r.service is not None and answer.targets and answer.targets[0].cluster.service != r.service:
        t.step("edge", "destination", f"the gateway sends this request to {answer.targets[0].cluster.service}, "
               f"not to --to {r.service}")
    return _reach(t, sidecars, gw, answer)


def _http_hop(t: Trace, side, sidecar: Sidecar, listener: HttpListener, host: str):
    """Normalisation, routing, listener filters (edge JWT and rate limits), the route's filters and action."""
    n = normalise(listener.paths, t.path)
    if n.note:
        t.step(side, "path", n.note)
    if n.status is not None:
        return _answer(t, sidecar.service, n.status)
    t.path = n.path
    route, status = choose_route(t, side, listener, host)
    if listener.jwt is not None:  # a gateway's RequestAuthentication: before routing answers anything
        path, query = split_path(t.path)
        v = jwt.check(listener.jwt, path, t.headers, query_params(query))
        t.step(side, "jwt", v.decision, None, rule=v.rule, provider=v.provider)
        t.certain = t.certain and v.certain
        if v.status is not None:
            return _answer(t, sidecar.service, v.status)
        gone = jwt.removed_header(listener.jwt, v, t.headers)
        if gone is not None:
            del t.headers[gone]
            t.step(side, "jwt", f"token removed from {gone} before the request goes on (forward_token: false)")
        for header, value in jwt.forwarded_claims(listener.jwt, v):
            t.headers[header.lower()] = value
            t.step(side, "jwt", f"claim forwarded as {header}: {value}")
    inbound_side.rate_limits(t, side, sidecar.service, listener)
    if route is None:
        return _answer(t, sidecar.service, status)
    answer = act(t, side, sidecar, listener, route, host)
    if answer.status is not None:
        f = route.fault
        grpc = f" (grpc-status {f.abort_grpc_status})" if f and f.abort_status is None and f.abort_grpc_status is not None \
            and answer.status == 200 and route.redirect is None and route.respond is None else ""
        return _answer(t, sidecar.service, answer.status, grpc)
    return answer


def _answer(t: Trace, by: str, status: int, what: str = "") -> Outcome:
    return Outcome("response", status, certain=t.certain, alternatives=tuple(t.alternatives),
                   summary=f"{status}{what} answered by the sidecar of {by}")


def _versions(targets) -> tuple[tuple[str, float], ...]:
    total = sum(x.weight for x in targets) or 1
    return tuple((x.cluster.version, x.weight / total) for x in targets if x.weight)


def _reach(t: Trace, sidecars: dict[str, Sidecar], caller: Sidecar, answer) -> Outcome:
    """The forwarded request: outside the mesh, or through the connection to the callee's sidecar."""
    targets = answer.targets
    first: Cluster = targets[0].cluster
    versions = _versions(targets)
    if first.forward_proxy:
        t.step("caller", "egress", f"undeclared host {t.headers.get('host')}: forwarded as it is, resolved by DNS "
               "(Mesh egress.undeclared: allow)", first.source)
        return _forwarded(t, first.service, (("any", 1.0),), external=True, to=f"{t.headers.get('host')} (outside the mesh)")
    if first.external:
        eps = ", ".join(str(e) for e in first.endpoints)
        tls = (f"TLS originated (SNI {first.external_tls.sni}, CA {first.external_tls.ca_file})"
               if first.external_tls else "plaintext")
        t.step("caller", "external", f"{first.service}: forwarded outside the mesh to {eps} ({tls}; no mesh mTLS)",
               first.source, endpoints=[str(e) for e in first.endpoints])
        return _forwarded(t, first.service, versions, external=True, to=f"ExternalService {first.service}")
    callee = sidecars.get(first.service)
    t.sidecars["callee"] = first.service
    listener = inbound_side.inbound(callee) if callee else None
    if listener is None:
        t.step("callee", "listener", f"{first.service} has no inbound listener: 503")
        return Outcome("unreachable", 503, certain=t.certain, service=first.service, summary=f"{first.service} unreachable")
    t.step("callee", "listener", f"{callee.service} inbound {listener.address}:{listener.port}", callee.source)
    connected, who = inbound_side.connection(t, caller, first, listener)
    if not connected:
        return Outcome("unreachable", 503, certain=t.certain, service=first.service, alternatives=tuple(t.alternatives),
                       summary=f"no connection to {first.service}: the sidecar of {caller.service} answers 503")
    status = inbound_side.http_side(t, callee, listener, who, targets, peer=caller.source_address)
    if status is not None:
        return Outcome("response", status, certain=t.certain, service=first.service, alternatives=tuple(t.alternatives),
                       summary=f"{status} answered by the sidecar of {callee.service}")
    return _forwarded(t, first.service, versions, external=False, to=first.service)


def _forwarded(t: Trace, service: str, versions, external: bool, to: str) -> Outcome:
    split = ", ".join(f"{v} {p * 100:g}%" for v, p in versions)
    return Outcome("forwarded", None, versions, t.certain, service, external, tuple(t.alternatives),
                   summary=f"forwarded to {to}: {split}")


def _tcp(t: Trace, sidecars: dict[str, Sidecar], caller: Sidecar, tcp: TcpListener) -> Outcome:
    c = tcp.cluster
    t.step("caller", "connection", f"tcp: {caller.service}'s app connects to {tcp.address}:{tcp.port}, "
           f"proxied to {c.service} (no paths, methods or headers: bytes)", tcp.source)
    if tcp.split:  # a tcp Route in pods: the caller draws the version (compiler/lower/tcp.py)
        split = ", ".join(f"{x.cluster.version} {percent_text(x.weight)}%" for x in tcp.split)
        t.step("caller", "targets", f"{c.service}: one version drawn per connection: {split} (tcp Route)",
               tcp.split[0].cluster.source, weights={x.cluster.version: x.weight for x in tcp.split})
    if c.external:
        t.step("caller", "external", f"{c.service}: outside the mesh, {', '.join(map(str, c.endpoints))}", c.source)
        return _forwarded(t, c.service, ((c.version, 1.0),), True, f"ExternalService {c.service}")
    callee = sidecars[c.service]
    t.sidecars["callee"] = c.service
    listener = inbound_side.inbound(callee)
    connected, who = inbound_side.connection(t, caller, c, listener)
    if not connected:
        return Outcome("unreachable", None, service=c.service, summary=f"no connection to {c.service}")
    version = inbound_side.tcp_side(t, listener, who, peer=caller.source_address)
    if version is None:
        return Outcome("unreachable", None, service=c.service,
                       summary=f"connection closed by {c.service}'s sidecar (authorization)")
    drawn = tcp.split or listener.split
    if not drawn and callee.kubernetes is not None:
        version = c.version  # in pods the caller's cluster is the version's headless Service: its pods answer
    return _forwarded(t, c.service, _versions(drawn) if drawn else ((version, 1.0),), False, c.service)
