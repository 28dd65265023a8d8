"""TrafficPolicy (policy) -> cluster protection, hash keys and rate limits (IR)."""

from __future__ import annotations

from compiler.ir import ConnectionLife, HashKey, HealthCheck, Outlier, Protection, TokenBucket
from compiler.policy import Mesh, TrafficPolicy
from compiler.policy.protections import Protections, protections
from compiler.policy.traffic import ConnectionPool


def connection_life(pool: ConnectionPool, protocol: str) -> ConnectionLife | None:
    """The pool's connection settings for a cluster of `protocol`: a tcp cluster keeps only keepalive (the
    Mesh's defaults may hold HTTP settings; a TrafficPolicy of a tcp service cannot: E234), a grpc cluster
    speaks HTTP/2 whatever a Mesh default says (a TrafficPolicy cannot ask for http1 there: E238)."""
    ka = pool.tcp_keepalive
    keepalive = (
        (ka.probes, ka.time.ms // 1000 if ka.time else None, ka.interval.ms // 1000 if ka.interval else None)
        if ka is not None
        else None
    )
    if protocol == "tcp":
        life = ConnectionLife(keepalive=keepalive)
    else:
        version = pool.upstream_protocol
        if protocol == "grpc" and version == "http1":
            version = None
        life = ConnectionLife(pool.max_requests_per_connection, pool.idle_timeout, keepalive, version)
    return life if life != ConnectionLife() else None


def protection(
    mesh: Mesh,
    tp: TrafficPolicy | None,
    instances: bool = True,
    protocol: str = "http",
    settings: Protections | None = None,
) -> Protection:
    """`instances`: the cluster lists the service's instances (its inbound side). Health checks go only
    there: a caller's cluster reaches the service's sidecar, whose answer would stand for a random instance.
    `protocol`: the cluster's (which connection settings apply). `settings`: one version's effective settings
    (ServiceView.protections), else the service's as a whole."""
    s = settings or protections(mesh, tp, "default")
    pool, od = s.connection_pool, s.outlier_detection
    outlier = None
    if od.consecutive_5xx or od.consecutive_gateway_errors or od.success_rate:
        outlier = Outlier(
            consecutive_5xx=od.consecutive_5xx,
            consecutive_gateway_errors=od.consecutive_gateway_errors,
            success_rate=(od.success_rate.min_hosts, od.success_rate.request_volume, od.success_rate.stdev_factor)
            if od.success_rate
            else None,
            interval=od.interval,
            base_ejection_time=od.base_ejection_time,
            max_ejection_percent=od.max_ejection_percent,
        )
    hc = s.health_check if instances else None
    return Protection(
        max_connections=pool.max_connections,
        max_pending_requests=pool.max_pending_requests,
        max_requests=pool.max_requests,
        max_retries=pool.max_retries,
        outlier=outlier,
        lb_policy=s.lb_policy,
        health_check=HealthCheck(hc.path, hc.interval, hc.timeout, hc.healthy_threshold, hc.unhealthy_threshold)
        if hc
        else None,
        connection=connection_life(pool, protocol),
    )


def hash_key(tp: TrafficPolicy | None) -> HashKey | None:
    h = tp.load_balancer.hash_on if tp else None
    if h is None:
        return None
    if h.header:
        return HashKey("header", h.header)
    if h.cookie:
        return HashKey("cookie", h.cookie, h.cookie_ttl)
    return HashKey("source_ip")


def bucket(limit) -> TokenBucket | None:
    return TokenBucket(limit.requests, limit.per) if limit is not None else None
