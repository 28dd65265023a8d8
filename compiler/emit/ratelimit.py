"""Rate limiting: local token buckets (`envoy.filters.http.local_ratelimit`) and a global service (`ratelimit`)."""

from __future__ import annotations

from compiler.emit import names
from compiler.emit.common import typed
from compiler.ir import HttpListener, HttpRoute, TokenBucket

LOCAL = "envoy.filters.http.local_ratelimit"
GLOBAL = "envoy.filters.http.ratelimit"
_LOCAL_TYPE = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
_ALWAYS = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "meshc.local_rate_limit"}


def _local(stat_prefix: str, bucket: TokenBucket | None) -> dict:
    out = typed(_LOCAL_TYPE, stat_prefix=stat_prefix)
    if bucket is not None:
        out.update(
            token_bucket={"max_tokens": bucket.requests, "tokens_per_fill": bucket.requests, "fill_interval": bucket.per.proto()},
            filter_enabled=_ALWAYS,
            filter_enforced=_ALWAYS,
            response_headers_to_add=[{"header": {"key": "x-local-rate-limit", "value": "true"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            enable_x_ratelimit_headers="DRAFT_VERSION_03",
        )
    return out


def local_listener_config(l: HttpListener) -> dict | None:
    """The listener's own bucket (a service's inbound limit); without one the filter acts only per route."""
    return _local(f"{l.direction}_rate_limit", l.rate_limit) if l.rate_limit else None


def local_base_config() -> dict:
    return _local("route_rate_limit", None)


def local_route_config(r: HttpRoute) -> dict | None:
    return _local("route_rate_limit", r.rate_limit) if r.rate_limit else None


def global_listener_config(l: HttpListener) -> dict | None:
    g = l.global_rate_limit
    if g is None:
        return None
    return typed(
        "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        domain=g.domain,
        failure_mode_deny=g.failure_mode_deny,
        timeout=g.timeout.proto(),
        rate_limit_service={
            "grpc_service": {"envoy_grpc": {"cluster_name": names.cluster(g.cluster)}},
            "transport_api_version": "V3",
        },
    )


_DESCRIPTOR_ACTIONS = {
    "remote_address": {"remote_address": {}},
    "path": {"request_headers": {"header_name": ":path", "descriptor_key": "path"}},
    "method": {"request_headers": {"header_name": ":method", "descriptor_key": "method"}},
}


def virtual_host_rate_limits(l: HttpListener, service: str) -> list[dict]:
    """The descriptors each request sends to the rate-limit service."""
    g = l.global_rate_limit
    if g is None:
        return []
    actions = [
        {"generic_key": {"descriptor_key": "destination", "descriptor_value": service}}
        if d == "destination"
        else _DESCRIPTOR_ACTIONS[d]
        for d in g.descriptors
    ]
    return [{"actions": actions}]
