"""Gateway (policy) -> the Sidecar IR of its Envoy: edge listeners, routes into the mesh, its clusters.

A gateway is lowered like a sidecar without an app. Each gateway listener
becomes an `HttpListener` with `edge` set. Its routes are the destination
services' own lowered routes (the shared virtual host every mesh caller
uses, with the very same Cluster objects), so a service's Route rules (a
canary split, an A/B match, retries, timeouts, faults, mirrors) apply to
outside traffic exactly as to mesh callers. The gateway reaches the mesh
as any caller does: the destinations' outbound clusters, with mTLS and an
identity of its own when it holds mesh certificates.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from compiler.ir import (
    Cluster,
    HeaderCondition,
    HttpListener,
    HttpRoute,
    PathCondition,
    PathNormalization,
    Redirect,
    RouteTable,
    Sidecar,
    VirtualHost,
)
from compiler.ir_edge import Edge, EdgeCertificate, EdgeLimits, EdgeTls, GatewayPort, GatewaySpec
from compiler.lower.access import jwt_check
from compiler.lower.envoy import folders, mirror_clusters, observability, unique
from compiler.lower.kubernetes import ca_bundles, kubernetes_gateway
from compiler.lower.protection import bucket
from compiler.policy.gateway import GatewayListener, GatewayRoute
from compiler.policy.resolved import GatewayView

if TYPE_CHECKING:
    from compiler.lower import LowerOptions, _Shared

ANY_HOST = "*"


def covers(pattern: str, host: str) -> bool:
    """Whether every name `host` stands for is also covered by `pattern` (both as in GatewayRoute.hosts):
    equal, or `pattern` is a wildcard `*.d` and `host` lies under `d` (a name or a narrower wildcard)."""
    return pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def serves(route: GatewayRoute, host: str) -> bool:
    """A route serves the virtual host of `host`: it names no host (any), or one of its hosts covers `host`."""
    return not route.hosts or any(covers(h, host) for h in route.hosts)


def _under(prefix: str, route: HttpRoute) -> HttpRoute | None:
    """A destination's route as served under the gateway route's path prefix; None when no path can match both.

    A route whose own prefix is wider takes the gateway's prefix instead, unless it rewrites the prefix (a
    rewrite or a redirect's `prefix`: Envoy replaces exactly the matched prefix); then, as for a regex or a
    case-insensitive path, a `:path` prefix condition is added."""
    if prefix == "/":
        return route
    p = route.path
    if not p.ignore_case and p.kind in ("prefix", "exact"):
        if p.value.startswith(prefix):
            return route  # only paths under the gateway's prefix can match it
        if p.kind == "exact" or not prefix.startswith(p.value):
            return None  # disjoint: no path matches both
        rewrites_prefix = (route.rewrite is not None and route.rewrite.prefix is not None) or (
            route.redirect is not None and route.redirect.prefix is not None
        )
        if not rewrites_prefix:
            return replace(route, path=PathCondition("prefix", prefix))
    return replace(route, headers=(HeaderCondition(":path", "prefix", prefix),) + route.headers)


def _routes_for(view_routes, host: str | None, shared: "_Shared", gateway: str) -> tuple[HttpRoute, ...]:
    out: list[HttpRoute] = []
    for r in view_routes:
        if host is None and r.hosts or host is not None and not serves(r, host):
            continue
        for route in shared.virtual_host(r.to, gateway).routes:  # the rules that apply to this gateway as a caller
            under = _under(r.path, route)
            if under is not None:
                out.append(under)
    return tuple(out)


def route_table(gv: GatewayView, listener: GatewayListener, shared: "_Shared") -> RouteTable:
    """The virtual hosts of one serving listener: one per distinct host its routes name (in gateway order),
    holding every route that covers that host in gateway order; and `*` for the routes that name no host."""
    routes = [r for r, on in gv.routes if listener.name in on]
    hosts: list[str] = []
    for r in routes:
        hosts.extend(h for h in r.hosts if h not in hosts)
    vhosts = [VirtualHost(name=h, domains=(h,), routes=_routes_for(routes, h, shared, gv.name)) for h in hosts]
    if any(not r.hosts for r in routes):
        vhosts.append(VirtualHost(name=ANY_HOST, domains=(ANY_HOST,), routes=_routes_for(routes, None, shared, gv.name)))
    return RouteTable(f"edge-{listener.name}", tuple(vhosts))


def _redirect_table(gv: GatewayView, listener: GatewayListener, index: int) -> RouteTable:
    route = HttpRoute(
        path=PathCondition("prefix", "/"),
        headers=(),
        source=gv.gateway.where("listeners", index),
        redirect=Redirect(scheme="https", host=None, port=gv.https_port, path=None, prefix=None, code=301),
    )
    return RouteTable(f"edge-{listener.name}", (VirtualHost(name=ANY_HOST, domains=(ANY_HOST,), routes=(route,)),))


def _limits(gv: GatewayView) -> EdgeLimits:
    l = gv.gateway.limits
    return EdgeLimits(
        max_connections=l.max_connections,
        max_request_headers_kb=l.max_request_headers_kb,
        max_headers=l.max_headers,
        max_request_bytes=l.max_request_bytes,
        request_headers_timeout=l.request_headers_timeout,
        request_timeout=l.request_timeout,
        stream_idle_timeout=l.stream_idle_timeout,
        idle_timeout=l.idle_timeout,
    )


def _tls(listener: GatewayListener) -> EdgeTls | None:
    t = listener.tls
    if listener.protocol != "https" or t is None:
        return None
    certificates = tuple(
        EdgeCertificate(f"edge-{listener.name}-{i + 1}", tuple(c.hosts), c.cert, c.key)
        for i, c in enumerate(t.certificates)
    )
    return EdgeTls(certificates, t.min_version, t.client_ca)


def _listener(gv: GatewayView, listener: GatewayListener, index: int, shared: "_Shared") -> HttpListener:
    gw, mesh = gv.gateway, shared.mesh
    redirect = listener.redirect_to_https and listener.protocol == "http"
    edge = Edge(
        listener=listener.name,
        source=gw.where("listeners", index),
        tls=_tls(listener),
        https_redirect_port=gv.https_port if redirect else None,
        trusted_hops=gw.trusted_hops,
        limits=_limits(gv),
    )
    table = _redirect_table(gv, listener, index) if redirect else route_table(gv, listener, shared)
    return HttpListener(
        "edge",
        gv.address,
        listener.port,
        table,
        rate_limit=bucket(gw.rate_limit),
        # A redirect answers before anything reaches the mesh: no token is needed to learn the https URL.
        jwt=None if redirect else jwt_check(gv.authn, mesh.paths),
        paths=PathNormalization(mesh.paths.escaped_slashes),
        edge=edge,
    )


def _files(listeners: list[GatewayListener]) -> tuple[str, ...]:
    files: set[str] = set()
    for l in listeners:
        if l.protocol == "https" and l.tls is not None:
            files.update(f for c in l.tls.certificates for f in (c.cert, c.key))
            if l.tls.client_ca:
                files.add(l.tls.client_ca)
    return tuple(sorted(files))


def lower_gateway(gv: GatewayView, shared: "_Shared", options: "LowerOptions") -> Sidecar:
    """The gateway's Envoy as a Sidecar (`gateway` set, no app)."""
    gw, mesh = gv.gateway, shared.mesh
    listeners = [_listener(gv, l, i, shared) for i, l in enumerate(gw.listeners)]
    clusters: list[Cluster] = []
    for name in gv.destinations:
        clusters.extend(shared.outbound_clusters(name).values())
    mirror_clusters((v for l in listeners for v in l.routes.virtual_hosts), clusters)  # what its routes copy to
    metrics, tracing, access_log = observability(gv, gv.address, shared, clusters)
    config_dir, tls = folders(gw.name, shared, options, gv.identity, gv.mtls)
    spec = GatewaySpec(
        name=gw.name,
        namespace=gw.namespace,
        replicas=gw.replicas,
        listeners=tuple(GatewayPort(l.name, l.port, l.protocol) for l in gw.listeners),
        files=_files(gw.listeners),
        kubernetes=kubernetes_gateway(gv, mesh, ca_bundles(shared.view, clusters)) if gv.in_pods else None,
    )
    return Sidecar(
        service=gw.name,
        mesh=mesh.name,
        protocol="http",
        admin_address=gv.admin_address,
        admin_port=gv.admin_port,
        config_dir=config_dir,
        listeners=tuple(sorted(listeners, key=lambda l: (l.direction, l.port))),
        clusters=unique(clusters),
        source=gw.source,
        tls=tls,
        metrics=metrics,
        tracing=tracing,
        access_log=access_log,
        source_address=None if gv.in_pods else gv.address,
        gateway=spec,
    )
