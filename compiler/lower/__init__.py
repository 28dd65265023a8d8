"""Stage 3, lower: a checked policy -> the mesh IR.

One sidecar per Service. Its inbound listener delivers to the service's
versions; its outbound listener routes the app's calls to the services in
`calls`, by Host. Version choice happens on the caller (Route rules); the
caller marks its choice with the `x-meshc-version` header and the callee's
inbound side delivers to that version's endpoints (and strips the header).

Shared IR nodes (a dependency's clusters and virtual host) are built once per
service and referenced by every caller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.ir import (
    Cluster,
    Dns,
    GlobalRateLimit,
    HeaderCondition,
    HeaderOps,
    HttpListener,
    HttpRoute,
    MeshIR,
    PathCondition,
    PathNormalization,
    RetryBudget,
    RouteTable,
    Sidecar,
    Target,
    TcpListener,
    UpstreamTls,
    VirtualHost,
)
from compiler.lower.access import access, jwt_check
from compiler.lower.envoy import folders, mirror_clusters, observability, unique
from compiler.lower.gateway import lower_gateway
from compiler.lower.external import (
    external_cluster,
    external_virtual_host,
    forward_proxy_cluster,
    unmarked,
    undeclared_virtual_host,
)
from compiler.lower.kubernetes import ca_bundles, kubernetes_sidecar
from compiler.lower.protection import bucket, hash_key, protection
from compiler.lower.routes import VERSION_HEADER, lower_rule
from compiler.lower.tcp import source as tcp_source
from compiler.lower.tcp import split as tcp_split
from compiler.policy import PolicySet, RouteRule
from compiler.policy.resolved import Resolved, ServiceView, resolve

__all__ = ["VERSION_HEADER", "LowerOptions", "lower"]


@dataclass(frozen=True)
class LowerOptions:
    config_root: str | None = None
    """If set, sidecar S reads its files from `<config_root>/S` instead of the Mesh's `config_dir`."""
    certs_root: str | None = None
    """If set, sidecar S reads its certificates from `<certs_root>/S` instead of the Mesh's `mtls.certs_dir`."""


def lower(policy: PolicySet | Resolved, options: LowerOptions = LowerOptions()) -> MeshIR:
    """`policy`: best the Resolved view that check() validated (a PolicySet is resolved here)."""
    view = resolve(policy)
    shared = _Shared(view)
    sidecars = [_sidecar(view[name], shared, options) for name in sorted(view.views)]
    # A gateway is an Envoy without an app (compiler/lower/gateway.py), in the same sorted list.
    sidecars += [lower_gateway(view.gateways[name], shared, options) for name in sorted(view.gateways)]
    sidecars.sort(key=lambda s: s.service)
    return MeshIR(view.mesh.name, tuple(sidecars))


class _Shared:
    """Per-service IR nodes that every caller references (built once)."""

    def __init__(self, view: Resolved):
        self.view = view
        self.mesh = view.mesh
        self._outbound: dict[str, dict[str, Cluster]] = {}
        self._vhosts: dict[tuple, VirtualHost] = {}
        self._undeclared: tuple[VirtualHost, Cluster | None] | None = None

    def callee(self, name: str):
        """The ServiceView, or the ExternalView (compiler/lower/external.py), that `calls` names."""
        return self.view.externals[name] if name in self.view.externals else self.view[name]

    def outbound_clusters(self, name: str) -> dict[str, Cluster]:
        if name not in self._outbound and name in self.view.externals:
            ev = self.view.externals[name]
            self._outbound[name] = {ev.default_version: external_cluster(self.mesh, ev)}
        if name not in self._outbound:
            sv = self.view[name]
            svc = sv.service
            route = sv.route
            budget = None
            if route is not None and any(rule.retries for rule in route.rules):
                budget = RetryBudget(route.retry_budget.percent, route.retry_budget.min_concurrency)
            # In pods a version's name resolves to its pods: the caller balances, ejects and health-checks
            # each of them (one Envoy host per pod IP), and follows them as DNS changes.
            dns = Dns(self.mesh.kubernetes.dns_refresh) if sv.in_pods else None
            self._outbound[name] = {
                v: Cluster(
                    direction="outbound",
                    service=svc.name,
                    version=v,
                    endpoints=(sv.version_reach[v],),
                    protocol=svc.protocol,
                    connect_timeout=self.mesh.defaults.connect_timeout,
                    source=svc.where("versions", v) if v in svc.versions else svc.source,
                    retry_budget=budget,
                    protection=protection(
                        self.mesh, sv.traffic, instances=bool(sv.in_pods) and v in sv.app_port_versions,
                        protocol=svc.protocol, settings=sv.protections[v],
                    ),
                    upstream_tls=UpstreamTls(svc.name, sv.identity) if sv.mtls != "disable" else None,
                    dns=dns,
                )
                for v in sv.versions
            }
        return self._outbound[name]

    def virtual_host(self, name: str, caller: str) -> VirtualHost:
        """`name`'s virtual host on `caller`'s sidecar (a Service's or a Gateway's): its Route's rules that apply
        to that caller (Resolved.rules_on). Callers with the same rules share one IR node."""
        applied = self.view.rules_on(name, caller)
        key = (name, tuple((i, versions) for i, _, versions in applied))
        if key not in self._vhosts and name in self.view.externals:
            self._vhosts[key] = external_virtual_host(self.view, self.view.externals[name], self.outbound_clusters, applied)
        if key not in self._vhosts:
            sv = self.view[name]
            svc, route = sv.service, sv.route
            if route is None:
                rules = [(RouteRule(to={sv.default_version: 100}), svc.source, ())]
            else:
                rules = [(rule, route.where("rules", i), versions) for i, rule, versions in applied]
            http_routes = tuple(
                replace(unmarked(route), caller_versions=versions)  # a mirror to an ExternalService carries no version marker out of the mesh
                for rule, src, versions in rules
                for route in lower_rule(
                    rule, src, name, self.outbound_clusters, self.view.timeout_of(rule), hash_key(sv.traffic)
                )
            )
            if sv.traffic is not None and sv.traffic.websockets:  # upgrades pass on every forwarding route
                http_routes = tuple(replace(r, websocket=True) if r.targets else r for r in http_routes)
            self._vhosts[key] = VirtualHost(
                name=svc.name, domains=(svc.name, f"{svc.name}:{svc.port}"), routes=http_routes
            )
        return self._vhosts[key]

    def undeclared(self) -> tuple[VirtualHost, Cluster | None]:
        """The catch-all virtual host of outbound route tables (Mesh `egress.undeclared`), and with `allow` the
        forward-proxy cluster it sends to."""
        if self._undeclared is None:
            forward = forward_proxy_cluster(self.mesh) if self.mesh.egress.undeclared == "allow" else None
            self._undeclared = (undeclared_virtual_host(self.mesh, forward), forward)
        return self._undeclared


def _inbound(sv: ServiceView, shared: _Shared) -> tuple[list[Cluster], Cluster, list[HttpRoute]]:
    svc, mesh = sv.service, shared.mesh
    clusters = [
        Cluster(
            direction="inbound",
            service=svc.name,
            version=v,
            endpoints=sv.endpoints[v],
            protocol=svc.protocol,
            connect_timeout=mesh.defaults.connect_timeout,
            source=svc.where("versions", v) if v in svc.versions else svc.source,
            protection=protection(mesh, sv.traffic, protocol=svc.protocol, settings=sv.protections[v]),
        )
        for v in sv.versions
    ]
    by_version = {c.version: c for c in clusters}
    timeout = sv.inbound_timeout
    websocket = sv.traffic is not None and sv.traffic.websockets
    # One route per version, chosen by the caller's marker; a single version needs none.
    versions = sv.versions if len(sv.versions) > 1 else []
    routes = [
        HttpRoute(
            path=PathCondition("prefix", "/"),
            headers=(HeaderCondition(VERSION_HEADER, "exact", v),),
            targets=(Target(by_version[v], 100),),
            timeout=timeout,
            request_headers=HeaderOps(remove=(VERSION_HEADER,)),
            source=by_version[v].source,
            hash_key=hash_key(sv.traffic),
            websocket=websocket,
        )
        for v in versions
    ]
    default = by_version[sv.default_version]
    routes.append(
        HttpRoute(
            path=PathCondition("prefix", "/"),
            headers=(),
            targets=(Target(default, 100),),
            timeout=timeout,
            request_headers=HeaderOps(remove=(VERSION_HEADER,)),
            source=default.source,
            hash_key=hash_key(sv.traffic),
            websocket=websocket,
        )
    )
    return clusters, default, routes


def _sidecar(sv: ServiceView, shared: _Shared, options: LowerOptions) -> Sidecar:
    svc, mesh, p = sv.service, shared.mesh, sv.placement
    inbound_clusters, default, inbound_routes = _inbound(sv, shared)
    listeners: list = []
    clusters: list[Cluster] = list(inbound_clusters)

    mode = sv.mtls
    tls_mode = None if mode == "disable" else mode
    if sv.listener == "tcp":
        # On one host the callee draws a tcp Route's version per connection (compiler/lower/tcp.py).
        one, weighted = tcp_split(sv, {c.version: c for c in inbound_clusters}, here=not sv.in_pods)
        listeners.append(
            TcpListener(
                "inbound", p.address, p.inbound_port, one or default,
                tcp_source(sv, svc.source) if not sv.in_pods else svc.source, tls_mode=tls_mode,
                access=access(shared.view, sv.authz), split=weighted,
            )
        )
    else:
        table = RouteTable(
            "inbound", (VirtualHost(name=svc.name, domains=("*",), routes=tuple(inbound_routes)),)
        )
        tp = sv.traffic
        global_limit = None
        if tp is not None and tp.global_rate_limit is not None:
            g = tp.global_rate_limit
            limiter_cluster = shared.outbound_clusters(g.service)[shared.view[g.service].default_version]
            clusters.append(limiter_cluster)
            global_limit = GlobalRateLimit(limiter_cluster, g.domain, tuple(g.descriptors), g.failure_mode_deny, g.timeout)
        listeners.append(
            HttpListener(
                "inbound",
                p.address,
                p.inbound_port,
                table,
                rate_limit=bucket(tp.rate_limit) if tp else None,
                global_rate_limit=global_limit,
                tls_mode=tls_mode,
                access=access(shared.view, sv.authz),
                jwt=jwt_check(sv.authn, mesh.paths),
                paths=PathNormalization(mesh.paths.escaped_slashes),
            )
        )

    vhosts = []
    for dep_name in sorted(svc.calls):
        dep = shared.callee(dep_name)  # a Service or an ExternalService
        dep_clusters = shared.outbound_clusters(dep_name)
        clusters.extend(dep_clusters.values())
        if dep.listener == "tcp":
            # In pods the caller draws a tcp Route's version per connection (compiler/lower/tcp.py).
            drawn = tcp_split(dep, dep_clusters, here=bool(dep.in_pods)) if isinstance(dep, ServiceView) else (None, ())
            target = drawn[0] or dep_clusters[dep.default_version]
            listeners.append(
                TcpListener("outbound", p.outbound_address, dep.service.port, target, svc.where("calls"), split=drawn[1])
            )
        else:
            vhosts.append(shared.virtual_host(dep_name, svc.name))
    mirror_clusters(vhosts, clusters)  # mirrors may copy traffic to services the app does not call itself
    # Every other Host gets the catch-all (refused, or forwarded as it is with `allow`). With `allow` every
    # sidecar has an outbound listener, since the app's calls to undeclared hosts are meant to go through it.
    catch_all, forward = shared.undeclared()
    if vhosts or forward is not None:
        vhosts.append(catch_all)
        if forward is not None:
            clusters.append(forward)
        listeners.append(
            HttpListener(
                "outbound", p.outbound_address, p.outbound_port, RouteTable("outbound", tuple(vhosts)),
                paths=PathNormalization(mesh.paths.escaped_slashes),
                caller_version=any(r.caller_versions for v in vhosts for r in v.routes),
            )
        )

    metrics, tracing, access_log = observability(sv, p.address, shared, clusters)
    config_dir, tls = folders(svc.name, shared, options, sv.identity, mode != "disable")
    return Sidecar(
        service=svc.name,
        mesh=mesh.name,
        protocol=svc.protocol,
        admin_address=p.admin_address,
        admin_port=p.admin_port,
        config_dir=config_dir,
        listeners=tuple(sorted(listeners, key=lambda l: (l.direction, l.port))),
        clusters=unique(clusters),
        source=svc.source,
        tls=tls,
        metrics=metrics,
        tracing=tracing,
        access_log=access_log,
        # On one host every connection would leave from 127.0.0.1; from its own address a caller stays
        # recognisable to the callee (source_ip hashing, logs).
        source_address=p.address if p.one_host else None,
        kubernetes=kubernetes_sidecar(
            sv, mesh, ca_bundles(shared.view, clusters),
            caller_version=any(isinstance(l, HttpListener) and l.caller_version for l in listeners),
        ) if sv.in_pods else None,
    )
