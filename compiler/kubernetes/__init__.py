"""Stage 5b, Kubernetes manifests: mesh IR + rendered sidecar files -> `out/kubernetes/` (a kustomize base
and a Component), for the services that run in pods (sidecar address a wildcard).

It runs after render because it carries the files themselves: each ConfigMap holds its sidecar's files
byte for byte, and the pod annotation is the sha256 of the rendered bootstrap.yaml. Objects are built
as data (objects.py: ConfigMaps and Services; sidecar.py: the Component's patches) and serialised
deterministically (yaml_out.py); layout.py names the files and objects. A gateway in pods gets its
whole workload in the base (gateway.py: ConfigMap, ServiceAccount, Deployment, LoadBalancer Service,
PodDisruptionBudget). Nothing is written when no service or gateway runs in pods.

Use it from an overlay (README, "Kubernetes output"):

    resources:  [<out>/kubernetes, deployments.yaml]
    components: [<out>/kubernetes/sidecar]
"""

from __future__ import annotations

import hashlib

from compiler.diagnostics import Diagnostic
from compiler.emit.names import BOOTSTRAP_FILE
from compiler.ir import MeshIR
from compiler.kubernetes import gateway, layout, objects, sidecar
from compiler.kubernetes.problems import problems
from compiler.kubernetes.yaml_out import dumps


def _by_sidecar(files: dict[str, bytes], services: set[str]) -> dict[str, dict[str, bytes]]:
    """Service -> the files of its sidecar folder, by file name."""
    out: dict[str, dict[str, bytes]] = {name: {} for name in services}
    for rel, data in files.items():
        folder, _, name = rel.partition("/")
        if folder in out and "/" not in name:
            out[folder][name] = data
    return out


def manifests(ir: MeshIR, files: dict[str, bytes]) -> tuple[dict[str, bytes], list[Diagnostic]]:
    """The `kubernetes/...` files of a build (none when no service or gateway runs in pods), or the errors that stop them.

    `files`: the rendered output, keyed by path relative to the output folder.
    """
    pods = [s for s in ir.sidecars if s.kubernetes is not None]
    gateways = gateway.gateways(ir)
    if not pods and not gateways:
        return {}, []
    own = _by_sidecar(files, {s.service for s in pods + gateways})
    diags = list(problems(ir, {name: sum(len(d) for d in f.values()) for name, f in own.items()}))
    if diags:
        return {}, diags
    refresh = sidecar.caller_refresh_ms(ir)
    out: dict[str, bytes] = {}
    resources = []
    for s in pods:
        texts = {name: data.decode("utf-8") for name, data in own[s.service].items()}
        out[layout.configmap_path(s.service)] = dumps(objects.configmap(s, texts))
        out[layout.services_path(s.service)] = dumps(*objects.services(s))
        resources += [layout.configmap_path(s.service), layout.services_path(s.service)]
        bootstrap_sha = hashlib.sha256(own[s.service][BOOTSTRAP_FILE]).hexdigest()
        drain = sidecar.drain_seconds(s, refresh.get(s.service, 0))
        out[f"{layout.COMPONENT_DIR}/{layout.patch_file(s.service)}"] = dumps(sidecar.patch(s, bootstrap_sha, drain))
    for g in gateways:
        texts = {name: data.decode("utf-8") for name, data in own[g.service].items()}
        out[layout.configmap_path(g.service)] = dumps(gateway.configmap(g, texts))
        bootstrap_sha = hashlib.sha256(own[g.service][BOOTSTRAP_FILE]).hexdigest()
        out[layout.gateway_path(g.service)] = dumps(*gateway.objects(g, bootstrap_sha))
        resources += [layout.configmap_path(g.service), layout.gateway_path(g.service)]
    out[layout.BASE] = dumps({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(r[len(layout.DIR) + 1:] for r in resources),
    })
    out[layout.COMPONENT] = dumps(sidecar.component([s.service for s in pods]))
    return dict(sorted(out.items())), []
