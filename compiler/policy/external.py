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
    among its DNS names. Verification cannot be turned off. Envoy reads the file through file-based SDS
    (`sds-external-ca-<name>.yaml`) and watches its folder: a bundle moved into place applies to new
    connections without a restart. The output only names the file: on a host it must be where the caller's sidecar
    runs; in pods it is mounted read-only at its folder from the ConfigMap `<name>-ca` (key: the file's base name)
    that you create in each caller's namespace (compiler/policy/external_ca.py)."""
    sni: Hostname | None = None
    """The server name sent in the handshake and checked in its certificate; default: `host`."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    """Lowest TLS version the sidecar offers (`tls_minimum_protocol_version`); a server that cannot speak it
    fails the handshake (503 to the app)."""


class ExternalService(Document):
    """A destination outside the mesh (Istio: ServiceEntry), callable by services that list it in `calls`.

    Route and TrafficPolicy documents may name it (`service: <name>`) like a mesh service with the one
    version `default`. It has no sidecar: AuthorizationPolicy and RequestAuthentication do not apply.
    """

    kind: Literal["ExternalService"] = "ExternalService"
    name: Name
    """Its name in the mesh: what `calls`, Routes and TrafficPolicies use."""
    host: Hostname
    """Its DNS name (`api.payments.example`): the Host apps call, the name Envoy resolves (unless
    `endpoints` are given), the TLS SNI by default, and the Host the server gets (`host_rewrite_literal`,
    with `:port` unless the port is the scheme's default). Wildcards are not allowed."""
    port: Port
    """The server's port (for `tcp`, also the port of the caller's outbound listener for it)."""
    protocol: Literal["http", "grpc", "tcp"] = "http"
    """`http` and `grpc`: requests, routed by Host on the caller's outbound listener; `tcp`: opaque bytes on
    an outbound listener of its own on `port`."""
    tls: ExternalTls | None = None
    """Originate TLS (the app talks plaintext to its sidecar). Without it the connection is plaintext (for
    `tcp`: whatever the app sends, e.g. its own TLS)."""
    endpoints: list[Endpoint] = []
    """Fixed addresses to connect to instead of resolving `host` (Istio `resolution: STATIC`); the host
    still goes into SNI and the certificate check. IP addresses make a static cluster, names a strict DNS
    one (each address a host). Empty: Envoy resolves `host` by logical DNS (one host: new connections go to
    the first address of the latest answer, open ones stay; Envoy's advice for large web services)."""


class Egress(PolicyModel):
    """What the mesh does with an app's call to a host nothing declares.

    `refuse` (the default, Istio's `REGISTRY_ONLY`): the outbound listener answers 502 with a body naming
    the reason; every way out of the mesh is then a reviewed ExternalService. `allow` (Istio's
    `ALLOW_ANY`): the sidecar forwards the request to whatever its Host names (plain HTTP to `host:port`,
    port 80 if none, resolved by Envoy's dynamic forward proxy), with only the Mesh's defaults (timeout,
    pool limits, outlier detection); meant for migrating apps that call hosts nobody has listed yet. Every
    sidecar then has an outbound listener, even one whose service calls nothing; with `refuse`, only those
    with an http or grpc dependency do.
    """

    undeclared: Literal["refuse", "allow"] = "refuse"
    """`refuse` (502) or `allow` (forward to whatever the Host names); see above."""
