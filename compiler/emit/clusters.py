"""IR Cluster -> Envoy `config.cluster.v3.Cluster`."""

from __future__ import annotations

from compiler.emit import names
from compiler.emit.common import provenance, socket_address, typed
from compiler.ir import Cluster

_HTTP2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        explicit_http_config={"http2_protocol_options": {}},
    )
}


def cluster(c: Cluster) -> dict:
    name = names.cluster(c)
    out = {
        "name": name,
        # Static addresses need no resolver; names (Kubernetes services) are re-resolved by Envoy.
        "type": "STATIC" if all(ep.is_ip for ep in c.endpoints) else "STRICT_DNS",
        "connect_timeout": c.connect_timeout.proto(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(ep.host, ep.port)}} for ep in c.endpoints]}
            ],
        },
        "metadata": provenance(c.source, service=c.service, version=c.version, direction=c.direction),
    }
    if c.retry_budget is not None:
        # Retries may be at most this share of the requests in flight, so they cannot multiply load in an outage.
        out["circuit_breakers"] = {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "retry_budget": {
                        "budget_percent": {"value": float(c.retry_budget.percent)},
                        "min_retry_concurrency": c.retry_budget.min_concurrency,
                    },
                }
            ]
        }
    if c.protocol == "grpc":
        out["typed_extension_protocol_options"] = _HTTP2
    return out
