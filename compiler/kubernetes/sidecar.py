"""The sidecar Component: per service, a strategic-merge patch that adds Envoy to the service's Deployments.

What the patch puts in a pod template (kustomize merges it into every Deployment labelled
`app: <service>`; lists merge by `name`, so the user's containers and volumes stay):

- an init container `meshc-sidecar` with `restartPolicy: Always`: a native sidecar (Kubernetes >= 1.29).
  It starts before the app, and the app starts only once its startup probe passed (Envoy has loaded its
  listeners), so the app's first outbound call already finds the mesh; on the way out it is stopped only
  after the app has exited, so calls the app makes while shutting down still go through it.
- `envoy -c <config_dir>/bootstrap.yaml` with the same flags as every sidecar (ENVOY_ARGS) and
  `--disable-hot-restart` (a pod never hot-restarts: a new bootstrap is a new pod, and without it Envoy
  needs no shared memory);
- the ConfigMap mounted read-only at the Mesh's `config_dir`, the certificate Secret at
  `mtls.certs_dir` when mTLS is on, the CA bundles of the ExternalServices it originates TLS to (from the
  user's ConfigMaps `<external>-ca`, one read-only volume per folder: compiler/policy/external_ca.py), an
  emptyDir at /tmp (the root filesystem is read-only) and one at the access log's folder when the log
  goes to a file;
- a locked-down security context: Envoy's own user (101), no privilege escalation, no capabilities, a
  read-only root filesystem, the runtime's default seccomp profile;
- probes on the readiness listener (`GET /ready` on `probe_port`, answered from Envoy's readiness only;
  the admin interface stays on loopback);
- graceful shutdown (see `drain_seconds`), `terminationGracePeriodSeconds` = Mesh `shutdown_grace`;
- pod annotations: `meshc.dev/bootstrap-sha256` (a bootstrap change rolls pods, as does a change of this
  patch, e.g. the `MESHC_VERSION` variable caller-version rules need; the other files reload in place) and,
  with metrics on, Prometheus' scrape annotations.
"""

from __future__ import annotations

import posixpath

from compiler.emit.bootstrap import ENVOY_ARGS
from compiler.ir import CALLER_VERSION_ENV, MeshIR, Sidecar
from compiler.kubernetes import layout
from compiler.kubernetes.objects import inbound_port
from compiler.policy.kubernetes import DNS_MARGIN  # a constant shared with the E294 check, not a model

ENVOY_BINARY = "/usr/local/bin/envoy"
"""Where Envoy is in the official images (envoyproxy/envoy, its distroless variant) and in meshc's own
image (docker/Dockerfile). Started directly, not through the image's entrypoint script: no shell needed."""

ENVOY_UID = 101
"""The `envoy` user of the official images."""

DNS_MARGIN_MS = DNS_MARGIN.ms
"""Added to the callers' DNS refresh before a pod's sidecar may stop: CoreDNS's default record TTL (5 s;
callers honour TTLs) and the time the control plane takes to take a terminating pod out of DNS and of
the ClusterIP Service's endpoints. The same constant as the check that `shutdown_grace` leaves room for
it (E294), so the preStop sleep always ends before the grace period."""

PORT_METRICS, PORT_PROBE = "meshc-metrics", "meshc-probe"

STARTUP = {"periodSeconds": 1, "failureThreshold": 60, "timeoutSeconds": 1}
READINESS = {"periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 1}
LIVENESS = {"periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 2}


def caller_refresh_ms(ir: MeshIR) -> dict[str, int]:
    """Service -> the longest DNS refresh among the callers that resolve it by name (in pods)."""
    out: dict[str, int] = {}
    for s in ir.sidecars:
        for c in s.clusters:
            if c.direction == "outbound" and c.dns is not None:
                out[c.service] = max(out.get(c.service, 0), c.dns.refresh.ms)
    return out


def drain_seconds(s: Sidecar, refresh_ms: int) -> int:
    """How long the sidecar keeps serving once its pod starts terminating (its preStop `sleep`).

    The pod leaves its headless Services' DNS records and the ClusterIP Service's endpoints as soon as it
    starts terminating, but callers keep the IPs they resolved until their next refresh: requests they
    send meanwhile must still find this sidecar. So it stays for the callers' DNS refresh plus a margin;
    kubelet sends it SIGTERM only after that and after the app has exited (a native sidecar stops last),
    and by then callers have dropped the pod and closed their connections to it. A `sleep` action needs
    no shell or HTTP client in the image (Kubernetes >= 1.30): Envoy's own drain (`/drain_listeners`) is
    on the loopback admin interface, which a preStop hook cannot reach without a client in the image.
    """
    grace = s.kubernetes.shutdown_grace.ms // 1000
    wanted = -(-(refresh_ms + DNS_MARGIN_MS) // 1000)  # whole seconds, rounded up
    return max(1, min(wanted, grace - 1))


def _probe(port: int, timing: dict) -> dict:
    return {"httpGet": {"path": "/ready", "port": port, "scheme": "HTTP"}, **timing}


def bound_ports(s: Sidecar) -> list[int]:
    """Every port the sidecar binds in its pod: listeners, metrics, readiness."""
    ports = {l.port for l in s.listeners} | {s.kubernetes.probe_port}
    if s.metrics:
        ports.add(s.metrics.port)
    return sorted(ports)


def mounts(s: Sidecar) -> list[tuple[str, str, dict]]:
    """(volume name, mount path, volume source) of every volume the sidecar needs."""
    return envoy_volumes(s, s.kubernetes)


def envoy_volumes(s: Sidecar, k, own: list[tuple[str, str, dict]] = ()) -> list[tuple[str, str, dict]]:
    """(volume name, mount path, volume source) of every volume an Envoy in a pod needs (a sidecar's, or a
    gateway's with `k` its Kubernetes settings): its ConfigMap, the mesh certificate Secret, `own` volumes
    (a gateway's edge certificates), the external CA bundles, /tmp and the access log's folder."""
    out = [(layout.VOLUME_CONFIG, s.config_dir, {"configMap": {"name": layout.configmap_name(s.service)}})]
    if s.tls is not None and k.certs_secret is not None:
        out.append((layout.VOLUME_CERTS, s.tls.certs_dir, {"secret": {"secretName": k.certs_secret}}))
    out += own
    out += ca_volumes(k.ca_bundles)
    out.append((layout.VOLUME_TMP, "/tmp", {"emptyDir": {"sizeLimit": "64Mi"}}))
    log_dir = access_log_dir(s)
    if log_dir is not None:
        out.append((layout.VOLUME_LOGS, log_dir, {"emptyDir": {}}))
    return out


def projected_volumes(files, kind: str, volume: str) -> list[tuple[str, str, dict]]:
    """(volume name, mount path, volume source) per folder of `files` ((object name, key, path) taken from
    ConfigMaps or Secrets, `kind` "configMap" or "secret"): a projected volume of exactly those keys under
    the file names Envoy opens, so kubelet's `..data` swap happens in the very folder Envoy watches;
    `volume` names them with the folder's number {n}, folders sorted."""
    by_folder: dict[str, dict[str, list[dict]]] = {}
    for name, key, path in files:
        items = by_folder.setdefault(posixpath.dirname(path) or "/", {}).setdefault(name, [])
        items.append({"key": key, "path": posixpath.basename(path)})
    out = []
    for n, (folder, objects) in enumerate(sorted(by_folder.items())):
        sources = [{kind: {"name": name, "items": items}} for name, items in sorted(objects.items())]
        out.append((volume.format(n=n), folder, {"projected": {"sources": sources}}))
    return out


def ca_volumes(bundles) -> list[tuple[str, str, dict]]:
    """The projected volumes of external CA bundles (`KubernetesCaBundle`s), from the user's ConfigMaps."""
    return projected_volumes(((b.configmap, b.key, b.path) for b in bundles), "configMap", layout.VOLUME_CA)


def access_log_dir(s: Sidecar) -> str | None:
    """The folder of a file access log, when it needs a volume of its own (/tmp has one)."""
    if s.access_log is None or s.access_log.to != "file" or not s.access_log.path:
        return None
    folder = posixpath.dirname(s.access_log.path.rstrip("/")) or "/"
    return None if folder == "/tmp" else folder


def container(s: Sidecar, drain: int) -> dict:
    k = s.kubernetes
    ports = [{"name": "meshc-inbound", "containerPort": inbound_port(s), "protocol": "TCP"}]
    out = envoy_container(layout.CONTAINER, s, k, ports, drain, mounts(s), native_sidecar=True)
    if k.version_label is not None:  # routes match the app's version: its pod's label (compiler/policy/caller.py)
        field = {"fieldRef": {"fieldPath": f"metadata.labels['{k.version_label}']"}}
        out["env"] = [{"name": CALLER_VERSION_ENV, "valueFrom": field}]
    return out


def envoy_container(name: str, s: Sidecar, k, ports: list[dict], drain: int, volumes, native_sidecar: bool = False) -> dict:
    """The Envoy container of a pod (a sidecar's, or a gateway's with `k` its Kubernetes settings): `ports`
    then metrics and readiness, the locked-down security context, probes, the preStop sleep of `drain`
    seconds, `volumes` mounted (read-only but the emptyDirs). A native sidecar restarts always."""
    ports = list(ports)
    if s.metrics:
        ports.append({"name": PORT_METRICS, "containerPort": s.metrics.port, "protocol": "TCP"})
    ports.append({"name": PORT_PROBE, "containerPort": k.probe_port, "protocol": "TCP"})
    resources = {}
    if k.requests:
        resources["requests"] = dict(k.requests)
    if k.limits:
        resources["limits"] = dict(k.limits)
    return {
        "name": name,
        "image": k.image,
        **({"restartPolicy": "Always"} if native_sidecar else {}),
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
        "lifecycle": {"preStop": {"sleep": {"seconds": drain}}},
        "volumeMounts": [
            {"name": vname, "mountPath": path, **({"readOnly": True} if "emptyDir" not in source else {})}
            for vname, path, source in volumes
        ],
    }


def pod_annotations(s: Sidecar, bootstrap_sha256: str) -> dict[str, str]:
    out = {layout.ANNOTATION_BOOTSTRAP: bootstrap_sha256}
    if s.metrics:
        out.update({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(s.metrics.port),
            "prometheus.io/path": "/stats/prometheus",
        })
    return out


def patch(s: Sidecar, bootstrap_sha256: str, drain: int) -> dict:
    """The strategic-merge patch for the Deployments of one service (kustomize sets the name per target)."""
    k = s.kubernetes
    spec: dict = {
        "terminationGracePeriodSeconds": k.shutdown_grace.ms // 1000,
        "initContainers": [container(s, drain)],
        "volumes": [{"name": name, **source} for name, _, source in mounts(s)],
    }
    if min(bound_ports(s)) < 1024:
        # Envoy runs without capabilities, so a port below 1024 needs the pod's network namespace to
        # allow it (a "safe" sysctl since Kubernetes 1.22). This replaces the pod's own sysctls list.
        spec["securityContext"] = {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"meshc-sidecar-{s.service}"},
        "spec": {"template": {"metadata": {"annotations": pod_annotations(s, bootstrap_sha256)}, "spec": spec}},
    }


def component(services: list[str]) -> dict:
    """kubernetes/sidecar/kustomization.yaml: one patch per service, for Deployments labelled `app: <service>`."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": [
            {
                "path": layout.patch_file(name),
                "target": {"group": "apps", "version": "v1", "kind": "Deployment", "labelSelector": f"app={name}"},
            }
            for name in sorted(services)
        ],
    }
