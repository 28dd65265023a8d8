"""A gateway in pods: its objects in the base (meshc owns the whole workload, there is no app to patch).

Per gateway `<g>`, in its namespace (`kubernetes/<g>/`):

- ConfigMap `meshc-<g>`: the gateway's files, byte for byte (as for a sidecar; reloads in place);
- ServiceAccount `<service_account or g>`: the account of its identity (no API token mounted: Envoy
  never calls the API server);
- Deployment `<g>`: `replicas` pods, each one Envoy started as sidecars are (same image, command, flags,
  security context, resources, probes on the readiness listener, grace period), the ConfigMap at
  `config_dir`, the mesh certificate Secret at the certificates folder (mTLS), every edge TLS Secret
  projected into the folders the policy names (compiler/policy/edge_secrets.py), the CA bundles of the
  external hosts its routes mirror to (compiler/policy/external_ca.py), the annotation
  `meshc.dev/bootstrap-sha256` (a bootstrap change rolls the pods, as does a change of the Deployment), Prometheus' annotations, spread
  over nodes and zones, rolled one extra pod at a time without ever going below `replicas`;
- Service `<g>` of type LoadBalancer: one port per listener (port = listener port, named after the
  listener), `externalTrafficPolicy: Local`, so a client's connection reaches a gateway pod on the
  node it arrived at with its source address intact (`trusted_hops: 0` then means the real client);
- PodDisruptionBudget `<g>` (`minAvailable: 1`) when it has more than one replica: a node drain never
  takes the last gateway pod.
"""

from __future__ import annotations

from compiler.emit.bootstrap import ENVOY_ARGS
from compiler.ir import Sidecar
from compiler.kubernetes import layout
from compiler.kubernetes.sidecar import (
    PORT_METRICS,
    PORT_PROBE,
    envoy_container,
    envoy_volumes,
    pod_annotations,
    projected_volumes,
)

CONTAINER = "meshc-gateway"
VOLUME_EDGE = "meshc-edge-{n}"  # one projected volume per folder of edge TLS files, numbered by folder

DRAIN_TIME_S = int(ENVOY_ARGS[ENVOY_ARGS.index("--drain-time-s") + 1])


def gateways(ir) -> list[Sidecar]:
    """The gateways that run in pods."""
    return [s for s in ir.sidecars if s.gateway is not None and s.gateway.kubernetes is not None]


def _metadata(s: Sidecar, name: str) -> dict:
    return {
        "name": name,
        "namespace": s.gateway.namespace,
        "labels": {**layout.managed_labels(s.mesh), "meshc.dev/gateway": s.gateway.name},
    }


def drain_seconds(s: Sidecar) -> int:
    """The gateway's preStop `sleep`: once a pod starts terminating it leaves the LoadBalancer Service's
    endpoints, and (externalTrafficPolicy Local) its node's health check fails once no other gateway pod
    is ready there; the cloud load balancer notices only after a few of its health-check intervals, and
    keeps sending connections meanwhile (kube-proxy still delivers them to the terminating pod). So the
    gateway serves for all of `shutdown_grace` but the drain time Envoy is given before it is killed."""
    grace = s.gateway.kubernetes.shutdown_grace.ms // 1000
    return max(1, grace - DRAIN_TIME_S)


def mounts(s: Sidecar) -> list[tuple[str, str, dict]]:
    """(volume name, mount path, volume source) of every volume the gateway's Envoy needs: a sidecar's, with
    every folder of edge TLS files a projected volume of the Secrets' keys (beside the CA bundles of the
    external hosts its routes mirror to)."""
    files = [(secret.name, key, path) for secret in s.gateway.kubernetes.edge_secrets for key, path in secret.files]
    return envoy_volumes(s, s.gateway.kubernetes, projected_volumes(files, "secret", VOLUME_EDGE))


def bound_ports(s: Sidecar) -> list[int]:
    """Every port the gateway binds in its pod: its listeners, metrics, readiness."""
    ports = {p.port for p in s.gateway.listeners} | {s.gateway.kubernetes.probe_port}
    if s.metrics:
        ports.add(s.metrics.port)
    return sorted(ports)


def container(s: Sidecar) -> dict:
    g, k = s.gateway, s.gateway.kubernetes
    ports = [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in g.listeners]
    return envoy_container(CONTAINER, s, k, ports, drain_seconds(s), mounts(s))


def _spread(selector: dict, key: str) -> dict:
    return {
        "maxSkew": 1,
        "topologyKey": key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": dict(selector)},
        "matchLabelKeys": ["pod-template-hash"],  # spread each rollout's pods, not old and new together
    }


def deployment(s: Sidecar, bootstrap_sha256: str) -> dict:
    g, k = s.gateway, s.gateway.kubernetes
    selector = dict(k.selector)
    spec: dict = {
        "serviceAccountName": k.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": k.shutdown_grace.ms // 1000,
        "containers": [container(s)],
        "volumes": [{"name": name, **source} for name, _, source in mounts(s)],
        "topologySpreadConstraints": [
            _spread(selector, "kubernetes.io/hostname"),
            _spread(selector, "topology.kubernetes.io/zone"),
        ],
    }
    if min(bound_ports(s)) < 1024:
        # Envoy runs without capabilities: a port below 1024 (80, 443) needs the pod's network namespace
        # to allow it (a "safe" sysctl since Kubernetes 1.22).
        spec["securityContext"] = {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(s, g.name),
        "spec": {
            "replicas": g.replicas,
            "selector": {"matchLabels": dict(selector)},
            # a new pod is ready before an old one goes: the gateway never runs below `replicas`
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {**layout.managed_labels(s.mesh), **selector},
                    "annotations": pod_annotations(s, bootstrap_sha256),
                },
                "spec": spec,
            },
        },
    }


def service(s: Sidecar) -> dict:
    g, k = s.gateway, s.gateway.kubernetes
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(s, g.name),
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "selector": dict(k.selector),
            "ports": [
                {"name": p.name, "appProtocol": p.protocol, "port": p.port, "targetPort": p.port, "protocol": "TCP"}
                for p in g.listeners
            ],
        },
    }


def service_account(s: Sidecar) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(s, s.gateway.kubernetes.service_account),
        "automountServiceAccountToken": False,
    }


def disruption_budget(s: Sidecar) -> dict | None:
    if s.gateway.replicas < 2:
        return None  # with one pod, minAvailable 1 would block every node drain
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(s, s.gateway.name),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": dict(s.gateway.kubernetes.selector)},
            # a pod that is not ready protects nothing: a drain may evict it
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def configmap(s: Sidecar, files: dict[str, str]) -> dict:
    """`files`: the gateway's file name -> its text."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(s, layout.configmap_name(s.service)),
        "data": dict(sorted(files.items())),
    }


def objects(s: Sidecar, bootstrap_sha256: str) -> list[dict]:
    """The workload's objects (the ConfigMap aside): ServiceAccount, Deployment, Service, PodDisruptionBudget."""
    out = [service_account(s), deployment(s, bootstrap_sha256), service(s)]
    pdb = disruption_budget(s)
    return out + ([pdb] if pdb else [])
