"""The way out of the mesh in Envoy terms: TLS originated to external hosts, and the forward proxy.

An external cluster (`Cluster.external`) is seen by each caller without
the mesh's mTLS and without the caller's source address (that address is
loopback on one host, and means nothing to a host outside). With
`external_tls` the caller's sidecar originates TLS itself: the SNI, the
server's chain checked against the CA bundle (a file SDS secret per bundle,
`sds-<secret>.yaml`, naming the file and watching its folder: a bundle
rotated on disk applies without a restart; no material in the output), the
SNI required among the certificate's DNS names, and the minimum version.

`egress.undeclared: allow` uses Envoy's dynamic forward proxy: the HTTP
filter resolves the request's Host through a DNS cache and the cluster of
type `envoy.clusters.dynamic_forward_proxy` connects to the answer.
"""

from __future__ import annotations

import posixpath

from compiler.emit import names
from compiler.emit.common import file_source, typed
from compiler.ir import Cluster, HttpListener, OriginateTls, Sidecar

_VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}

FORWARD_PROXY = "envoy.filters.http.dynamic_forward_proxy"

_DNS_CACHE = {
    "name": names.EGRESS_DNS_CACHE,
    # IPv4 first (AAAA only when there is no A record), like the mesh's own DNS clusters.
    "dns_lookup_family": "V4_PREFERRED",
}


def secret(service: str, t: OriginateTls) -> dict:
    """The SDS secret of an external host's CA bundle: the file and the folder Envoy watches."""
    return {
        "name": names.external_ca_secret(service),
        "validation_context": {
            "trusted_ca": {"filename": t.ca_file},
            "watched_directory": {"path": posixpath.dirname(t.ca_file) or "/"},
        },
    }


def secrets(s: Sidecar) -> list[dict]:
    """The CA bundle secrets of the external hosts this sidecar originates TLS to (one per host, sorted)."""
    return [secret(c.service, c.external_tls) for c in s.clusters if c.external_tls is not None]


def _validation_ref(s: Sidecar, name: str, static: bool) -> dict:
    if static:
        return {"name": name}  # static_resources.secrets
    return {"name": name, "sds_config": file_source(names.config_path(s, names.sds_file(name)), s.config_dir)}


def upstream_socket(s: Sidecar, c: Cluster, static: bool) -> dict:
    """Originate TLS to an external host: SNI, chain verified against its CA bundle, DNS SAN = SNI."""
    t = c.external_tls
    common: dict = {
        "tls_params": {"tls_minimum_protocol_version": _VERSIONS[t.min_version], "tls_maximum_protocol_version": "TLSv1_3"},
        "combined_validation_context": {
            "default_validation_context": {
                # A wildcard certificate (`*.payments.example`) covers the name, as in any TLS client.
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": t.sni}}]
            },
            "validation_context_sds_secret_config": _validation_ref(s, names.external_ca_secret(c.service), static),
        },
    }
    if t.alpn:
        common["alpn_protocols"] = list(t.alpn)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", common_tls_context=common, sni=t.sni
        ),
    }


def as_seen_by(s: Sidecar, c: Cluster, shared: dict, static: bool) -> dict:
    """An external cluster as one caller sees it: only its own TLS (never the mesh's certificate), and no
    source address."""
    if c.external_tls is None:
        return shared
    return {**shared, "transport_socket": upstream_socket(s, c, static)}


def forward_proxy_discovery() -> dict:
    """The cluster type of the forward proxy: hosts are whatever the filter's DNS cache resolved."""
    return {
        "cluster_type": {
            "name": "envoy.clusters.dynamic_forward_proxy",
            "typed_config": typed(
                "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig", dns_cache_config=_DNS_CACHE
            ),
        }
    }


def forward_proxy_filter(listener: HttpListener) -> dict | None:
    """The dynamic forward proxy filter, on a listener with a route to the forward-proxy cluster: it
    resolves the request's Host (port 80 if none) before the router forwards."""
    for vhost in listener.routes.virtual_hosts:
        for r in vhost.routes:
            if any(t.cluster.forward_proxy for t in r.targets):
                return typed("envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig", dns_cache_config=_DNS_CACHE)
    return None
