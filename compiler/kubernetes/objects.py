"""The objects of the base: a ConfigMap with each sidecar's files, and the Services that make versions reachable.

- ConfigMap `meshc-<service>` in the service's namespace: one key per sidecar file (`bootstrap.yaml`,
  `listeners.yaml`, `clusters.yaml`, `routes-*.yaml`, `sds-*.yaml`), each value the file's exact text.
  Not hash-suffixed: the name stays, so a change reaches running pods in place (kubelet rewrites the
  mounted folder and swaps its `..data` link; Envoy's watched directory reloads); only a bootstrap
  change rolls pods (the Component's pod annotation).
- The ClusterIP Service `<service>` selects every pod of the service: for callers outside the mesh, and
  the name callers resolve for a version that lists its own endpoints (any pod's sidecar forwards there).
- One headless Service `<service>-<version>` per version whose instances are pods: its DNS records are
  exactly that version's pod IPs, one Envoy host each in every caller (STRICT_DNS). A version that lists
  its own endpoints has no pods of its own and no headless Service: nobody resolves one.

Both kinds of Service expose the sidecar's inbound port (never the app's): traffic into a pod always
crosses its sidecar.
"""

from __future__ import annotations

from compiler.ir import KubernetesSidecar, Sidecar
from compiler.kubernetes import layout

_APP_PROTOCOL = {"http": "http", "grpc": "grpc", "tcp": "tcp"}
"""Service port name and `appProtocol` per service protocol (what the sidecar's inbound listener speaks
to callers, mTLS aside)."""


def inbound_port(s: Sidecar) -> int:
    """The port callers use: the sidecar's inbound listener."""
    ports = [l.port for l in s.listeners if l.direction == "inbound"]
    assert len(ports) == 1, (s.service, ports)
    return ports[0]


def _metadata(name: str, k: KubernetesSidecar, mesh: str, **labels: str) -> dict:
    return {"name": name, "namespace": k.namespace, "labels": {**layout.managed_labels(mesh), **labels}}


def configmap(s: Sidecar, files: dict[str, str]) -> dict:
    """`files`: the sidecar's file name -> its text."""
    k = s.kubernetes
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(layout.configmap_name(s.service), k, s.mesh, **{"meshc.dev/service": s.service}),
        "data": dict(sorted(files.items())),
    }


def _service(name: str, s: Sidecar, selector: tuple[tuple[str, str], ...], headless: bool, **labels: str) -> dict:
    k = s.kubernetes
    port = inbound_port(s)
    spec: dict = {
        "type": "ClusterIP",
        "selector": dict(selector),
        "ports": [{
            "name": _APP_PROTOCOL[s.protocol],
            "appProtocol": _APP_PROTOCOL[s.protocol],
            "port": port,
            "targetPort": port,
            "protocol": "TCP",
        }],
    }
    if headless:
        # Records only for ready pods (the default): a pod that is starting or going away leaves DNS,
        # and callers stop picking it within their DNS refresh.
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, k, s.mesh, **{"meshc.dev/service": s.service, **labels}),
        "spec": spec,
    }


def services(s: Sidecar) -> list[dict]:
    """The ClusterIP Service, then the headless Service of each version in pods (in the service's order)."""
    k = s.kubernetes
    out = [_service(s.service, s, k.selector, headless=False)]
    for v in k.versions:
        if not v.explicit_endpoints:
            out.append(_service(v.headless_service, s, v.selector, headless=True, **{"meshc.dev/version": v.name}))
    return out
