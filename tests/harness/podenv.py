"""Kubelet's part in a container's environment: the `env` list of a container spec, resolved for one pod.

    env = container_env(spec.env, pod)      # {"MESHC_VERSION": "v3"} for a pod labelled version=v3

What the box resolves, as kubelet does: a literal `value`, and the downward API's `fieldRef` to
`metadata.labels['<key>']` and `metadata.annotations['<key>']` (a key the pod does not carry gives the empty
string, as in a cluster), `metadata.name` and `status.podIP`. Anything else (Secrets,
ConfigMap keys, resource limits) the box does not know: it stops the pod, never starts it half-configured.
"""

from __future__ import annotations

import re

from .util import HarnessError

_MAP_KEY = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def container_env(env: list[dict], pod, *, annotations: dict | None = None) -> dict[str, str]:
    """Name -> value of every variable of `env` (a container's `env` list) for `pod` (harness.pod.Pod), whose
    template carries `annotations`."""
    out: dict[str, str] = {}
    for var in env:
        name = var["name"]
        if "valueFrom" not in var:
            out[name] = str(var.get("value", ""))
            continue
        source = var["valueFrom"]
        field = (source.get("fieldRef") or {}).get("fieldPath") if set(source) == {"fieldRef"} else None
        if field is None:
            raise HarnessError(f"{pod.name}: env {name} comes from a source the box does not know: {source}")
        out[name] = _field(field, pod, annotations or {})
    return out


def _field(path: str, pod, annotations: dict) -> str:
    m = _MAP_KEY.match(path)
    if m:
        values = pod.labels if m.group(1) == "labels" else annotations
        return str(values.get(m.group(2), ""))
    simple = {"metadata.name": pod.name, "status.podIP": pod.ip}
    if path not in simple:
        raise HarnessError(f"{pod.name}: fieldRef {path!r} is not one the box resolves")
    return simple[path]
