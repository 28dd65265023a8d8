"""The mesh IR's clusters: where a sidecar sends traffic and how it protects it (pools, outlier detection,
health checks, balancing, TLS, DNS). Re-exported by compiler/ir.py, which documents the IR as a whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compiler.diagnostics import Source
from compiler.policy.types import Duration, Endpoint

Direction = Literal["inbound", "outbound", "edge"]
"""`edge`: a gateway listener facing clients outside the mesh (HttpListener.edge); clusters are never `edge`."""
Protocol = Literal["http", "grpc", "tcp"]


@dataclass(frozen=True)
class RetryBudget:
    percent: int
    min_concurrency: int


@dataclass(frozen=True)
class Outlier:
    consecutive_5xx: int
    consecutive_gateway_errors: int
    success_rate: tuple[int, int, int] | None  # (min_hosts, request_volume, stdev_factor)
    interval: Duration
    base_ejection_time: Duration
    max_ejection_percent: int


@dataclass(frozen=True)
class HealthCheck:
    path: str
    interval: Duration
    timeout: Duration
    healthy_threshold: int
    unhealthy_threshold: int


@dataclass(frozen=True)
class HashKey:
    """What a hashing load balancer keys on: header, cookie or source_ip."""

    kind: Literal["header", "cookie", "source_ip"]
    name: str = ""
    ttl: Duration | None = None


@dataclass(frozen=True)
class Protection:
    """How a cluster protects itself and its endpoints: limits, ejection, balancing, health checks."""

    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int
    outlier: Outlier | None
    lb_policy: Literal["round_robin", "least_request", "random", "ring_hash", "maglev"] = "round_robin"
    health_check: HealthCheck | None = None
    connection: ConnectionLife | None = None  # HTTP connection settings and keepalive (None: Envoy's defaults)


@dataclass(frozen=True)
class ConnectionLife:
    """How long an upstream connection lives and which HTTP version it speaks. `http_version` None: the
    cluster's protocol decides (grpc HTTP/2, else HTTP/1.1); `client`: the request's own. Keepalive is
    (probes, time s, interval s), each None for the system's value; HTTP settings are None on tcp clusters."""

    max_requests: int | None = None
    idle_timeout: Duration | None = None
    keepalive: tuple[int | None, int | None, int | None] | None = None
    http_version: Literal["http1", "http2", "client"] | None = None


@dataclass(frozen=True)
class TokenBucket:
    requests: int
    per: Duration


@dataclass(frozen=True)
class UpstreamTls:
    """Originate mTLS to the destination's sidecar, which must prove `peer_identity`."""

    sni: str
    peer_identity: str


@dataclass(frozen=True)
class SidecarTls:
    """This sidecar's certificate files and identity (present when its mTLS mode is not `disable`)."""

    certs_dir: str
    identity: str
    trust_domain: str


@dataclass(frozen=True)
class Dns:
    """How a cluster whose endpoints are names follows what they resolve to (Kubernetes mode: one host per
    pod IP of a headless Service). Envoy re-resolves every `refresh`, sooner when a record's TTL is shorter
    (`respect_ttl`), and asks for IPv4 first (`v4_preferred`: AAAA only when there is no A record)."""

    refresh: Duration
    respect_ttl: bool = True
    lookup_family: Literal["v4_preferred", "v4_only", "v6_only", "all"] = "v4_preferred"
    logical: bool = False
    """One host for the name, whatever it resolves to (Envoy's logical DNS): new connections go to the first
    address of the latest answer and open connections stay, so a large web service that rotates its
    addresses does not drain the pool on every answer. Else each address is a host (strict DNS)."""


@dataclass(frozen=True)
class OriginateTls:
    """TLS a caller's sidecar originates to a host outside the mesh (ExternalService `tls`): it sends `sni`,
    checks the server's chain against the PEM bundle `ca_file` (read through file SDS and reloaded when its
    folder changes) and requires `sni` among the certificate's DNS names. Never the mesh's certificate."""

    sni: str
    ca_file: str
    min_version: Literal["1.2", "1.3"] = "1.2"
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cluster:
    """A set of endpoints of one version of one service, seen from one side."""

    direction: Direction
    service: str
    version: str
    endpoints: tuple[Endpoint, ...]
    protocol: Protocol
    connect_timeout: Duration
    source: Source
    retry_budget: RetryBudget | None = None
    protection: Protection | None = None
    upstream_tls: UpstreamTls | None = None  # used by callers that have certificates (Sidecar.tls)
    dns: Dns | None = None  # endpoints are names resolved by Envoy with these settings (else Envoy's defaults)
    external: bool = False  # outside the mesh (ExternalService, undeclared hosts): no mesh mTLS, no source address
    external_tls: OriginateTls | None = None  # TLS originated to an external host
    forward_proxy: bool = False  # whatever host the request names, resolved by DNS (Mesh egress.undeclared: allow)

    @property
    def id(self) -> str:
        return f"{self.direction}/{self.service}/{self.version}"


@dataclass(frozen=True)
class Target:
    """One weighted destination of a route, with request headers set on the way."""

    cluster: Cluster
    weight: int | float  # a percentage (up to 4 decimals: emitted in millionths when one of a split's is not whole)
    set_headers: tuple[tuple[str, str], ...] = ()
