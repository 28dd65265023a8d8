"""A service or a gateway in pods (Kubernetes mode) -> what its manifests need (IR `KubernetesSidecar`,
`KubernetesGateway`), including the ConfigMaps its pods read external CA bundles from
(compiler/policy/external_ca.py).

The labels are the contract with the user's Deployments: pods carry
`app: <service>` and `version: <version>`; a service that declares no versions
has the one version `default`, whose pods need only `app`.
"""

from __future__ import annotations

from typing import Iterable

from compiler.ir import Cluster, KubernetesCaBundle, KubernetesSidecar, KubernetesVersion
from compiler.ir_edge import KubernetesEdgeSecret, KubernetesGateway
from compiler.policy import Mesh
from compiler.policy.edge_secrets import edge_secrets
from compiler.policy.external_ca import ca_configmaps
from compiler.policy.kubernetes import ResourceList
from compiler.policy.resolved import GatewayView, Resolved, ServiceView

APP_LABEL = "app"
VERSION_LABEL = "version"
GATEWAY_LABEL = "meshc.dev/gateway"
"""A gateway's pods carry `app: <gateway>` and this label: meshc owns its Deployment, and the label keeps
its selector off any pod a user labelled `app: <gateway>` for something else."""


def _quantities(r: ResourceList) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in (("cpu", r.cpu), ("memory", r.memory)) if v is not None)


def ca_bundles(view: Resolved, clusters: Iterable[Cluster]) -> tuple[KubernetesCaBundle, ...]:
    """The ConfigMaps a pod reads the CA bundles of its sidecar's external clusters from (exactly the files
    its `sds-external-ca-*.yaml` name), sorted by path."""
    by_path = ca_configmaps(view.policy.external_services)
    paths = sorted({c.external_tls.ca_file for c in clusters if c.external_tls is not None})
    return tuple(KubernetesCaBundle(by_path[p].name, by_path[p].key, p) for p in paths)


def kubernetes_sidecar(
    sv: ServiceView, mesh: Mesh, cas: tuple[KubernetesCaBundle, ...] = (), caller_version: bool = False
) -> KubernetesSidecar:
    """`cas`: `ca_bundles` of the sidecar's clusters; `caller_version`: some outbound route matches the app's
    version (compiler/policy/caller.py)."""
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
        ca_bundles=cas,
        version_label=VERSION_LABEL if caller_version else None,
    )


def kubernetes_gateway(gv: GatewayView, mesh: Mesh, cas: tuple[KubernetesCaBundle, ...] = ()) -> KubernetesGateway:
    """A gateway in pods (`gv.in_pods`): its Deployment, Services and Secrets' facts. `cas`: `ca_bundles` of
    its clusters."""
    gw, k = gv.gateway, mesh.kubernetes
    secrets: dict[str, KubernetesEdgeSecret] = {}
    for s in edge_secrets(gw):  # a name given twice with other files is refused (E405): keep the first
        secrets.setdefault(s.name, KubernetesEdgeSecret(s.name, s.files))
    return KubernetesGateway(
        image=k.image,
        probe_port=k.probe_port,
        readiness_address=gv.address,
        requests=_quantities(k.resources.requests),
        limits=_quantities(k.resources.limits),
        shutdown_grace=k.shutdown_grace,
        service_account=gw.service_account or gw.name,
        certs_secret=k.certs_secret_of(gw.name) if gv.mtls else None,
        selector=((APP_LABEL, gw.name), (GATEWAY_LABEL, gw.name)),
        edge_secrets=tuple(secrets[name] for name in sorted(secrets)),
        ca_bundles=cas,
    )
