"""The IR of a service in pods: what the Kubernetes manifests need beyond the rest of its Sidecar
(compiler/kubernetes/ reads it; a gateway's is compiler/ir_edge.py `KubernetesGateway`). Re-exported by
compiler/ir.py."""

from __future__ import annotations

from dataclasses import dataclass

from compiler.policy.types import Duration


@dataclass(frozen=True)
class KubernetesVersion:
    """One version of a service that runs in pods.

    `selector`: the pod labels of its instances (`app`, and `version` unless it is the implicit `default`),
    which its headless Service `headless_service` selects. `explicit_endpoints`: the version lists its own
    endpoints (VMs, external hosts): its instances are not pods, so callers do not resolve its headless
    Service but reach any pod of the service (the ClusterIP Service), whose sidecar forwards to them.
    """

    name: str
    headless_service: str  # <service>-<version>
    selector: tuple[tuple[str, str], ...]
    explicit_endpoints: bool = False


@dataclass(frozen=True)
class KubernetesCaBundle:
    """The CA bundle of an ExternalService the sidecar originates TLS to (`OriginateTls.ca_file`), read in a
    pod from key `key` of the ConfigMap `configmap` the user provides (compiler/policy/external_ca.py),
    mounted read-only at `path`'s folder (the CA files of one folder share one volume there)."""

    configmap: str
    key: str
    path: str


@dataclass(frozen=True)
class KubernetesSidecar:
    """What the Kubernetes manifests need beyond the rest of the Sidecar (present for services in pods).

    The service's port, protocol, config_dir, certificates (`tls.certs_dir`) and metrics port are on the
    Sidecar itself. `readiness_address`:`probe_port` is the readiness listener (`/ready` only), where the
    pod's readiness and liveness probes go. Quantities are Kubernetes text (`100m`, `128Mi`).
    """

    namespace: str
    versions: tuple[KubernetesVersion, ...]  # in the service's order
    cluster_domain: str
    image: str
    probe_port: int
    readiness_address: str  # the sidecar's wildcard address: 0.0.0.0 or ::
    requests: tuple[tuple[str, str], ...]  # (cpu|memory, quantity)
    limits: tuple[tuple[str, str], ...]
    shutdown_grace: Duration  # whole seconds: terminationGracePeriodSeconds
    certs_secret: str | None  # the Secret mounted at tls.certs_dir; None when mTLS is off for the service
    selector: tuple[tuple[str, str], ...]  # pods of every version: (("app", <service>),), the ClusterIP Service's
    ca_bundles: tuple[KubernetesCaBundle, ...] = ()  # sorted by path: one per CA file its external clusters read
    version_label: str | None = None  # routes match the app's version: the pod label the sidecar's
    # environment takes it from (CALLER_VERSION_ENV, by the downward API); None when no route needs it
