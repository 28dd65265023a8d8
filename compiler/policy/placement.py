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

    @property
    def in_pods(self) -> bool:
        """A wildcard address (`0.0.0.0`, `::`): the service runs in pods (Kubernetes mode)."""
        return is_wildcard(self.address)


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

    On one host that is the sidecar's own address; in pods (Kubernetes) it is
    the fully qualified name of the service's ClusterIP Service, any pod.
    """
    placement = place(mesh, service)
    if placement.one_host:
        return Endpoint(placement.address, service.port)
    return Endpoint(service_dns(mesh, service.namespace, service.name), service.port)


def service_dns(mesh: Mesh, namespace: str, name: str) -> str:
    """The fully qualified DNS name of the Kubernetes Service `name` in `namespace`."""
    return f"{name}.{namespace}.svc.{mesh.kubernetes.cluster_domain}"


def headless_service(service: Service, version: str) -> str:
    """The headless Kubernetes Service whose records are the pod IPs of one version: `<service>-<version>`."""
    return f"{service.name}-{version}"


def version_reach(mesh: Mesh, service: Service) -> dict[str, Endpoint]:
    """Where callers send each version's traffic.

    On one host: the service's sidecar (it delivers to the version chosen by
    the caller). In pods: the version's headless Service, whose records are
    exactly that version's pods, so the caller balances over them itself;
    a version that lists its own endpoints has no pods of its own, so callers
    reach any pod of the service, whose sidecar forwards to those endpoints.
    """
    any_sidecar = reach(mesh, service)
    if place(mesh, service).one_host:
        return {v: any_sidecar for v in service.version_names}
    return {
        v: Endpoint(service_dns(mesh, service.namespace, headless_service(service, v)), service.port)
        if service.uses_app_port(v)
        else any_sidecar
        for v in service.version_names
    }


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
