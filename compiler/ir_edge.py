"""The IR of the mesh's edge: gateway listeners that face clients outside the mesh, and the gateway itself.

A Gateway lowers to a `Sidecar` with no app (`Sidecar.gateway` set): one
`HttpListener` per gateway listener, each with `edge` set (direction `edge`),
and the outbound clusters of the services it routes to, the very objects
mesh callers use. What makes an edge listener different from a sidecar's is
all here: the TLS it terminates for outside clients (certificates read from
files through file SDS, picked by SNI), the redirect to HTTPS, how many
proxies in front of it are trusted, and the limits an untrusted client meets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from compiler.diagnostics import Source
from compiler.policy.types import Duration

if TYPE_CHECKING:
    from compiler.ir_kubernetes import KubernetesCaBundle


@dataclass(frozen=True)
class EdgeCertificate:
    """One certificate served for `hosts` (TLS SNI); Envoy reads the files through the SDS secret `secret`."""

    secret: str  # the SDS secret's name (its file: sds-<secret>.yaml)
    hosts: tuple[str, ...]
    cert: str  # PEM chain, leaf first (a path as the gateway's Envoy sees it)
    key: str  # PEM private key


@dataclass(frozen=True)
class EdgeTls:
    """TLS termination for outside clients; the first certificate also serves clients without a known SNI."""

    certificates: tuple[EdgeCertificate, ...]
    min_version: Literal["1.2", "1.3"]
    client_ca: str | None = None  # require a client certificate signed by a CA of this PEM bundle


@dataclass(frozen=True)
class EdgeLimits:
    """What one untrusted client may make the edge listener hold (None: no limit)."""

    max_connections: int
    max_request_headers_kb: int
    max_headers: int
    max_request_bytes: int | None
    request_headers_timeout: Duration
    request_timeout: Duration | None
    stream_idle_timeout: Duration
    idle_timeout: Duration


@dataclass(frozen=True)
class Edge:
    """What an `HttpListener` facing outside clients adds to a mesh listener.

    `https_redirect_port`: the listener routes nothing and answers every request with a 301 to `https` on
    that port. `trusted_hops`: proxies in front whose `X-Forwarded-For` entries count (0: the peer address is
    the client).
    """

    listener: str  # the gateway listener's name
    source: Source
    tls: EdgeTls | None = None
    https_redirect_port: int | None = None
    trusted_hops: int = 0
    limits: EdgeLimits | None = None


@dataclass(frozen=True)
class GatewayPort:
    name: str
    port: int
    protocol: Literal["http", "https"]


@dataclass(frozen=True)
class KubernetesEdgeSecret:
    """A Secret the gateway's pods read edge TLS files from (never part of the output: the user provides it).

    `files`: (key in the Secret, path in the pod): `tls.crt`/`tls.key` for a certificate (a
    `kubernetes.io/tls` Secret, as cert-manager and `kubectl create secret tls` write it), `ca.crt` for a
    client CA bundle. Each file is projected into its folder under the name the policy gives it.
    """

    name: str
    files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class KubernetesGateway:
    """What the gateway's Kubernetes objects need beyond the rest of its Sidecar (a gateway in pods).

    Like KubernetesSidecar: `readiness_address`:`probe_port` is the readiness listener the probes ask;
    quantities are Kubernetes text. `selector`: the labels of its pods (its Deployment's selector, the
    LoadBalancer Service's, the PodDisruptionBudget's).
    """

    image: str
    probe_port: int
    readiness_address: str  # the gateway's wildcard address: 0.0.0.0 or ::
    requests: tuple[tuple[str, str], ...]
    limits: tuple[tuple[str, str], ...]
    shutdown_grace: Duration
    service_account: str  # its identity's account: the pods run as this ServiceAccount
    certs_secret: str | None  # mesh certificates, mounted at the Sidecar's tls.certs_dir (mTLS)
    selector: tuple[tuple[str, str], ...]
    edge_secrets: tuple[KubernetesEdgeSecret, ...] = ()  # sorted by name
    ca_bundles: tuple["KubernetesCaBundle", ...] = ()  # sorted by path: CA files of externals its routes mirror to


@dataclass(frozen=True)
class GatewaySpec:
    """What is known of a gateway beyond its Envoy configuration (the Sidecar it lowers to).

    `files`: every certificate, key and CA file its edge listeners read, sorted (a deployment mounts them).
    `kubernetes` is filled by the Kubernetes lowering when the gateway runs in pods.
    """

    name: str
    namespace: str
    replicas: int
    listeners: tuple[GatewayPort, ...]  # in the gateway's order
    files: tuple[str, ...] = ()
    kubernetes: KubernetesGateway | None = None  # the gateway runs in pods (compiler/lower/kubernetes.py)
