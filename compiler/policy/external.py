"""Services outside the mesh, and what happens to calls to anything undeclared.

An ExternalService is a host the mesh does not run (a payment provider, a
cloud API). Apps call it through their own sidecar, in plain HTTP with
`Host: <host>` (or its `name`), like any mesh service: the sidecar applies
the same per-destination protections (Route timeouts and retries,
TrafficPolicy pool limits and outlier detection) and originates TLS itself,
verifying the server against a CA bundle, so the app holds no TLS code and
the mesh sees every request.

Calls to hosts that no Service or ExternalService declares follow the
Mesh's `egress.undeclared` (see `Egress`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compiler.policy.base import Document, PolicyModel
from compiler.policy.gateway import FilePath, Hostname
from compiler.policy.types import Endpoint, Name, Port


class ExternalTls(PolicyModel):
    """TLS the caller's sidecar originates to the external host (Envoy `UpstreamTlsContext`)."""

    ca: FilePath
    """PEM bundle of the CAs the server's certificate must chain to; it must also name `sni` (or the host)
    among its DNS names. Verification cannot be turned off."""
    sni: Hostname | None = None
    """The server name sent in the handshake and checked in its certificate; default: `host`."""
    min_version: Literal["1.2", "1.3"] = "1.2"


class ExternalService(Document):
    """A destination outside the mesh (Istio: ServiceEntry), callable by services that list it in `calls`.

    Route and TrafficPolicy documents may name it (`service: <name>`) like a mesh service with the one
    version `default`. It has no sidecar: AuthorizationPolicy and RequestAuthentication do not apply.
    """

    kind: Literal["ExternalService"] = "ExternalService"
    name: Name
    host: Hostname
    """Its DNS name (`api.payments.example`): the Host apps call, the name Envoy resolves (unless
    `endpoints` are given), the TLS SNI by default. Wildcards are not allowed."""
    port: Port
    protocol: Literal["http", "grpc", "tcp"] = "http"
    """`http` and `grpc`: requests, routed by Host on the caller's outbound listener; `tcp`: opaque bytes on
    an outbound listener of its own on `port`."""
    tls: ExternalTls | None = None
    """Originate TLS (the app talks plaintext to its sidecar). Without it the connection is plaintext (for
    `tcp`: whatever the app sends, e.g. its own TLS)."""
    endpoints: list[Endpoint] = []
    """Fixed addresses to connect to instead of resolving `host` (Istio `resolution: STATIC`); the host
    still goes into SNI and the certificate check. Empty: Envoy resolves `host` by DNS."""


class Egress(PolicyModel):
    """What the mesh does with an app's call to a host nothing declares.

    `refuse` (the default, Istio's `REGISTRY_ONLY`): the outbound listener answers 502 with a body naming
    the reason; every way out of the mesh is then a reviewed ExternalService. `allow` (Istio's
    `ALLOW_ANY`): the sidecar forwards the request to whatever its Host names (plain HTTP, resolved by
    DNS), with no protections; meant for migrating apps that call hosts nobody has listed yet.
    """

    undeclared: Literal["refuse", "allow"] = "refuse"
