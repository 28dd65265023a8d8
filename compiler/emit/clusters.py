"""IR Cluster -> Envoy `config.cluster.v3.Cluster`."""

from __future__ import annotations

from compiler.emit import external, names
from compiler.emit.common import provenance, socket_address, typed
from compiler.ir import Cluster, ConnectionLife, Dns, HealthCheck, Outlier

_LB = {
    "round_robin": "ROUND_ROBIN",
    "least_request": "LEAST_REQUEST",
    "random": "RANDOM",
    "ring_hash": "RING_HASH",
    "maglev": "MAGLEV",
}


def _outlier(o: Outlier) -> dict:
    out = {
        "consecutive_5xx": o.consecutive_5xx,
        "consecutive_gateway_failure": o.consecutive_gateway_errors,
        "enforcing_consecutive_5xx": 100 if o.consecutive_5xx else 0,
        "enforcing_consecutive_gateway_failure": 100 if o.consecutive_gateway_errors else 0,
        "enforcing_success_rate": 100 if o.success_rate else 0,
        "interval": o.interval.proto(),
        "base_ejection_time": o.base_ejection_time.proto(),
        "max_ejection_percent": o.max_ejection_percent,
        # Without it Envoy ejects nobody while one host is more than max_ejection_percent of the cluster
        # (3 pods at 10%): the failing pod would keep its share of the traffic.
        "always_eject_one_host": True,
    }
    if o.success_rate is not None:
        min_hosts, volume, stdev = o.success_rate
        out.update(success_rate_minimum_hosts=min_hosts, success_rate_request_volume=volume, success_rate_stdev_factor=stdev)
    return out


def _health_check(h: HealthCheck) -> dict:
    return {
        "timeout": h.timeout.proto(),
        "interval": h.interval.proto(),
        # Envoy's default for a cluster without traffic yet is one check a minute: check at the set pace from the start.
        "no_traffic_interval": h.interval.proto(),
        "healthy_threshold": h.healthy_threshold,
        "unhealthy_threshold": h.unhealthy_threshold,
        "http_health_check": {"path": h.path},
    }

_LOOKUP_FAMILY = {"v4_preferred": "V4_PREFERRED", "v4_only": "V4_ONLY", "v6_only": "V6_ONLY", "all": "ALL"}


def _dns(d: Dns) -> dict:
    """A strict DNS cluster with resolver settings: every address a name resolves to is one host (Envoy's
    `envoy.cluster.dns` extension, which replaces `type: STRICT_DNS` with the Cluster's own `dns_*` fields,
    deprecated since Envoy 1.33)."""
    config = typed(
        "envoy.extensions.clusters.dns.v3.DnsCluster",
        dns_refresh_rate=d.refresh.proto(),
        respect_dns_ttl=d.respect_ttl,
        dns_lookup_family=_LOOKUP_FAMILY[d.lookup_family],
    )
    if d.logical:
        # Logical DNS: the name is one host, whatever addresses the latest answer holds.
        config["all_addresses_in_single_endpoint"] = True
    return {"cluster_type": {"name": "envoy.cluster.dns", "typed_config": config}}


def _discovery(c: Cluster) -> dict:
    """How Envoy finds the cluster's hosts: the request's Host (forward proxy), DNS, or fixed addresses."""
    if c.forward_proxy:
        return external.forward_proxy_discovery()
    # Static addresses need no resolver; names (Kubernetes services, external hosts) are re-resolved by Envoy.
    dns = not all(ep.is_ip for ep in c.endpoints)
    if dns and c.dns is not None:
        return _dns(c.dns)
    return {"type": "STRICT_DNS" if dns else "STATIC"}


_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_VERSION = {
    "http1": {"explicit_http_config": {"http_protocol_options": {}}},
    "http2": {"explicit_http_config": {"http2_protocol_options": {}}},
    # The request's own version: HTTP/2 to the upstream for a request that came in over HTTP/2.
    "client": {"use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}},
}


def _http_options(c: Cluster, life: ConnectionLife | None) -> dict | None:
    """`typed_extension_protocol_options`: the HTTP version to the upstream and how long a connection lives."""
    if c.protocol == "tcp":
        return None
    version = life.http_version if life is not None else None
    version = version or ("http2" if c.protocol == "grpc" else None)
    common: dict = {}
    if life is not None and life.idle_timeout is not None:
        common["idle_timeout"] = life.idle_timeout.proto()
    if life is not None and life.max_requests is not None:
        common["max_requests_per_connection"] = life.max_requests
    if version is None and not common:
        return None  # Envoy's defaults: HTTP/1.1, idle connections closed after an hour
    options = typed(_HTTP_OPTIONS, **_VERSION[version or "http1"])
    if common:
        options["common_http_protocol_options"] = common
    if c.forward_proxy:
        # Envoy refuses a forward-proxy cluster with these options unless they keep what it sets itself without
        # them: SNI and certificate check by the request's host (both unused in plaintext).
        options["upstream_http_protocol_options"] = {"auto_sni": True, "auto_san_validation": True}
    return {_HTTP_OPTIONS: options}


def _keepalive(keepalive: tuple[int | None, int | None, int | None]) -> dict:
    probes, time, interval = keepalive
    out = {"keepalive_probes": probes, "keepalive_time": time, "keepalive_interval": interval}
    return {"tcp_keepalive": {k: v for k, v in out.items() if v is not None}}


def cluster(c: Cluster) -> dict:
    name = names.cluster(c)
    out = {"name": name, **_discovery(c), "connect_timeout": c.connect_timeout.proto()}
    if not c.forward_proxy:  # the forward proxy's hosts come from its DNS cache
        out["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(ep.host, ep.port)}} for ep in c.endpoints]}
            ],
        }
    out["metadata"] = provenance(c.source, service=c.service, version=c.version, direction=c.direction)
    thresholds: dict = {"priority": "DEFAULT"}
    if c.protection is not None:
        p = c.protection
        thresholds.update(
            max_connections=p.max_connections,
            max_pending_requests=p.max_pending_requests,
            max_requests=p.max_requests,
            max_retries=p.max_retries,
        )
        # The forward proxy picks the host the request names: Envoy requires its own balancer there.
        out["lb_policy"] = "CLUSTER_PROVIDED" if c.forward_proxy else _LB[p.lb_policy]
        if p.outlier is not None:
            out["outlier_detection"] = _outlier(p.outlier)
        if p.health_check is not None:
            out["health_checks"] = [_health_check(p.health_check)]
    if c.retry_budget is not None:
        # Retries may be at most this share of the requests in flight, so they cannot multiply load in an outage.
        thresholds["retry_budget"] = {
            "budget_percent": {"value": float(c.retry_budget.percent)},
            "min_retry_concurrency": c.retry_budget.min_concurrency,
        }
    if len(thresholds) > 1:
        out["circuit_breakers"] = {"thresholds": [thresholds]}
    life = c.protection.connection if c.protection is not None else None
    options = _http_options(c, life)
    if options is not None:
        out["typed_extension_protocol_options"] = options
    if life is not None and life.keepalive is not None:
        out["upstream_connection_options"] = _keepalive(life.keepalive)
    return out
