"""A service in pods (Kubernetes mode) -> what its manifests need (IR `KubernetesSidecar`).

The labels are the contract with the user's Deployments: pods carry
`app: <service>` and `version: <version>`; a service that declares no versions
has the one version `default`, whose pods need only `app`.
"""

from __future__ import annotations

from compiler.ir import KubernetesSidecar, KubernetesVersion
from compiler.policy import Mesh
from compiler.policy.kubernetes import ResourceList
from compiler.policy.resolved import ServiceView

APP_LABEL = "app"
VERSION_LABEL = "version"


def _quantities(r: ResourceList) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in (("cpu", r.cpu), ("memory", r.memory)) if v is not None)


def kubernetes_sidecar(sv: ServiceView, mesh: Mesh) -> KubernetesSidecar:
    svc, k = sv.service, mesh.kubernetes
    app = ((APP_LABEL, svc.name),)
    versions = tuple(
        KubernetesVersion(
            name=v,
            headless_service=sv.headless_services[v],
            # the implicit version of a service without versions is all of its pods
            selector=app + ((VERSION_LABEL, v),) if svc.versions else app,
            explicit_endpoints=v not in sv.app_port_versions,
        )
        for v in sv.versions
    )
    return KubernetesSidecar(
        namespace=svc.namespace,
        versions=versions,
        cluster_domain=k.cluster_domain,
        image=k.image,
        probe_port=k.probe_port,
        readiness_address=sv.placement.address,
        requests=_quantities(k.resources.requests),
        limits=_quantities(k.resources.limits),
        shutdown_grace=k.shutdown_grace,
        certs_secret=k.certs_secret_of(svc.name) if sv.mtls != "disable" else None,
        selector=app,
    )
