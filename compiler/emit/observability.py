"""Tracing and access logs of every HTTP connection manager, and the Prometheus listener.

Every sidecar reports the same facts for every request it handles, so a
dashboard or a trace needs nothing from the applications.
"""

from __future__ import annotations

from compiler.emit import names
from compiler.emit.common import socket_address, typed
from compiler.ir import AccessLog, Sidecar, Tracing

ADMIN_CLUSTER = "meshc|admin"


def tracing(s: Sidecar, t: Tracing) -> dict:
    if t.provider == "zipkin":
        provider = {
            "name": "envoy.tracers.zipkin",
            "typed_config": typed(
                "envoy.config.trace.v3.ZipkinConfig",
                collector_cluster=names.cluster(t.collector),
                collector_hostname=t.collector.service,  # the cluster name is no valid Host
                collector_endpoint="/api/v2/spans",
                collector_endpoint_version="HTTP_JSON",
            ),
        }
    else:
        provider = {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": typed(
                "envoy.config.trace.v3.OpenTelemetryConfig",
                grpc_service={"envoy_grpc": {"cluster_name": names.cluster(t.collector)}, "timeout": "0.250s"},
                service_name=s.service,
            ),
        }
    out: dict = {"random_sampling": {"value": float(t.sampling)}, "provider": provider}
    if t.tags:
        out["custom_tags"] = [{"tag": k, "literal": {"value": v}} for k, v in t.tags]
    return out


def _fields(s: Sidecar, direction: str) -> dict:
    """The documented default field set (README: access logs)."""
    return {
        "start_time": "%START_TIME%",
        "direction": direction,
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "protocol": "%PROTOCOL%",
        "status": "%RESPONSE_CODE%",
        "response_flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "upstream_host": "%UPSTREAM_HOST%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "trace_id": "%TRACE_ID%",
        "source": s.service if direction == "outbound" else "%DOWNSTREAM_PEER_URI_SAN%",
        "source_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "destination": "%UPSTREAM_CLUSTER%" if direction in ("outbound", "edge") else s.service,
    }


def _filter(a: AccessLog) -> dict | None:
    if a.only == "errors":
        return {
            "or_filter": {
                "filters": [
                    {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 500, "runtime_key": "meshc.log.status"}}}},
                    {"response_flag_filter": {}},
                ]
            }
        }
    if a.only == "slow":
        return {"duration_filter": {"comparison": {"op": "GE", "value": {"default_value": a.slow_over.ms, "runtime_key": "meshc.log.slow_ms"}}}}
    return None


def access_logs(s: Sidecar, direction: str) -> list[dict]:
    a = s.access_log
    if a is None:
        return []
    fields = _fields(s, direction)
    if a.format == "json":
        log_format = {"json_format": fields}
    else:
        line = " ".join(f"{k}={v}" for k, v in fields.items())
        log_format = {"text_format_source": {"inline_string": line + "\n"}}
    if a.to == "file":
        logger = {"name": "envoy.access_loggers.file", "typed_config": typed(
            "envoy.extensions.access_loggers.file.v3.FileAccessLog", path=a.path, log_format=log_format)}
    else:
        logger = {"name": "envoy.access_loggers.stdout", "typed_config": typed(
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", log_format=log_format)}
    f = _filter(a)
    if f is not None:
        logger["filter"] = f
    return [logger]


def _admin_window(name: str, vhost: str, address: str, port: int, path: str) -> dict:
    """A listener that passes exactly one path (exact match) to the admin interface; anything else is 404."""
    routes = {
        "name": name,
        "virtual_hosts": [
            {
                "name": vhost,
                "domains": ["*"],
                "routes": [{"match": {"path": path}, "route": {"cluster": ADMIN_CLUSTER}}],
            }
        ],
    }
    hcm = typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=name,
        route_config=routes,
        http_filters=[{"name": "envoy.filters.http.router", "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")}],
    )
    return {
        "name": name,
        "address": socket_address(address, port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def metrics_listener(s: Sidecar) -> dict:
    m = s.metrics
    return _admin_window("metrics", "prometheus", m.address, m.port, "/stats/prometheus")


def readiness_listener(s: Sidecar) -> dict:
    """Kubernetes mode: the pod's probes ask `GET /ready` here, on every interface of the pod. The admin
    interface answers 200 `LIVE` once Envoy has loaded its configuration, 503 while it starts and after
    `POST /healthcheck/fail` (`DRAINING`). No traffic direction: `/drain_listeners?inboundonly` keeps it.
    A gateway in pods has one too (its KubernetesGateway holds the same two fields)."""
    k = s.kubernetes if s.kubernetes is not None else s.gateway.kubernetes
    return _admin_window("readiness", "ready", k.readiness_address, k.probe_port, "/ready")


def admin_cluster(s: Sidecar) -> dict:
    """Only the metrics and readiness listeners use it; the admin interface itself stays on loopback."""
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(s.admin_address, s.admin_port)}}]}],
        },
    }
