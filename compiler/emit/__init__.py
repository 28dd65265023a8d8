"""Stage 4, emit: mesh IR -> Envoy v3 resources as plain data.

For each sidecar: the bootstrap template's parameters (node identity, admin,
and where the dynamic resources come from), its listeners (listeners.yaml),
its clusters (clusters.yaml) and its route configurations (routes-<name>.yaml).
Everything a policy can change is in a file Envoy watches and reloads without
a restart; with `static`, everything goes inline into the bootstrap instead.

IR nodes shared between sidecars are emitted once and the same dict is
reused, which keeps the build linear in the number of services and lets the
renderer serialise each shared resource once.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.emit import clusters as cluster_emit
from compiler.emit import listeners as listener_emit
from compiler.emit import edge, external, observability, ratelimit, tls
from compiler.emit import routes as route_emit
from compiler.emit.bootstrap import BootstrapParams, bootstrap_params
from compiler.ir import Cluster, HttpListener, MeshIR, Sidecar


@dataclass(frozen=True)
class SidecarConfig:
    service: str
    bootstrap: BootstrapParams
    listeners: list[dict]  # empty in static mode
    clusters: list[dict]  # empty in static mode
    route_configs: list[dict]  # empty in static mode
    secrets: list[dict]  # file-based SDS secrets (file names, no material); empty in static mode


@dataclass(frozen=True)
class EnvoyMesh:
    name: str
    static: bool
    sidecars: list[SidecarConfig]


class _Once:
    """Memoise an emitter by the identity of its IR node (IR nodes live as long as the run)."""

    def __init__(self, fn):
        self.fn = fn
        self.cache: dict[int, tuple[object, dict]] = {}

    def __call__(self, node) -> dict:
        hit = self.cache.get(id(node))
        if hit is None:
            hit = (node, self.fn(node))
            self.cache[id(node)] = hit
        return hit[1]


def _as_seen_by(s: Sidecar, c: Cluster, shared: dict, static: bool) -> dict:
    """A shared cluster with what depends on the calling sidecar: its source address and its certificates."""
    if c.direction != "outbound":
        return shared
    if c.external:  # outside the mesh: its own TLS if any, never the mesh's certificate or a loopback source
        return external.as_seen_by(s, c, shared, static)
    extra: dict = {}
    if s.source_address is not None:
        extra["upstream_bind_config"] = {"source_address": {"address": s.source_address, "port_value": 0}}
    if c.upstream_tls is not None and s.tls is not None:  # only a caller with certificates originates mTLS
        extra["transport_socket"] = tls.upstream_socket(s, c.upstream_tls, static)
    if s.gateway is not None:  # Envoy's edge advice: 32 KiB buffers per connection, upstream too
        extra["per_connection_buffer_limit_bytes"] = edge.BUFFER_LIMIT_BYTES
    return {**shared, **extra} if extra else shared


def emit(ir: MeshIR, static: bool = False) -> EnvoyMesh:
    cluster = _Once(cluster_emit.cluster)
    route = _Once(route_emit.route)
    vhost = _Once(lambda v: route_emit.virtual_host(v, route))

    def sidecar(s: Sidecar) -> SidecarConfig:
        clusters = [_as_seen_by(s, c, cluster(c), static) for c in s.clusters]
        secrets = (tls.secrets(s) if s.tls is not None else []) + external.secrets(s) + edge.secrets(s)
        listeners, route_configs = [], []
        for l in s.listeners:
            if isinstance(l, HttpListener):
                limits = ratelimit.virtual_host_rate_limits(l, s.service)
                build_vhost = (lambda v, limits=limits: {**vhost(v), "rate_limits": limits}) if limits else vhost
                rc = route_emit.route_configuration(l.routes, build_vhost)
                route_configs.append(rc)
                listeners.append(listener_emit.http_listener(s, l, rc if static else None))
            else:
                listeners.append(listener_emit.tcp_listener(s, l, static))
        in_pods = s.kubernetes is not None or (s.gateway is not None and s.gateway.kubernetes is not None)
        if s.metrics is not None or in_pods:
            clusters.append(observability.admin_cluster(s))
        if s.metrics is not None:
            listeners.append(observability.metrics_listener(s))
        if in_pods:  # a service's sidecar or a gateway in pods: where the pod's probes ask
            listeners.append(observability.readiness_listener(s))
        # Envoy reads CDS before LDS, so listeners read from listeners.yaml may name any cluster of
        # clusters.yaml (the tracing collector, the rate-limit service, the admin cluster of /metrics).
        params = bootstrap_params(s, listeners if static else [], clusters if static else [], secrets if static else [], static)
        if static:
            return SidecarConfig(s.service, params, [], [], [], [])
        return SidecarConfig(s.service, params, listeners, clusters, route_configs, secrets)

    return EnvoyMesh(ir.name, static, [sidecar(s) for s in ir.sidecars])
