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
  `meshc.dev/bootstrap-sha256` (only a bootstrap change rolls the pods), Prometheus' annotations, spread
  over nodes and zones, rolled one extra pod at a time without ever going below `replicas`;
- Service `<g>` of type LoadBalancer: one port per listener (port = listener port, named after the
  listener), `externalTrafficPolicy: Local`, so a client's connection reaches a gateway pod on the
  node it arrived at with its source address intact (`trusted_hops: 0` then means the real client);
- PodDisruptionBudget `<g>` (`minAvailable: 1`) when it has more than one replica: a node drain never
  takes the last gateway pod.
"""

from __future__ import annotations

import posixpath

from compiler.emit.bootstrap import ENVOY_ARGS
from compiler.ir import Sidecar
from compiler.kubernetes import layout
from compiler.kubernetes.sidecar import (
    ENVOY_BINARY,
    ENVOY_UID,
    LIVENESS,
    READINESS,
    STARTUP,
    _probe,
    access_log_dir,
    ca_volumes,
    pod_annotations,
)

CONTAINER = "meshc-gateway"
VOLUME_EDGE = "meshc-edge-{n}"  # one projected volume per folder of edge TLS files, numbered by folder
PORT_METRICS, PORT_PROBE = "meshc-metrics", "meshc-probe"

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


def edge_folders(s: Sidecar) -> list[tuple[str, list[dict]]]:
    """(folder, projected sources) of every folder holding edge TLS files, sorted by folder."""
    by_folder: dict[str, dict[str, list[dict]]] = {}
    for secret in s.gateway.kubernetes.edge_secrets:
        for key, path in secret.files:
            folder = posixpath.dirname(path) or "/"
            items = by_folder.setdefault(folder, {}).setdefault(secret.name, [])
            items.append({"key": key, "path": posixpath.basename(path)})
    return [
        (folder, [{"secret": {"name": name, "items": items}} for name, items in sorted(secrets.items())])
        for folder, secrets in sorted(by_folder.items())
    ]


def mounts(s: Sidecar) -> list[tuple[str, str, dict]]:
    """(volume name, mount path, volume source) of every volume the gateway's Envoy needs."""
    k = s.gateway.kubernetes
    out = [(layout.VOLUME_CONFIG, s.config_dir, {"configMap": {"name": layout.configmap_name(s.service)}})]
    if s.tls is not None and k.certs_secret is not None:
        out.append((layout.VOLUME_CERTS, s.tls.certs_dir, {"secret": {"secretName": k.certs_secret}}))
    for n, (folder, sources) in enumerate(edge_folders(s)):
        out.append((VOLUME_EDGE.format(n=n), folder, {"projected": {"sources": sources}}))
    out += ca_volumes(k.ca_bundles)  # CA bundles of the external hosts its routes mirror to
    out.append((layout.VOLUME_TMP, "/tmp", {"emptyDir": {"sizeLimit": "64Mi"}}))
    log_dir = access_log_dir(s)
    if log_dir is not None:
        out.append((layout.VOLUME_LOGS, log_dir, {"emptyDir": {}}))
    return out


def bound_ports(s: Sidecar) -> list[int]:
    """Every port the gateway binds in its pod: its listeners, metrics, readiness."""
    ports = {p.port for p in s.gateway.listeners} | {s.gateway.kubernetes.probe_port}
    if s.metrics:
        ports.add(s.metrics.port)
    return sorted(ports)


def container(s: Sidecar) -> dict:
    g, k = s.gateway, s.gateway.kubernetes
    ports = [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in g.listeners]
    if s.metrics:
        ports.append({"name": PORT_METRICS, "containerPort": s.metrics.port, "protocol": "TCP"})
    ports.append({"name": PORT_PROBE, "containerPort": k.probe_port, "protocol": "TCP"})
    resources = {}
    if k.requests:
        resources["requests"] = dict(k.requests)
    if k.limits:
        resources["limits"] = dict(k.limits)
    return {
        "name": CONTAINER,
        "image": k.image,
        "command": [ENVOY_BINARY],
        "args": ["-c", f"{s.config_dir.rstrip('/')}/bootstrap.yaml", *ENVOY_ARGS, "--disable-hot-restart"],
        "ports": ports,
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsGroup": ENVOY_UID,
            "runAsNonRoot": True,
            "runAsUser": ENVOY_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "startupProbe": _probe(k.probe_port, STARTUP),
        "readinessProbe": _probe(k.probe_port, READINESS),
        "livenessProbe": _probe(k.probe_port, LIVENESS),
        "lifecycle": {"preStop": {"sleep": {"seconds": drain_seconds(s)}}},
        "volumeMounts": [
            {"name": name, "mountPath": path, **({"readOnly": True} if "emptyDir" not in source else {})}
            for name, path, source in mounts(s)
        ],
    }


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
