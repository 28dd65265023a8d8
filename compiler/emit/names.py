"""Every Envoy name meshc makes, in one place.

Names are built from DNS labels (services, versions), so they are short and
need no escaping; the `|` separator keeps dots out of names, so Envoy's stats
tag extraction and Prometheus labels stay unambiguous.
"""

from __future__ import annotations

from compiler.ir import Cluster, HttpListener, Sidecar, TcpListener

CLUSTERS_FILE = "clusters.yaml"
LISTENERS_FILE = "listeners.yaml"
BOOTSTRAP_FILE = "bootstrap.yaml"


def sds_file(secret: str) -> str:
    """One file per secret (file-based SDS, like RDS, takes one resource per file)."""
    return f"sds-{secret}.yaml"


def routes_file(route_config_name: str) -> str:
    """One file per route configuration: Envoy's file-based RDS accepts exactly one resource per file."""
    return f"routes-{route_config_name}.yaml"


def external_ca_secret(service: str) -> str:
    """The SDS secret of an ExternalService's CA bundle (`sds-external-ca-payments.yaml`)."""
    return f"external-ca-{service}"


EGRESS_DNS_CACHE = "undeclared_hosts"
"""The dynamic forward proxy's DNS cache (Mesh `egress.undeclared: allow`): its filter and cluster share it."""


def cluster(c: Cluster) -> str:
    """`outbound|reviews|v1`, `inbound|reviews|v1`."""
    return f"{c.direction}|{c.service}|{c.version}"


def listener(l: HttpListener | TcpListener) -> str:
    """`inbound`, `outbound`, `outbound|tcp|9080`; a gateway's: `edge|<gateway listener>`."""
    if isinstance(l, TcpListener) and l.direction == "outbound":
        return f"outbound|tcp|{l.port}"
    if isinstance(l, HttpListener) and l.edge is not None:
        return f"edge|{l.edge.listener}"
    return l.direction


def stat_prefix(l: HttpListener | TcpListener) -> str:
    """`http.<prefix>.` stats: `inbound_http`, `outbound_http`, `inbound_tcp_9080`; a gateway's `edge_<listener>`."""
    if isinstance(l, TcpListener):
        return f"{l.direction}_tcp_{l.port}"
    if l.edge is not None:
        return f"edge_{l.edge.listener}"
    return f"{l.direction}_http"


def edge_client_ca(listener: str) -> str:
    """The SDS secret of the CA bundle a gateway listener verifies client certificates with."""
    return f"edge-{listener}-client-ca"


def route_config(table: str) -> str:
    """A route table's name: its direction, or `edge-<gateway listener>`."""
    return table


def node_id(s: Sidecar) -> str:
    return f"{'gateway' if s.gateway is not None else 'sidecar'}~{s.service}.{s.mesh}"


def config_path(s: Sidecar, file: str) -> str:
    return f"{s.config_dir.rstrip('/')}/{file}"
