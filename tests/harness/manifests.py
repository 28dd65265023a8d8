"""What the box takes from `out/kubernetes/`, as a cluster would: the Services and the sidecar Component.

- `services(out)`: every Service of `kubernetes/<service>/services.yaml` (name, namespace, selector,
  headless or not). The box's endpoints controller publishes, for each Service, the IPs of the ready
  pods whose labels match its selector, under `<name>.<namespace>.svc.<cluster domain>`.
- `sidecar_spec(out, service)`: the container the Component's patch adds to the service's Deployments
  (found by its target `labelSelector: app=<service>`): command and args, volume mounts and their
  sources, user and read-only root, preStop sleep, termination grace, readiness probe, environment.

The ConfigMap's data is read by harness.configmap.configmap_data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .policy import load_json_yaml
from .util import HarnessError


@dataclass(frozen=True)
class ServiceObject:
    name: str
    namespace: str
    selector: dict[str, str]
    headless: bool

    def selects(self, labels: dict[str, str]) -> bool:
        return bool(self.selector) and all(labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    read_only: bool
    source: dict  # the pod volume: {"configMap": {...}} | {"secret": {...}} | {"emptyDir": {...}}

    @property
    def kind(self) -> str:
        return next(iter(self.source))


@dataclass(frozen=True)
class SidecarSpec:
    command: list[str]
    args: list[str]
    mounts: list[Mount]
    run_as: tuple[int, int] | None  # (uid, gid) from securityContext
    read_only_root: bool
    pre_stop_sleep: float  # seconds (lifecycle.preStop.sleep), 0 without one
    grace: float  # terminationGracePeriodSeconds
    readiness: tuple[str, int] | None  # (path, port) of the readinessProbe's httpGet
    annotations: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)  # the pod's securityContext.sysctls
    env: list[dict] = field(default_factory=list)  # the container's `env` list (harness.podenv resolves it)


def services(out: Path) -> list[ServiceObject]:
    found = []
    for f in sorted((Path(out) / "kubernetes").glob("*/services.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or doc.get("kind") != "Service":
                continue
            meta, spec = doc["metadata"], doc.get("spec") or {}
            found.append(ServiceObject(meta["name"], meta.get("namespace", "default"), dict(spec.get("selector") or {}),
                                       spec.get("clusterIP") == "None"))
    return found


def sidecar_spec(out: Path, service: str, container: str = "meshc-sidecar") -> SidecarSpec:
    folder = Path(out) / "kubernetes" / "sidecar"
    component = load_json_yaml(folder / "kustomization.yaml")
    if (component or {}).get("kind") != "Component":
        raise HarnessError(f"{folder / 'kustomization.yaml'}: not a kustomize Component")
    selector = f"app={service}"
    patches = [p for p in component.get("patches", []) if (p.get("target") or {}).get("labelSelector") == selector]
    if len(patches) != 1:
        raise HarnessError(f"the sidecar Component has {len(patches)} patch(es) for app={service}, want 1")
    template = load_json_yaml(folder / patches[0]["path"])["spec"]["template"]
    pod = template["spec"]
    matches = [c for c in pod.get("initContainers", []) if c["name"] == container]
    if len(matches) != 1 or matches[0].get("restartPolicy") != "Always":
        raise HarnessError(f"no native sidecar '{container}' (initContainers, restartPolicy: Always) for {service}")
    c = matches[0]
    volumes = {v["name"]: {k: val for k, val in v.items() if k != "name"} for v in pod.get("volumes", [])}
    mounts = []
    for m in c.get("volumeMounts", []):
        if m["name"] not in volumes:
            raise HarnessError(f"{service}: volumeMount '{m['name']}' names no volume of the pod")
        mounts.append(Mount(m["name"], m["mountPath"], bool(m.get("readOnly")), volumes[m["name"]]))
    sc = c.get("securityContext") or {}
    run_as = (int(sc["runAsUser"]), int(sc.get("runAsGroup", sc["runAsUser"]))) if "runAsUser" in sc else None
    pre_stop = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    probe = ((c.get("readinessProbe") or {}).get("httpGet")) or None
    return SidecarSpec(
        command=list(c.get("command") or []),
        args=list(c.get("args") or []),
        mounts=mounts,
        run_as=run_as,
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        pre_stop_sleep=float(pre_stop),
        grace=float(pod.get("terminationGracePeriodSeconds", 30)),
        readiness=(probe["path"], int(probe["port"])) if probe else None,
        annotations=dict((template.get("metadata") or {}).get("annotations") or {}),
        sysctls={x["name"]: str(x["value"]) for x in (pod.get("securityContext") or {}).get("sysctls", [])},
        env=list(c.get("env") or []),
    )
