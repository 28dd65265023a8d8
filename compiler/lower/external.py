"""ExternalServices and Mesh egress (policy) -> the caller-side IR of the way out of the mesh.

An ExternalService is lowered like a mesh dependency with the one version
`default`: a cluster (its endpoints, or its host resolved by DNS; TLS
originated with its CA bundle, never the mesh's certificate), and for
http/grpc a virtual host on the caller's outbound listener whose routes come
from its Route (else one default route), always rewriting Host to the
external host, so an app that calls `Host: payments` reaches the right
virtual host upstream. A tcp external gets an outbound listener of its own
(the caller's sidecar does this, in compiler/lower/__init__.py).

The outbound route table ends with a catch-all `*` virtual host for every
other Host (Mesh `egress.undeclared`): `refuse` answers 502 with a body that
says what to declare; `allow` forwards to whatever the Host names, through
Envoy's dynamic forward proxy (plain HTTP, resolved by DNS).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from compiler.ir import (
    Cluster,
    Dns,
    HeaderOps,
    HttpRoute,
    OriginateTls,
    PathCondition,
    Respond,
    RetryBudget,
    Rewrite,
    Target,
    VirtualHost,
)
from compiler.lower.protection import hash_key, protection
from compiler.lower.routes import lower_rule
from compiler.policy import Mesh, RouteRule
from compiler.policy.resolved import ExternalView, Resolved
from compiler.policy.types import Duration

DNS_REFRESH = Duration(5_000)
"""How often Envoy re-resolves an external host (Envoy's default; sooner when the record's TTL is shorter)."""

UNDECLARED = "undeclared_hosts"
"""Name of the catch-all virtual host and of the forward-proxy cluster's service: not a valid policy name,
so it never collides with a Service or ExternalService."""

EGRESS_HEADER = "x-meshc-egress"
"""Response header of the catch-all: `refused` when the refusal comes from the sidecar, not the host."""

REFUSED_BODY = (
    "meshc: refused by the caller's sidecar: no Service or ExternalService in this service's `calls` "
    "answers to this Host (Mesh egress.undeclared: refuse). To reach a host outside the mesh, declare it "
    "(kind: ExternalService, name, host, port) and list its name in the caller's `calls`; to reach a mesh "
    "service, list it in `calls`.\n"
)


def authority(ev: ExternalView) -> str:
    """The Host the external server gets: its host, with the port unless it is the scheme's default."""
    ext = ev.service
    default = 443 if ext.tls else 80
    return ext.host if ext.port == default else f"{ext.host}:{ext.port}"


def external_cluster(mesh: Mesh, ev: ExternalView) -> Cluster:
    """The one cluster of an ExternalService (version `default`), shared by every caller."""
    ext, route = ev.service, ev.route
    budget = None
    if route is not None and any(rule.retries for rule in route.rules):
        budget = RetryBudget(route.retry_budget.percent, route.retry_budget.min_concurrency)
    # Its host by DNS: logical DNS (one host whatever the answer; Envoy's advice for large web services).
    # Fixed endpoints that are names: each address is a host (strict DNS). Fixed addresses: static.
    dns = Dns(DNS_REFRESH, logical=ev.resolve_dns)
    tls = None
    if ext.tls is not None:
        # HTTP/2 over TLS is chosen in the handshake: offer only h2 when the cluster speaks nothing else.
        http2 = ev.protections["default"].connection_pool.upstream_protocol == "http2"
        alpn = ("h2",) if ext.protocol == "grpc" or (http2 and ext.protocol == "http") else ()
        tls = OriginateTls(ev.sni, ext.tls.ca, ext.tls.min_version, alpn)
    return Cluster(
        direction="outbound",
        service=ext.name,
        version=ev.default_version,
        endpoints=ev.endpoints,
        protocol=ext.protocol,
        connect_timeout=mesh.defaults.connect_timeout,
        source=ext.source,
        retry_budget=budget,
        # Its instances are not ours to health-check; the caller limits and ejects like for a mesh service.
        protection=protection(mesh, ev.traffic, instances=False, protocol=ext.protocol),
        dns=dns,
        external=True,
        external_tls=tls,
    )


def unmarked(route: HttpRoute) -> HttpRoute:
    """The route without the version marker on targets and mirrors that leave the mesh (an external host
    has no sidecar to read it, and should not learn the mesh's headers)."""
    if not any(t.cluster.external and t.set_headers for t in route.targets) and not any(
        m.cluster.external and m.set_headers for m in route.mirrors
    ):
        return route
    return replace(
        route,
        targets=tuple(replace(t, set_headers=()) if t.cluster.external else t for t in route.targets),
        mirrors=tuple(replace(m, set_headers=()) if m.cluster.external else m for m in route.mirrors),
    )


def _host_rewritten(route: HttpRoute, host: str) -> HttpRoute:
    """Forwarding routes send Host `host` upstream, unless the rule rewrites Host itself."""
    if not route.targets:
        return route
    rewrite = route.rewrite or Rewrite()
    if rewrite.host is not None:
        return route
    return replace(route, rewrite=replace(rewrite, host=host))


def external_virtual_host(
    view: Resolved, ev: ExternalView, clusters_of: Callable[[str], dict[str, Cluster]], applied: list
) -> VirtualHost:
    """The virtual host of an http/grpc ExternalService on a caller's outbound listener; `applied`: its Route's
    rules on that caller (Resolved.rules_on)."""
    ext, route = ev.service, ev.route
    if route is None:
        rules = [(RouteRule(to={ev.default_version: 100}), ext.source, ())]
    else:
        rules = [(rule, route.where("rules", i), versions) for i, rule, versions in applied]
    host = authority(ev)
    routes = tuple(
        replace(_host_rewritten(unmarked(r), host), caller_versions=versions)
        for rule, src, versions in rules
        for r in lower_rule(rule, src, ext.name, clusters_of, view.timeout_of(rule), hash_key(ev.traffic))
    )
    domains = []
    for name in (ext.host, ext.name):
        for domain in (name, f"{name}:{ext.port}"):
            if domain not in domains:
                domains.append(domain)
    return VirtualHost(name=ext.name, domains=tuple(domains), routes=routes)


def _egress_source(mesh: Mesh):
    """The Mesh's `egress` when the policy writes it, else the Mesh itself (the default applies)."""
    return mesh.where("egress") if "egress" in mesh.model_fields_set else mesh.source


def forward_proxy_cluster(mesh: Mesh) -> Cluster:
    """Where `egress.undeclared: allow` sends a request: the host:port its Host names (port 80 if none)."""
    return Cluster(
        direction="outbound",
        service=UNDECLARED,
        version="any",
        endpoints=(),
        protocol="http",
        connect_timeout=mesh.defaults.connect_timeout,
        source=_egress_source(mesh),
        protection=protection(mesh, None, instances=False),
        external=True,
        forward_proxy=True,
    )


def undeclared_virtual_host(mesh: Mesh, forward: Cluster | None) -> VirtualHost:
    """The last virtual host of an outbound route table: every Host nothing declares.

    `forward`: the forward-proxy cluster (`allow`), or None (`refuse`)."""
    common = dict(path=PathCondition("prefix", "/"), headers=(), source=_egress_source(mesh))
    if forward is None:
        route = HttpRoute(
            **common,
            respond=Respond(502, REFUSED_BODY),
            response_headers=HeaderOps(set=((EGRESS_HEADER, "refused"),)),
        )
    else:
        route = HttpRoute(**common, targets=(Target(forward, 100),), timeout=mesh.defaults.timeout)
    return VirtualHost(name=UNDECLARED, domains=("*",), routes=(route,))
