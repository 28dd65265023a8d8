"""The Gateway kind: where traffic from outside the mesh comes in.

A Gateway is an Envoy of its own with no app behind it (its own output
folder, like a sidecar's). Its listeners face clients outside the mesh:
plain HTTP, or HTTPS with certificates read from files (file SDS: a renewed
certificate is served without a restart; no key material is ever part of
the output). Its routes send requests, by host and path, to mesh services;
from there the destination's own Route rules apply exactly as they do for a
caller inside the mesh (a canary split, an A/B match on a header). It calls
into the mesh with mTLS and an identity of its own, so an
AuthorizationPolicy can say `from: [<gateway>]`.

A RequestAuthentication whose `service` is the gateway's name verifies
tokens at the edge, before anything reaches the mesh.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from compiler.policy.base import Document, PolicyModel
from compiler.policy.observability import ObservabilityOverride
from compiler.policy.traffic import RateLimit
from compiler.policy.types import Duration, IPAddress, Name, Port, PositiveDuration, PositiveUInt32, UInt32

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
Hostname = Annotated[
    str,
    Field(
        strict=True,
        max_length=253,
        pattern=rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$",
        description="A DNS name in lowercase (`shop.example.com`), or a wildcard for one label and more "
        "(`*.example.com`).",
    ),
]
"""A host name as clients send it (Host header, TLS SNI); `*.example.com` covers any name under it."""

FilePath = Annotated[str, Field(strict=True, pattern=r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$")]
"""An absolute path to a file as the gateway's Envoy sees it."""


class EdgeCertificate(PolicyModel):
    """One certificate the gateway serves, chosen by the client's SNI.

    Envoy reads both files through file-based SDS and watches their folder: a
    certificate renewed on disk (moved into place, as cert-manager or a
    Kubernetes Secret mount does) is served to new connections without a restart.
    """

    hosts: list[Hostname] = Field(min_length=1)
    """The SNI names this certificate is served for; the certificate should cover them."""
    cert: FilePath
    """PEM certificate chain, leaf first."""
    key: FilePath
    """PEM private key of the leaf."""


class GatewayTls(PolicyModel):
    """TLS termination on an `https` listener."""

    certificates: list[EdgeCertificate] = Field(min_length=1)
    """Picked by SNI; a client that sends no SNI (or an unknown one) gets the first."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    """Lowest TLS version accepted (Envoy `tls_minimum_protocol_version`); older handshakes fail."""
    client_ca: FilePath | None = None
    """Require a client certificate signed by a CA in this PEM bundle (mutual TLS at the edge); the
    handshake fails without one."""


class GatewayListener(PolicyModel):
    """A port of the gateway open to clients outside the mesh."""

    name: Name
    """The listener's name, which `routes[].listeners` refer to."""
    port: Port
    """The port clients connect to."""
    protocol: Literal["http", "https"] = "http"
    """`https` terminates TLS with `tls` (required); `http` is plaintext."""
    tls: GatewayTls | None = None
    """Certificates and TLS settings of an `https` listener."""
    redirect_to_https: bool = False
    """On an `http` listener: answer every request with a 301 to the same URL on `https` (the port of the
    gateway's https listener), and route nothing."""


class GatewayRoute(PolicyModel):
    """Requests for `hosts` whose path starts with `path` go to the mesh service `to`.

    The service's own Route rules then decide as for any caller (version split, matches, retries,
    timeouts, faults, mirrors). Routes are tried in order; the first match wins.
    """

    hosts: list[Hostname] = []
    """Host names (the Host header, without the port); empty: any host."""
    path: str = Field(default="/", pattern=r"^/[\x21-\x7e]*$")
    """A path prefix (Envoy's prefix: `/shop` also matches `/shopping`; end it with `/` for a folder)."""
    to: Name
    """A Service of the mesh (http or grpc)."""
    listeners: list[Name] = []
    """The gateway listeners this route is served on; empty: every listener that does not redirect."""


class EdgeLimits(PolicyModel):
    """What one client may make the gateway hold, after Envoy's advice for untrusted downstreams."""

    max_connections: PositiveUInt32 = 10_000
    """Open connections per listener; beyond it new connections are closed at once (Envoy's per-listener
    limit, runtime `envoy.resource_limits.listener.<listener>.connection_limit`, counted over every
    certificate's filter chain; stat `listener.<address>_<port>.downstream_cx_overflow`). It is set in the
    bootstrap: a change restarts the gateway's Envoy. At most 4,294,967,295 (a runtime value is a double:
    Envoy ignores a limit beyond uint64, that is no limit at all, and rounds one beyond 2^53)."""
    max_request_headers_kb: Annotated[int, Field(strict=True, ge=1, le=8192)] = 60
    """Total size of a request's headers (HCM `max_request_headers_kb`); larger: 431."""
    max_headers: Annotated[int, Field(strict=True, ge=1, le=65535)] = 100
    """Number of request headers (`max_headers_count`); more: 431."""
    max_request_bytes: PositiveUInt32 | None = None
    """Largest request body, buffered whole before it is forwarded (`envoy.filters.http.buffer`); larger: 413.
    Default: no limit, so uploads and streams are not buffered. At most 4,294,967,295 (Envoy's uint32)."""
    request_headers_timeout: PositiveDuration = Duration(10_000)
    """Time a client has to send all its request headers (slow-loris protection)."""
    request_timeout: Duration | None = None
    """Time a client has to send its whole request (`request_timeout`); default: no limit."""
    stream_idle_timeout: PositiveDuration = Duration(300_000)
    """A request with no bytes either way for this long is ended."""
    idle_timeout: PositiveDuration = Duration(3_600_000)
    """A connection with no request for this long is closed."""


class Gateway(Document):
    """An ingress gateway: an Envoy at the mesh's edge, with listeners for outside clients and routes into it.

    On one host it listens on `address`; in Kubernetes (a wildcard address) it is a Deployment of
    `replicas` pods behind a `LoadBalancer` Service.
    """

    kind: Literal["Gateway"] = "Gateway"
    name: Name
    """The gateway's name: its output folder, and what `from:` of an AuthorizationPolicy names."""
    namespace: Name = "default"
    """Part of its identity; in pods, where its Deployment, Services, ServiceAccount and ConfigMap go."""
    service_account: Name | None = None
    """Identity: spiffe://<trust_domain>/ns/<namespace>/sa/<service_account or name>; what an
    AuthorizationPolicy names with `from: [<gateway name>]`. In pods, the ServiceAccount its pods run as
    (meshc writes it, with no API token mounted)."""
    address: IPAddress | None = None
    """Where its listeners bind; default: the Mesh's `sidecar.address`."""
    admin_port: Port | None = None
    """Envoy's admin interface (always on loopback); default: the Mesh's `sidecar.admin_port`."""
    listeners: list[GatewayListener] = Field(min_length=1)
    """Ports open to clients outside the mesh; at least one, names unique."""
    routes: list[GatewayRoute] = []
    """Where requests go, tried in order; the first match wins."""
    trusted_hops: UInt32 = 0
    """Proxies in front of the gateway (a cloud load balancer) whose `X-Forwarded-For` entries are
    trusted. 0: the client is the connection's peer address, and what the client wrote in
    `X-Forwarded-For` decides nothing (Envoy `use_remote_address`, `xff_num_trusted_hops`, a uint32)."""
    limits: EdgeLimits = EdgeLimits()
    """What one client may make the gateway hold (connections, header sizes, timeouts)."""
    rate_limit: RateLimit | None = None
    """A token bucket per listener for every request it takes (Envoy's local rate limit is per listener);
    an empty bucket answers 429 (stat `edge_rate_limit.http_local_rate_limit.rate_limited`)."""
    observability: ObservabilityOverride = ObservabilityOverride()
    """Metrics, access logs and tracing; a trace's root span starts here."""
    replicas: Annotated[int, Field(strict=True, ge=1, le=2_147_483_647)] = 2
    """Kubernetes: pods of its Deployment, spread over nodes and zones; with 2 or more a PodDisruptionBudget
    keeps at least one through node drains. Only for a gateway in pods (wildcard address): set on one with a
    specific address, which is one Envoy on its host, it is refused (E502). At most 2,147,483,647 (a
    Deployment's replicas is an int32)."""

    @model_validator(mode="after")
    def _listener_names_unique(self) -> "Gateway":
        seen: set[str] = set()
        for listener in self.listeners:
            if listener.name in seen:
                raise ValueError(f"listener name '{listener.name}' is used twice")
            seen.add(listener.name)
        return self
