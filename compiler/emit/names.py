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
    if isinstance(l, TcpListener) and l.direction == "outbound":
        return f"outbound|tcp|{l.port}"
    return l.direction


def stat_prefix(l: HttpListener | TcpListener) -> str:
    if isinstance(l, TcpListener):
        return f"{l.direction}_tcp_{l.port}"
    return f"{l.direction}_http"


def route_config(direction: str) -> str:
    return direction


def node_id(s: Sidecar) -> str:
    return f"sidecar~{s.service}.{s.mesh}"


def config_path(s: Sidecar, file: str) -> str:
    return f"{s.config_dir.rstrip('/')}/{file}"
