"""Edge listeners (a gateway's, facing clients outside the mesh): TLS by SNI, HCM hardening, limits.

Settings follow Envoy's "Configuring Envoy as an edge proxy": the client is
the connection's peer (`use_remote_address`, plus `trusted_hops` proxies in
front), request ids are made here, headers with underscores are refused,
the upstream's `server` header is replaced, headers, streams and windows are
bounded, and each listener caps its connections (runtime
`envoy.resource_limits.listener.<name>.connection_limit`, set in the
bootstrap: Envoy's per-listener limit, whatever filter chain a connection
takes). Certificates are read from the files the policy names through file
SDS, one secret per certificate, with the certificate's folder watched: a
renewed certificate moved into place is served to new connections without a
restart, and no key material is ever part of the output.
"""

from __future__ import annotations

import posixpath

from compiler.emit import names
from compiler.emit.common import file_source, socket_address, typed
from compiler.ir import HttpListener, Sidecar
from compiler.ir_edge import EdgeCertificate, EdgeTls

BUFFER_FILTER = "envoy.filters.http.buffer"
BUFFER_LIMIT_BYTES = 32_768
"""Per connection, downstream and upstream (Envoy's edge advice: 32 KiB instead of 1 MiB)."""
SERVER_NAME = "gateway"
"""The `server` header every answer from the edge carries; the upstream's own never leaks out."""
TRACE_HEADERS = (
    "b3",
    "traceparent",
    "tracestate",
    "x-b3-flags",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-spanid",
    "x-b3-traceid",
    "x-ot-span-context",
)
"""A client's trace context, dropped before Envoy reads it: every trace starts at the gateway (its span is
the root), and an outside client cannot choose trace ids or force sampling inside the mesh."""
_TLS_VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}
_H2 = {"max_concurrent_streams": 100, "initial_stream_window_size": 65_536, "initial_connection_window_size": 1_048_576}


def hcm_settings(l: HttpListener) -> dict:
    """What the edge adds to (or changes in) the HTTP connection manager of a listener."""
    e, lim = l.edge, l.edge.limits
    out: dict = {
        # The client is the peer address (or the address `trusted_hops` proxies in front saw); Envoy
        # appends it to X-Forwarded-For, and drops x-envoy-* headers the client sent.
        "use_remote_address": True,
        "xff_num_trusted_hops": e.trusted_hops,
        # A fresh x-request-id for every request, whatever the client sent.
        "generate_request_id": True,
        "preserve_external_request_id": False,
        "server_header_transformation": "OVERWRITE",
        "server_name": SERVER_NAME,
        # `Host: shop.example.com:8443` is matched as `shop.example.com`.
        "strip_any_host_port": True,
        "early_header_mutation_extensions": [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": typed(
                    "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                    mutations=[{"remove": h} for h in TRACE_HEADERS],
                ),
            }
        ],
        "http2_protocol_options": dict(_H2),
    }
    if lim is not None:
        common = {
            "idle_timeout": lim.idle_timeout.proto(),
            "max_headers_count": lim.max_headers,
            # Upstreams that read `_` as `-` cannot be fooled into seeing a header twice.
            "headers_with_underscores_action": "REJECT_REQUEST",
        }
        out.update(
            max_request_headers_kb=lim.max_request_headers_kb,
            common_http_protocol_options=common,
            request_headers_timeout=lim.request_headers_timeout.proto(),
            stream_idle_timeout=lim.stream_idle_timeout.proto(),
        )
        if lim.request_timeout is not None:
            out["request_timeout"] = lim.request_timeout.proto()
    return out


def _ref(s: Sidecar, name: str, static: bool) -> dict:
    if static:
        return {"name": name}  # static_resources.secrets
    return {"name": name, "sds_config": file_source(names.config_path(s, names.sds_file(name)), s.config_dir)}


def _socket(s: Sidecar, tls: EdgeTls, cert: EdgeCertificate, listener: str, static: bool) -> dict:
    common: dict = {
        "tls_params": {
            "tls_minimum_protocol_version": _TLS_VERSIONS[tls.min_version],
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "tls_certificate_sds_secret_configs": [_ref(s, cert.secret, static)],
        "alpn_protocols": ["h2", "http/1.1"],
    }
    out = typed("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", common_tls_context=common)
    if tls.client_ca is not None:
        common["validation_context_sds_secret_config"] = _ref(s, names.edge_client_ca(listener), static)
        out["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": out}


def listener(s: Sidecar, l: HttpListener, filters: list[dict], static: bool) -> dict:
    """An edge listener: plaintext, or one filter chain per certificate chosen by SNI (the TLS inspector
    reads it) and the first certificate for clients whose SNI names none (or who send none)."""
    out: dict = {
        "name": names.listener(l),
        "address": socket_address(l.address, l.port),
        "traffic_direction": "INBOUND",
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
    }
    tls = l.edge.tls
    if tls is None:
        out["filter_chains"] = [{"filters": filters}]
        return out
    out["listener_filters"] = [
        {
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": typed("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
        }
    ]
    out["filter_chains"] = [
        {
            "name": c.secret,
            "filter_chain_match": {"server_names": list(c.hosts)},
            "filters": filters,
            "transport_socket": _socket(s, tls, c, l.edge.listener, static),
        }
        for c in tls.certificates
    ]
    first = tls.certificates[0]
    out["default_filter_chain"] = {
        "name": f"{first.secret}-default",
        "filters": filters,
        "transport_socket": _socket(s, tls, first, l.edge.listener, static),
    }
    return out


def secrets(s: Sidecar) -> list[dict]:
    """The SDS secrets of a gateway's edge listeners (file names only), sorted by name."""
    out = []
    for l in s.listeners:
        tls = l.edge.tls if isinstance(l, HttpListener) and l.edge is not None else None
        if tls is None:
            continue
        for c in tls.certificates:
            out.append(
                {
                    "name": c.secret,
                    "tls_certificate": {
                        "certificate_chain": {"filename": c.cert},
                        "private_key": {"filename": c.key},
                        "watched_directory": {"path": posixpath.dirname(c.cert) or "/"},
                    },
                }
            )
        if tls.client_ca is not None:
            out.append(
                {
                    "name": names.edge_client_ca(l.edge.listener),
                    "validation_context": {
                        "trusted_ca": {"filename": tls.client_ca},
                        "watched_directory": {"path": posixpath.dirname(tls.client_ca) or "/"},
                    },
                }
            )
    return sorted(out, key=lambda x: x["name"])


def runtime(s: Sidecar) -> dict:
    """Bootstrap runtime (static layer): each edge listener's connection limit, by listener name."""
    return {
        f"envoy.resource_limits.listener.{names.listener(l)}.connection_limit": l.edge.limits.max_connections
        for l in s.listeners
        if isinstance(l, HttpListener) and l.edge is not None and l.edge.limits is not None
    }


def buffer_config(l: HttpListener) -> dict | None:
    """`envoy.filters.http.buffer`: the whole body is held before it is forwarded; larger than the limit: 413."""
    lim = l.edge.limits if l.edge is not None else None
    if lim is None or lim.max_request_bytes is None or l.edge.https_redirect_port is not None:
        return None  # no limit, or a redirect listener (it reads no body)
    return typed("envoy.extensions.filters.http.buffer.v3.Buffer", max_request_bytes=lim.max_request_bytes)
