"""The resolved view: what a loaded policy means, worked out once and read by both check and lower.

`resolve(policy)` indexes the documents by service name and, for every
Service, merges the Mesh's defaults with the service's own settings: where
its sidecar listens and how callers reach it (placement), its mTLS mode and
SPIFFE identity, its versions and their endpoints, its effective default
version, route timeouts and observability, and what its inbound listener can
enforce. The check stage validates these values and the lower stage builds
the IR from the very same ones, so nothing can be checked one way and lowered
another.

Meaning that needs the Mesh is resolved only when there is exactly one Mesh
(check reports E201/E202 otherwise, and its Mesh-dependent checks do not
run); without it those fields are None. Indexes keep the last document of a
name, like a dict built in document order; check reports the duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.policy.external import ExternalService
from compiler.policy.gateway import Gateway, GatewayRoute
from compiler.policy.models import Mesh, Service
from compiler.policy.observability import AccessLog, Metrics, Tracing
from compiler.policy.placement import (
    Placement,
    headless_service,
    mtls_mode,
    observability,
    place,
    reach,
    spiffe_id,
    version_reach,
)
from compiler.policy.caller import versions_for
from compiler.policy.route import NON_IDEMPOTENT_METHODS, Route, RouteRule
from compiler.policy.protections import Protections, protections
from compiler.policy.security import AuthorizationPolicy, RequestAuthentication
from compiler.policy.traffic import ConnectionPool, TrafficPolicy
from compiler.policy.types import Duration, Endpoint, is_loopback, is_wildcard

ENFORCEABLE: dict[str, frozenset[str]] = {
    "http": frozenset(
        {
            "routes",  # Route rules: matching, splits, retries, faults, rewrites, mirrors...
            "from",  # AuthorizationPolicy conditions
            "paths",
            "methods",
            "not_paths",
            "not_methods",
            "headers",
            "claims",
            "request_authentication",  # JWT verification
            "rate_limit",  # TrafficPolicy
            "global_rate_limit",
            "health_check",
            "hash_on",
            "max_requests_per_connection",  # TrafficPolicy connection_pool: HTTP connections
            "idle_timeout",
            "upstream_protocol",
            "websockets",
        }
    ),
    # Opaque bytes: a connection is all there is, authorized by the caller's certificate.
    "tcp": frozenset({"from"}),
}
"""What a service's inbound listener can enforce, by listener kind (policy field names)."""


def listener_kind(service: Service) -> str:
    """http (HTTP connection manager: http and grpc services) or tcp (tcp proxy)."""
    return "tcp" if service.protocol == "tcp" else "http"


def enforces(service: Service, what: str) -> bool:
    """Whether the service's inbound listener can enforce `what` (a key of ENFORCEABLE's sets)."""
    return what in ENFORCEABLE[listener_kind(service)]


def unretried_methods(rule: RouteRule) -> list[str]:
    """The methods of the rule's requests that are not safe to retry (sorted): those it matches among
    NON_IDEMPOTENT_METHODS, or all of them when it matches any method."""
    methods = rule.match.methods
    return sorted(set(methods) & set(NON_IDEMPOTENT_METHODS)) if methods else list(NON_IDEMPOTENT_METHODS)


def tries_of(rule: RouteRule) -> int:
    """At most how many tries one request of the rule makes to its upstream: 1 + retries.attempts, or 1 when
    the rule does not retry (or matches only methods it does not retry: see unretried_methods)."""
    r = rule.retries
    if r is None or rule.to is None:
        return 1
    methods = rule.match.methods
    if methods and not r.non_idempotent and set(methods) <= set(NON_IDEMPOTENT_METHODS):
        return 1
    return 1 + r.attempts


@dataclass(frozen=True, slots=True)
class ServiceView:
    """One Service with its effective values. Fields after `authn` are None without exactly one Mesh."""

    service: Service
    listener: str
    """http or tcp: the kind of its inbound listener (see ENFORCEABLE)."""
    versions: tuple[str, ...]
    """Its versions in order (`default` when it declares none)."""
    default_version: str
    """Receives the traffic no Route sends elsewhere."""
    endpoints: dict[str, tuple[Endpoint, ...]]
    """Version -> where the app's instances listen (empty for a version that needs a missing app_port)."""
    app_port_versions: tuple[str, ...]
    """The versions that list no endpoints: each is the app on 127.0.0.1:<app_port> (Service.uses_app_port)."""
    route: Route | None
    traffic: TrafficPolicy | None
    protections: dict[str, Protections]
    """Version -> its effective traffic settings (pool, outlier detection, balancer, health check): the
    version's own (TrafficPolicy `versions`), else the TrafficPolicy's, else the Mesh's defaults; a version's
    field replaces the service-level field as a whole (compiler/policy/protections.py)."""
    authz: AuthorizationPolicy | None
    authn: RequestAuthentication | None
    placement: Placement | None
    reach: Endpoint | None
    """Where callers send its traffic: its sidecar's inbound listener (in pods: its ClusterIP Service)."""
    in_pods: bool | None
    """Its sidecar address is a wildcard: it runs in pods (Kubernetes mode, Mesh `kubernetes`)."""
    version_reach: dict[str, Endpoint] | None
    """Version -> where callers send that version's traffic: `reach` on one host; in pods the version's
    headless Service (`<service>-<version>.<namespace>.svc.<cluster_domain>`, one record per pod), or
    `reach` for a version that lists its own endpoints."""
    headless_services: dict[str, str] | None
    """In pods: version -> the name of its headless Kubernetes Service (`<service>-<version>`); else None."""
    mtls: str | None
    """strict | permissive | disable."""
    identity: str | None
    """Its SPIFFE ID (certificate URI SAN)."""
    inbound_timeout: Duration | None
    """Its inbound routes' timeout: the callee enforces no tighter limit than any caller's route to it."""
    metrics: Metrics | None
    tracing: Tracing | None
    access_log: AccessLog | None

    @property
    def name(self) -> str:
        return self.service.name

    def enforces(self, what: str) -> bool:
        return what in ENFORCEABLE[self.listener]


@dataclass(frozen=True, slots=True)
class GatewayView:
    """One Gateway with its effective values. Fields after `authn` are None without exactly one Mesh."""

    gateway: Gateway
    routes: tuple[tuple[GatewayRoute, tuple[str, ...]], ...]
    """Each route with the names of the listeners it is served on (its own list, else every listener that
    does not redirect), in the gateway's order."""
    https_port: int | None
    """The port of its first `https` listener: where `redirect_to_https` sends clients."""
    authn: RequestAuthentication | None
    """The RequestAuthentication whose `service` is the gateway's name: tokens verified at the edge."""
    address: str | None
    """Where its listeners bind: its own address, else the Mesh's `sidecar.address`."""
    admin_address: str | None
    """Always loopback (the address itself when it is one)."""
    admin_port: int | None
    in_pods: bool | None
    """Its address is a wildcard: it runs in pods (a Kubernetes Deployment)."""
    identity: str | None
    """Its SPIFFE ID, in the certificate it presents to mesh services."""
    mtls: bool | None
    """It holds mesh certificates: the Mesh's mode is not `disable`, or some service it routes to needs mTLS."""
    metrics: Metrics | None
    tracing: Tracing | None
    access_log: AccessLog | None

    @property
    def name(self) -> str:
        return self.gateway.name

    @property
    def destinations(self) -> tuple[str, ...]:
        """The services its routes name, sorted, each once."""
        return tuple(sorted({r.to for r, _ in self.routes}))


@dataclass(frozen=True, slots=True)
class ExternalView:
    """One ExternalService with its effective values; callers see it as a service with one version."""

    service: ExternalService
    route: Route | None
    traffic: TrafficPolicy | None
    endpoints: tuple[Endpoint, ...]
    """Where callers connect: its fixed `endpoints`, else `host:port` resolved by DNS."""
    resolve_dns: bool
    """Envoy resolves `host` (no fixed endpoints were given)."""
    sni: str | None
    """With `tls`: the name sent in the handshake and required in the server's certificate."""
    protections: dict[str, Protections]
    """`default` -> its effective traffic settings (see ServiceView.protections)."""
    versions: tuple[str, ...] = ("default",)
    default_version: str = "default"
    listener: str = "http"

    @property
    def name(self) -> str:
        return self.service.name


class Resolved:
    """A PolicySet with its meaning resolved; build with `resolve()`."""

    def __init__(self, policy) -> None:
        self.policy = policy
        meshes = policy.meshes
        self.mesh: Mesh | None = meshes[0] if len(meshes) == 1 else None
        """The Mesh, when there is exactly one."""
        self.services: dict[str, Service] = {s.name: s for s in policy.services}
        self.routes: dict[str, Route] = {r.service: r for r in policy.routes}
        self.traffic: dict[str, TrafficPolicy] = {t.service: t for t in policy.traffic_policies}
        self.authz: dict[str, AuthorizationPolicy] = {a.service: a for a in policy.authorization_policies}
        self.authn: dict[str, RequestAuthentication] = {a.service: a for a in policy.request_authentications}
        self.all_services: tuple[ServiceView, ...] = tuple(self._view(s) for s in policy.services)
        """One view per Service document, in document order (duplicates included)."""
        self.views: dict[str, ServiceView] = {v.name: v for v in self.all_services}
        """Service name -> its view (the last document of that name)."""
        self.all_gateways: tuple[GatewayView, ...] = tuple(self._gateway(g) for g in policy.gateways)
        """One view per Gateway document, in document order (duplicates included)."""
        self.gateways: dict[str, GatewayView] = {g.name: g for g in self.all_gateways}
        self.all_externals: tuple[ExternalView, ...] = tuple(self._external(e) for e in policy.external_services)
        """One view per ExternalService document, in document order (duplicates included)."""
        self.externals: dict[str, ExternalView] = {e.name: e for e in self.all_externals}

    def __getitem__(self, name: str) -> ServiceView:
        return self.views[name]

    def identity_of(self, name: str) -> str | None:
        """The SPIFFE ID of a Service or a Gateway (what `from: [name]` means); None if neither, or without one
        Mesh."""
        if name in self.views:
            return self.views[name].identity
        if name in self.gateways:
            return self.gateways[name].identity
        return None

    def rules_on(self, callee: str, caller: str) -> list[tuple[int, RouteRule, tuple[str, ...]]]:
        """The rules of `callee`'s Route (a Service's or an ExternalService's) as `caller`'s sidecar (a Service or
        a Gateway) applies them, in order: (index in the Route, rule, the caller versions it is limited to; ()
        for all). A rule whose `match.callers` leaves `caller` out is not there (compiler/policy/caller.py)."""
        route = self.routes.get(callee)
        out = []
        for i, rule in enumerate(route.rules if route is not None else ()):
            versions = versions_for(rule.match.callers, caller)
            if versions is not None:
                out.append((i, rule, versions))
        return out

    def timeout_of(self, rule: RouteRule) -> Duration | None:
        """A forwarding rule's whole-request timeout: its own, else the Mesh's default (None without one Mesh)."""
        if rule.timeout:
            return rule.timeout
        return self.mesh.defaults.timeout if self.mesh is not None else None

    def pool_of(self, name: str, version: str | None = None) -> ConnectionPool | None:
        """The connection pool of a service's (or ExternalService's) clusters, on its callers and on its own
        inbound side: with `version`, that version's (its own, else as below); else its TrafficPolicy's, else
        the Mesh's default (None without one Mesh)."""
        view = self.externals.get(name) or self.views.get(name)
        if version is not None and view is not None and version in view.protections:
            return view.protections[version].connection_pool
        tp = self.traffic.get(name)
        if tp is not None and tp.connection_pool is not None:
            return tp.connection_pool
        return self.mesh.defaults.connection_pool if self.mesh is not None else None

    def _view(self, svc: Service) -> ServiceView:
        name = svc.name
        versions = tuple(svc.version_names)
        route = self.routes.get(name)
        common = dict(
            service=svc,
            listener=listener_kind(svc),
            versions=versions,
            default_version=svc.effective_default_version,
            endpoints={v: tuple(svc.endpoints_of(v)) for v in versions},
            app_port_versions=tuple(v for v in versions if svc.uses_app_port(v)),
            route=route,
            traffic=self.traffic.get(name),
            protections={v: protections(self.mesh, self.traffic.get(name), v) for v in versions},
            authz=self.authz.get(name),
            authn=self.authn.get(name),
        )
        mesh = self.mesh
        if mesh is None:
            return ServiceView(
                **common, placement=None, reach=None, in_pods=None, version_reach=None, headless_services=None,
                mtls=None, identity=None, inbound_timeout=None, metrics=None, tracing=None, access_log=None,
            )
        metrics, tracing, access_log = observability(mesh, svc)
        rules = route.rules if route else []
        placement = place(mesh, svc)
        return ServiceView(
            **common,
            placement=placement,
            reach=reach(mesh, svc),
            in_pods=placement.in_pods,
            version_reach=version_reach(mesh, svc),
            headless_services={v: headless_service(svc, v) for v in versions} if placement.in_pods else None,
            mtls=mtls_mode(mesh, svc),
            identity=spiffe_id(mesh, svc),
            inbound_timeout=max([mesh.defaults.timeout] + [self.timeout_of(r) for r in rules]),
            metrics=metrics,
            tracing=tracing,
            access_log=access_log,
        )

    def _gateway(self, gw: Gateway) -> GatewayView:
        redirecting = {l.name for l in gw.listeners if l.redirect_to_https}
        serving = tuple(l.name for l in gw.listeners if l.name not in redirecting)
        routes = tuple((r, tuple(r.listeners) or serving) for r in gw.routes)
        https = next((l.port for l in gw.listeners if l.protocol == "https"), None)
        common = dict(gateway=gw, routes=routes, https_port=https, authn=self.authn.get(gw.name))
        mesh = self.mesh
        if mesh is None:
            return GatewayView(
                **common, address=None, admin_address=None, admin_port=None, in_pods=None, identity=None, mtls=None,
                metrics=None, tracing=None, access_log=None,
            )
        address = gw.address or mesh.sidecar.address
        admin_address = address if is_loopback(address) else ("::1" if ":" in address else "127.0.0.1")
        destinations = {r.to for r in gw.routes}
        mtls = mesh.mtls.mode != "disable" or any(
            self.views[d].mtls != "disable" for d in destinations if d in self.views
        )
        metrics, tracing, access_log = observability(mesh, gw)
        return GatewayView(
            **common,
            address=address,
            admin_address=admin_address,
            admin_port=gw.admin_port or mesh.sidecar.admin_port,
            in_pods=is_wildcard(address),
            identity=spiffe_id(mesh, gw),
            mtls=mtls,
            metrics=metrics,
            tracing=tracing,
            access_log=access_log,
        )

    def _external(self, ext: ExternalService) -> ExternalView:
        fixed = tuple(ext.endpoints)
        return ExternalView(
            service=ext,
            route=self.routes.get(ext.name),
            traffic=self.traffic.get(ext.name),
            endpoints=fixed or (Endpoint(ext.host, ext.port),),
            resolve_dns=not fixed,
            sni=(ext.tls.sni or ext.host) if ext.tls else None,
            protections={"default": protections(self.mesh, self.traffic.get(ext.name), "default")},
            listener="tcp" if ext.protocol == "tcp" else "http",
        )


def resolve(policy) -> Resolved:
    """The resolved view of a PolicySet (a Resolved is returned as it is)."""
    return policy if isinstance(policy, Resolved) else Resolved(policy)
