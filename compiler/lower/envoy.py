"""What every Envoy of the mesh is lowered with, a service's sidecar or a gateway alike: the folders it
reads its files and certificates from, its observability, the clusters its routes mirror to, and its
cluster list (one per name)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from compiler.ir import AccessLog, Cluster, Metrics, SidecarTls, Tracing, VirtualHost

if TYPE_CHECKING:
    from compiler.lower import LowerOptions, _Shared


def folders(name: str, shared: "_Shared", options: "LowerOptions", identity, mtls: bool) -> tuple[str, SidecarTls | None]:
    """The folder the Envoy named `name` reads its files from, and its mesh certificates (when `mtls`):
    `<config_root>/<name>` and `<certs_root>/<name>` when set (LowerOptions), else the Mesh's folders."""
    mesh = shared.mesh
    config_dir = f"{options.config_root.rstrip('/')}/{name}" if options.config_root else mesh.config_dir
    tls = None
    if mtls:
        certs_dir = f"{options.certs_root.rstrip('/')}/{name}" if options.certs_root else mesh.mtls.certs_dir
        tls = SidecarTls(certs_dir, identity, mesh.trust_domain)
    return config_dir, tls


def observability(view, address: str, shared: "_Shared", clusters: list[Cluster]):
    """(metrics on `address`, tracing, access log) of a ServiceView or GatewayView; the tracing collector's
    cluster is added to `clusters`."""
    m, t, a = view.metrics, view.tracing, view.access_log
    metrics = Metrics(address, m.port, tuple(m.keep_prefixes)) if m else None
    tracing = None
    if t is not None:
        collector = shared.outbound_clusters(t.collector)[shared.view[t.collector].default_version]
        if all(c is not collector for c in clusters):
            clusters.append(collector)
        tracing = Tracing(t.provider, collector, t.sampling, tuple(sorted(t.tags.items())))
    access_log = AccessLog(a.to, a.path, a.format, a.only, a.slow_over) if a else None
    return metrics, tracing, access_log


def mirror_clusters(vhosts: Iterable[VirtualHost], clusters: list[Cluster]) -> None:
    """Add to `clusters` the targets the routes of `vhosts` mirror to (services the Envoy's app or
    gateway routes may not reach otherwise)."""
    known = {id(c) for c in clusters}
    for vhost in vhosts:
        for route in vhost.routes:
            for mirror in route.mirrors:
                if id(mirror.cluster) not in known:
                    known.add(id(mirror.cluster))
                    clusters.append(mirror.cluster)


def unique(clusters: list[Cluster]) -> tuple[Cluster, ...]:
    """An Envoy's clusters, one per name, sorted: Envoy refuses a second cluster of one name.

    One service can be reached for several reasons (called by the app, the global rate-limit service,
    the tracing collector, a mirror target): it is still one cluster."""
    by_id: dict[str, Cluster] = {}
    for c in clusters:
        by_id.setdefault(c.id, c)
    return tuple(sorted(by_id.values(), key=lambda c: c.id))
