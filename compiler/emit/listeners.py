"""IR listeners -> Envoy `config.listener.v3.Listener`."""

from __future__ import annotations

from compiler.emit import edge, names, observability, tcp_rbac, tls
from compiler.emit.common import file_source, socket_address, typed
from compiler.emit.http_filters import http_filters
from compiler.emit.route_action import weights
from compiler.ir import CALLER_VERSION_ENV, CALLER_VERSION_KEY, HttpListener, RouteTable, Sidecar, TcpListener


def _listener(s: Sidecar, l: HttpListener | TcpListener, filters: list[dict], static: bool) -> dict:
    """A listener; on an inbound side with mTLS, `strict` takes TLS only and `permissive` both,
    told apart by the TLS inspector."""
    out: dict = {
        "name": names.listener(l),
        "address": socket_address(l.address, l.port),
        # Tells tracing (and stats) which side this is: the caller's span is CLIENT, the callee's SERVER.
        "traffic_direction": "INBOUND" if l.direction == "inbound" else "OUTBOUND",
    }
    if l.tls_mode is None:
        out["filter_chains"] = [{"filters": filters}]
        return out
    secure = {"filter_chain_match": {"transport_protocol": "tls"}, "filters": filters,
              "transport_socket": tls.downstream_socket(s, static)}
    if l.tls_mode == "strict":
        out["filter_chains"] = [{"filters": filters, "transport_socket": tls.downstream_socket(s, static)}]
        return out
    out["listener_filters"] = [
        {
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": typed("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
        }
    ]
    out["filter_chains"] = [secure, {"filters": filters}]
    return out


# What Envoy does with `%2F`/`%5C` in a path (HCM `path_with_escaped_slashes_action`): 400; decode and
# redirect the client to the decoded path; decode and forward; forward unchanged.
ESCAPED_SLASHES = {
    "reject": "REJECT_REQUEST",
    "redirect": "UNESCAPE_AND_REDIRECT",
    "decode": "UNESCAPE_AND_FORWARD",
    "keep": "KEEP_UNCHANGED",
}


def http_listener(s: Sidecar, l: HttpListener, route_config: dict | None) -> dict:
    """`route_config` inlines the routes (static mode); None reads them from routes-<name>.yaml (RDS)."""
    hcm = typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=names.stat_prefix(l),
        codec_type="AUTO",
        # Normalise paths before matching, so `/a/../admin` or `//admin` cannot dodge a rule; Envoy handles
        # escaped slashes first (decoded ones are normalised too), then resolves dot segments, then merges.
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action=ESCAPED_SLASHES[l.paths.escaped_slashes],
    )
    if _changes_server_header(l.routes):
        # By default Envoy writes its own `server` header after the routes ran, undoing their change.
        hcm["server_header_transformation"] = "PASS_THROUGH"
    if l.edge is not None:
        hcm.update(edge.hcm_settings(l))  # a gateway's listener for outside clients
    if route_config is not None:
        hcm["route_config"] = route_config
    else:
        name = names.route_config(l.routes.name)
        hcm["rds"] = {
            "route_config_name": name,
            "config_source": file_source(names.config_path(s, names.routes_file(name)), s.config_dir),
        }
    if s.tracing is not None:
        hcm["tracing"] = observability.tracing(s, s.tracing)
        if l.edge is not None:
            # The gateway's SERVER span is the trace's root and the call into the mesh its CLIENT child, whose
            # id the destination's sidecar shares; without it both would report SERVER halves of one span.
            hcm["tracing"]["spawn_upstream_span"] = True
    logs = observability.access_logs(s, l.direction)
    if logs:
        hcm["access_log"] = logs
    hcm["http_filters"] = http_filters(l)
    filters = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    if l.caller_version:
        filters.insert(0, _caller_version_filter())
    if l.edge is not None:
        return edge.listener(s, l, filters, static=route_config is not None)
    return _listener(s, l, filters, static=route_config is not None)


def _caller_version_filter() -> dict:
    """Keeps the app's version (the sidecar's CALLER_VERSION_ENV, from its pod's `version` label) with each
    connection the app opens, where the routes limited to some caller versions match it (`filter_state`)."""
    return {
        "name": "envoy.filters.network.set_filter_state",
        "typed_config": typed(
            "envoy.extensions.filters.network.set_filter_state.v3.Config",
            on_new_connection=[{
                "object_key": CALLER_VERSION_KEY,
                "factory_key": "envoy.string",
                "format_string": {"text_format_source": {"inline_string": f"%ENVIRONMENT({CALLER_VERSION_ENV})%"}},
            }],
        ),
    }


def _changes_server_header(table: RouteTable) -> bool:
    for vhost in table.virtual_hosts:
        for r in vhost.routes:
            ops = r.response_headers
            if "server" in ops.remove or any(k == "server" for k, _ in ops.add + ops.set):
                return True
    return False


def tcp_listener(s: Sidecar, l: TcpListener, static: bool) -> dict:
    """`tcp_proxy` to the listener's cluster, after the authorization filters (compiler/emit/tcp_rbac.py)."""
    proxy = typed("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", stat_prefix=names.stat_prefix(l))
    if l.split:  # a tcp Route's weights: one version drawn per connection
        proxy["weighted_clusters"] = {
            "clusters": [{"name": names.cluster(t.cluster), "weight": w} for t, w in zip(l.split, weights(l.split))]
        }
    else:
        proxy["cluster"] = names.cluster(l.cluster)
    if tcp_rbac.holds_connect(l):
        # Connect to the app only once the caller's first bytes passed the RBAC filters.
        proxy["upstream_connect_mode"] = "ON_DOWNSTREAM_DATA"
        proxy["max_early_data_bytes"] = tcp_rbac.EARLY_DATA_BYTES
    logs = observability.access_logs(s, l.direction)
    if logs:
        proxy["access_log"] = logs
    filters = tcp_rbac.filters(l) + [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]
    return _listener(s, l, filters, static)
