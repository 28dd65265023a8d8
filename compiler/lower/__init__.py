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

from dataclasses import dataclass

from compiler.ir import (
    AccessLog,
    Cluster,
    GlobalRateLimit,
    HeaderCondition,
    HeaderOps,
    HttpListener,
    HttpRoute,
    MeshIR,
    Metrics,
    PathCondition,
    PathNormalization,
    RetryBudget,
    RouteTable,
    Sidecar,
    SidecarTls,
    Target,
    TcpListener,
    Tracing,
    UpstreamTls,
    VirtualHost,
)
from compiler.lower.access import access, jwt_check
from compiler.lower.protection import bucket, hash_key, protection
from compiler.lower.routes import VERSION_HEADER, lower_rule
from compiler.policy import (
    AuthorizationPolicy,
    Mesh,
    PolicySet,
    RequestAuthentication,
    Route,
    RouteRule,
    Service,
    TrafficPolicy,
)
from compiler.policy.placement import mtls_mode, observability, place, reach, spiffe_id

__all__ = ["VERSION_HEADER", "LowerOptions", "lower"]


@dataclass(frozen=True)
class LowerOptions:
    config_root: str | None = None
    """If set, sidecar S reads its files from `<config_root>/S` instead of the Mesh's `config_dir`."""
    certs_root: str | None = None
    """If set, sidecar S reads its certificates from `<certs_root>/S` instead of the Mesh's `mtls.certs_dir`."""


def lower(policy: PolicySet, options: LowerOptions = LowerOptions()) -> MeshIR:
    mesh = policy.meshes[0]
    services = {s.name: s for s in policy.services}
    routes = {r.service: r for r in policy.routes}
    traffic = {t.service: t for t in policy.traffic_policies}
    authz = {a.service: a for a in policy.authorization_policies}
    authn = {a.service: a for a in policy.request_authentications}
    shared = _Shared(mesh, services, routes, traffic, authz, authn)
    sidecars = [_sidecar(mesh, svc, shared, options) for svc in sorted(services.values(), key=lambda s: s.name)]
    return MeshIR(mesh.name, tuple(sidecars))


class _Shared:
    """Per-service IR nodes that every caller references (built once)."""

    def __init__(
        self,
        mesh: Mesh,
        services: dict[str, Service],
        routes: dict[str, Route],
        traffic: dict[str, TrafficPolicy],
        authz: dict[str, AuthorizationPolicy],
        authn: dict[str, RequestAuthentication],
    ):
        self.mesh = mesh
        self.services = services
        self.routes = routes
        self.traffic = traffic
        self.authz = authz
        self.authn = authn
        self._outbound: dict[str, dict[str, Cluster]] = {}
        self._vhosts: dict[str, VirtualHost] = {}

    def outbound_clusters(self, name: str) -> dict[str, Cluster]:
        if name not in self._outbound:
            svc = self.services[name]
            dest = reach(self.mesh, svc)
            route = self.routes.get(name)
            budget = None
            if route is not None and any(rule.retries for rule in route.rules):
                budget = RetryBudget(route.retry_budget.percent, route.retry_budget.min_concurrency)
            self._outbound[name] = {
                v: Cluster(
                    direction="outbound",
                    service=svc.name,
                    version=v,
                    endpoints=(dest,),
                    protocol=svc.protocol,
                    connect_timeout=self.mesh.defaults.connect_timeout,
                    source=svc.where("versions", v) if v in svc.versions else svc.source,
                    retry_budget=budget,
                    protection=protection(self.mesh, self.traffic.get(name), instances=False),
                    upstream_tls=UpstreamTls(svc.name, spiffe_id(self.mesh, svc))
                    if mtls_mode(self.mesh, svc) != "disable"
                    else None,
                )
                for v in svc.version_names
            }
        return self._outbound[name]

    def virtual_host(self, name: str) -> VirtualHost:
        if name not in self._vhosts:
            svc = self.services[name]
            route = self.routes.get(name)
            if route is None:
                rules = [(RouteRule(to={svc.effective_default_version: 100}), svc.source)]
            else:
                rules = [(rule, route.where("rules", i)) for i, rule in enumerate(route.rules)]
            http_routes = tuple(
                route
                for rule, src in rules
                for route in lower_rule(
                    rule, src, name, self.outbound_clusters, self.mesh.defaults.timeout, hash_key(self.traffic.get(name))
                )
            )
            self._vhosts[name] = VirtualHost(
                name=svc.name, domains=(svc.name, f"{svc.name}:{svc.port}"), routes=http_routes
            )
        return self._vhosts[name]


def _inbound(svc: Service, mesh: Mesh, shared: _Shared) -> tuple[list[Cluster], Cluster, list[HttpRoute]]:
    clusters = [
        Cluster(
            direction="inbound",
            service=svc.name,
            version=v,
            endpoints=tuple(svc.endpoints_of(v)),
            protocol=svc.protocol,
            connect_timeout=mesh.defaults.connect_timeout,
            source=svc.where("versions", v) if v in svc.versions else svc.source,
            protection=protection(mesh, shared.traffic.get(svc.name)),
        )
        for v in svc.version_names
    ]
    by_version = {c.version: c for c in clusters}
    # The callee enforces no tighter limit than any caller's route to it.
    route = shared.routes.get(svc.name)
    timeout = max([mesh.defaults.timeout] + [r.timeout for r in (route.rules if route else []) if r.timeout])
    # One route per version, chosen by the caller's marker; a single version needs none.
    versions = svc.version_names if len(svc.version_names) > 1 else []
    routes = [
        HttpRoute(
            path=PathCondition("prefix", "/"),
            headers=(HeaderCondition(VERSION_HEADER, "exact", v),),
            targets=(Target(by_version[v], 100),),
            timeout=timeout,
            request_headers=HeaderOps(remove=(VERSION_HEADER,)),
            source=by_version[v].source,
            hash_key=hash_key(shared.traffic.get(svc.name)),
        )
        for v in versions
    ]
    default = by_version[svc.effective_default_version]
    routes.append(
        HttpRoute(
            path=PathCondition("prefix", "/"),
            headers=(),
            targets=(Target(default, 100),),
            timeout=timeout,
            request_headers=HeaderOps(remove=(VERSION_HEADER,)),
            source=default.source,
            hash_key=hash_key(shared.traffic.get(svc.name)),
        )
    )
    return clusters, default, routes


def _observability(mesh: Mesh, svc: Service, p, shared: _Shared, clusters: list[Cluster]):
    m, t, a = observability(mesh, svc)
    metrics = Metrics(p.address, m.port, tuple(m.keep_prefixes)) if m else None
    tracing = None
    if t is not None:
        collector_svc = shared.services[t.collector]
        collector = shared.outbound_clusters(t.collector)[collector_svc.effective_default_version]
        if all(c is not collector for c in clusters):
            clusters.append(collector)
        tracing = Tracing(t.provider, collector, t.sampling, tuple(sorted(t.tags.items())))
    access_log = AccessLog(a.to, a.path, a.format, a.only, a.slow_over) if a else None
    return metrics, tracing, access_log


def _sidecar(mesh: Mesh, svc: Service, shared: _Shared, options: LowerOptions) -> Sidecar:
    p = place(mesh, svc)
    inbound_clusters, default, inbound_routes = _inbound(svc, mesh, shared)
    listeners: list = []
    clusters: list[Cluster] = list(inbound_clusters)

    mode = mtls_mode(mesh, svc)
    tls_mode = None if mode == "disable" else mode
    if svc.protocol == "tcp":
        listeners.append(
            TcpListener(
                "inbound", p.address, p.inbound_port, default, svc.source, tls_mode=tls_mode,
                access=access(mesh, shared.authz.get(svc.name), shared.services),
            )
        )
    else:
        table = RouteTable(
            "inbound", (VirtualHost(name=svc.name, domains=("*",), routes=tuple(inbound_routes)),)
        )
        tp = shared.traffic.get(svc.name)
        global_limit = None
        if tp is not None and tp.global_rate_limit is not None:
            g = tp.global_rate_limit
            limiter = shared.services[g.service]
            limiter_cluster = shared.outbound_clusters(g.service)[limiter.effective_default_version]
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
                access=access(mesh, shared.authz.get(svc.name), shared.services),
                jwt=jwt_check(shared.authn.get(svc.name), mesh.paths),
                paths=PathNormalization(mesh.paths.escaped_slashes),
            )
        )

    vhosts = []
    for dep_name in sorted(svc.calls):
        dep = shared.services[dep_name]
        dep_clusters = shared.outbound_clusters(dep_name)
        clusters.extend(dep_clusters.values())
        if dep.protocol == "tcp":
            target = dep_clusters[dep.effective_default_version]
            listeners.append(TcpListener("outbound", p.outbound_address, dep.port, target, svc.where("calls")))
        else:
            vhosts.append(shared.virtual_host(dep_name))
    # Mirrors may copy traffic to services the app does not call itself.
    known = {id(c) for c in clusters}
    for vhost in vhosts:
        for route in vhost.routes:
            for mirror in route.mirrors:
                if id(mirror.cluster) not in known:
                    known.add(id(mirror.cluster))
                    clusters.append(mirror.cluster)
    if vhosts:
        listeners.append(
            HttpListener(
                "outbound", p.outbound_address, p.outbound_port, RouteTable("outbound", tuple(vhosts)),
                paths=PathNormalization(mesh.paths.escaped_slashes),
            )
        )

    metrics, tracing, access_log = _observability(mesh, svc, p, shared, clusters)
    config_dir = f"{options.config_root.rstrip('/')}/{svc.name}" if options.config_root else mesh.config_dir
    tls = None
    if mode != "disable":
        certs_dir = f"{options.certs_root.rstrip('/')}/{svc.name}" if options.certs_root else mesh.mtls.certs_dir
        tls = SidecarTls(certs_dir, spiffe_id(mesh, svc), mesh.trust_domain)
    return Sidecar(
        service=svc.name,
        mesh=mesh.name,
        protocol=svc.protocol,
        admin_address=p.admin_address,
        admin_port=p.admin_port,
        config_dir=config_dir,
        listeners=tuple(sorted(listeners, key=lambda l: (l.direction, l.port))),
        clusters=tuple(sorted(clusters, key=lambda c: c.id)),
        source=svc.source,
        tls=tls,
        metrics=metrics,
        tracing=tracing,
        access_log=access_log,
        # On one host every connection would leave from 127.0.0.1; from its own address a caller stays
        # recognisable to the callee (source_ip hashing, logs).
        source_address=p.address if p.one_host else None,
    )
