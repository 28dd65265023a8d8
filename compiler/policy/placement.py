"""Where a service's sidecar listens and how callers reach it.

This is policy meaning (mesh defaults merged with per-service overrides),
shared by the check and lower stages; it knows nothing about Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.policy.models import Mesh, Service
from compiler.policy.types import Endpoint, is_loopback, is_wildcard


@dataclass(frozen=True)
class Placement:
    address: str  # the inbound listener binds here
    inbound_port: int
    outbound_address: str  # the outbound listeners bind here: only the local app may use them
    outbound_port: int
    admin_address: str  # always loopback
    admin_port: int

    @property
    def one_host(self) -> bool:
        """A specific address means sidecars share a network namespace (one host)."""
        return not is_wildcard(self.address)


def place(mesh: Mesh, service: Service) -> Placement:
    own = service.sidecar
    address = own.address or mesh.sidecar.address
    admin_address = address if is_loopback(address) else ("::1" if ":" in address else "127.0.0.1")
    # With a wildcard address (Kubernetes) the app reaches its sidecar on loopback; binding the
    # outbound listener to every interface would make the sidecar an open proxy into the mesh.
    outbound_address = address if not is_wildcard(address) else ("::1" if ":" in address else "127.0.0.1")
    return Placement(
        address=address,
        inbound_port=service.port,
        outbound_address=outbound_address,
        outbound_port=own.outbound_port or mesh.sidecar.outbound_port,
        admin_address=admin_address,
        admin_port=own.admin_port or mesh.sidecar.admin_port,
    )


def reach(mesh: Mesh, service: Service) -> Endpoint:
    """Where callers send traffic for `service`: its sidecar's inbound listener.

    With a wildcard sidecar address (Kubernetes) that is the service's DNS
    name; on one host it is the sidecar's own address.
    """
    placement = place(mesh, service)
    host = placement.address if placement.one_host else service.name
    return Endpoint(host, service.port)


def mtls_mode(mesh: Mesh, service: Service) -> str:
    """strict | permissive | disable: the service's own, else the mesh's."""
    return service.mtls or mesh.mtls.mode


def spiffe_id(mesh: Mesh, service: Service) -> str:
    """The identity in the service's certificate (URI SAN)."""
    account = service.service_account or service.name
    return f"spiffe://{mesh.trust_domain}/ns/{service.namespace}/sa/{account}"


def observability(mesh: Mesh, service: Service):
    """The service's effective (metrics, tracing, access_log): its overrides over the mesh's settings."""
    own, base = service.observability, mesh.observability
    parts = []
    for name in ("metrics", "tracing", "access_log"):
        value = getattr(own, name)
        parts.append(None if value is False else value if value is not None else getattr(base, name))
    return tuple(parts)
