"""What a new build means for a running mesh, and the order its files must land in.

Pure functions of two sets of output files (the previous build's, read from
disk by the writer, and the new one), keyed by path relative to the output
folder. Envoy reloads listeners.yaml, clusters.yaml, routes-*.yaml and sds-*.yaml
when a file is moved into its watched folder; it reads bootstrap.yaml only when
it starts. So:

- `changes` says, per sidecar: added, removed, unchanged, reload (which files),
  or restart (which bootstrap parts changed, and so why; in pods also a change
  of the service's Deployment patch, which makes Kubernetes replace its pods,
  e.g. when its sidecar first reads its pod's version for caller-version rules);
- `steps` orders the changed files so that what a change needs downstream
  lands before what uses it, and what a change removes goes last
  (make-before-break):

  1. secrets;
  2. clusters, as the union of old and new (nothing in use disappears yet);
  3. the callee side: listeners and inbound routes that only add or change
     (a new version's inbound route exists before any caller picks it);
  4. the caller side: outbound routes (callers now pick the new versions and
     stop picking the removed ones);
  5. the callee side that drops clusters (a removed version's inbound route
     goes once no caller picks it any more);
  6. clusters as built (the removed ones go);
  7. bootstraps (files outside the sidecar folders come with the last step).

  The writer waits a moment (`settle`) between steps, so that every sidecar
  has applied one step before the next lands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import yaml

KUBERNETES_BASE = "kubernetes/kustomization.yaml"  # compiler.kubernetes.layout.BASE
KUBERNETES_PATCH = "kubernetes/sidecar/patch-{}.yaml"  # compiler.kubernetes.layout: a service's Deployment patch
CALLER_VERSION_ENV = "MESHC_VERSION"  # compiler.ir.CALLER_VERSION_ENV
CALLER_VERSION_KEY = "meshc.caller_version"  # compiler.ir.CALLER_VERSION_KEY
ANNOTATION_BOOTSTRAP = "meshc.dev/bootstrap-sha256"  # compiler.kubernetes.layout: follows bootstrap.yaml

BOOTSTRAP = "bootstrap.yaml"
CLUSTERS = "clusters.yaml"
LISTENERS = "listeners.yaml"

# Top-level bootstrap fields -> why a change to them needs a restart (Envoy reads them only at start).
_RESTART_REASONS = {
    "node": "node identity or metadata changed",
    "admin": "admin address or port changed",
    "stats_config": "metrics stats filter (keep_prefixes) changed",
    "dynamic_resources": "config directory changed (where the sidecar reads its files)",
    "static_resources": "static resources changed (--static output has no hot reload)",
    "overload_manager": "connection limit changed",
    "layered_runtime": "runtime layers changed (a gateway listener's connection limit)",
}


@dataclass(frozen=True)
class SidecarChange:
    service: str
    action: str  # added | removed | unchanged | reload | restart
    files: tuple[str, ...] = ()  # changed, added or removed files of the sidecar (reload/restart)
    why: tuple[str, ...] = ()  # restart: the reasons

    def as_json(self) -> dict:
        out: dict = {"action": self.action}
        if self.files:
            out["files"] = list(self.files)
        if self.why:
            out["why"] = list(self.why)
        return out

    def describe(self) -> str:
        if self.action == "reload":
            return f"{self.service}: reloaded ({', '.join(self.files)})"
        if self.action == "restart":
            return f"{self.service}: RESTART NEEDED: {'; '.join(self.why)} (changed: {', '.join(self.files)})"
        return f"{self.service}: {self.action}"


def _sidecar(rel: str) -> str | None:
    """The sidecar whose folder holds `rel` (`<service>/<file>`), or None for a file outside every sidecar
    folder: the source map, and the Kubernetes manifests (`kubernetes/kustomization.yaml` has two parts
    like a sidecar file, but no service may be named `kubernetes` when they are written: E401)."""
    parts = PurePosixPath(rel).parts
    return parts[0] if len(parts) == 2 and rel != KUBERNETES_BASE else None


def _load(data: bytes):
    return yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def restart_reasons(old: bytes, new: bytes) -> list[str]:
    """Why a changed bootstrap needs a restart: the top-level parts that differ."""
    try:
        a, b = _load(old) or {}, _load(new) or {}
    except yaml.YAMLError:
        return ["bootstrap changed"]
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [_RESTART_REASONS.get(k, f"bootstrap '{k}' changed") for k in keys] or ["bootstrap comments changed"]


def changes(old: dict[str, bytes] | None, new: dict[str, bytes]) -> list[SidecarChange]:
    """Per sidecar, sorted by name. `old` None: there was no previous output (everything is added)."""
    old = old or {}
    by_sidecar: dict[str, tuple[dict, dict]] = {}
    for files, side in ((old, 0), (new, 1)):
        for rel, data in files.items():
            name = _sidecar(rel)
            if name is not None:
                by_sidecar.setdefault(name, ({}, {}))[side][PurePosixPath(rel).name] = data
    out = []
    for name in sorted(by_sidecar):
        before, after = by_sidecar[name]
        if BOOTSTRAP not in before:
            out.append(SidecarChange(name, "added"))
            continue
        if BOOTSTRAP not in after:
            out.append(SidecarChange(name, "removed"))
            continue
        touched = tuple(sorted(f for f in set(before) | set(after) if before.get(f) != after.get(f)))
        patch = KUBERNETES_PATCH.format(name)
        pods = pod_reasons(name, old.get(patch), new.get(patch), after.get("routes-outbound.yaml"))
        if BOOTSTRAP in touched:
            why = restart_reasons(before[BOOTSTRAP], after[BOOTSTRAP]) + pods
            out.append(SidecarChange(name, "restart", touched, tuple(why)))
        elif pods:
            out.append(SidecarChange(name, "restart", touched, tuple(pods)))
        elif not touched:
            out.append(SidecarChange(name, "unchanged"))
        else:
            out.append(SidecarChange(name, "reload", touched))
    return out


def _sidecar_env(patch) -> set[str]:
    """The environment variable names of the sidecar container in a Deployment patch."""
    spec = (((patch or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    return {e.get("name") for c in containers if isinstance(c, dict) for e in c.get("env") or [] if isinstance(e, dict)}


def _without_template_hash(patch):
    """A Deployment patch without the annotation that follows bootstrap.yaml (a bootstrap change says why)."""
    if not isinstance(patch, dict):
        return patch
    out = json.loads(json.dumps(patch))
    annotations = ((out.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(ANNOTATION_BOOTSTRAP, None)
    return out


def _caller_version_rules(routes: bytes | None) -> list[str]:
    """The policy places (`Route/ratings/rules[0]`) of the outbound routes that match the caller's version."""
    found = []
    for config in _resources(routes) if routes is not None else []:
        for vhost in config.get("virtual_hosts") or []:
            for route in vhost.get("routes") or []:
                states = (route.get("match") or {}).get("filter_state") or []
                if any(f.get("key") == CALLER_VERSION_KEY for f in states if isinstance(f, dict)):
                    source = (((route.get("metadata") or {}).get("filter_metadata") or {}).get("meshc") or {}).get("source", "")
                    found.append(source.split("#", 1)[-1] or vhost.get("name", "?"))
    return list(dict.fromkeys(found))


def pod_reasons(name: str, old: bytes | None, new: bytes | None, routes: bytes | None) -> list[str]:
    """In pods: why a change of the service's Deployment patch (kubernetes/sidecar/patch-<service>.yaml) replaces
    its pods. Kubernetes rolls the Deployment on `kubectl apply` (a new pod template), while its ConfigMap's files
    reach the running pods without one. Empty when the patch did not change (or only with bootstrap.yaml)."""
    if old is None or new is None or old == new:
        return []
    try:
        a, b = _load(old), _load(new)
    except yaml.YAMLError:
        a, b = None, None
    patch = KUBERNETES_PATCH.format(name)
    if a is not None and _without_template_hash(a) == _without_template_hash(b):
        return []
    gained = CALLER_VERSION_ENV in _sidecar_env(b) and CALLER_VERSION_ENV not in _sidecar_env(a)
    lost = CALLER_VERSION_ENV in _sidecar_env(a) and CALLER_VERSION_ENV not in _sidecar_env(b)
    if gained:
        rules = _caller_version_rules(routes)
        which = f" ({', '.join(rules)})" if rules else ""
        return [f"its sidecar now reads its pod's version label ({CALLER_VERSION_ENV}, {patch}): Kubernetes replaces "
                f"{name}'s pods on kubectl apply; until a pod is replaced its sidecar has no version, so the rules "
                f"for some caller versions{which} do not match its calls (they fall through to the next rule)"]
    if lost:
        return [f"its sidecar no longer reads its pod's version label ({CALLER_VERSION_ENV}, {patch}): Kubernetes "
                f"replaces {name}'s pods on kubectl apply"]
    return [f"its pods' Deployment patch changed ({patch}): Kubernetes replaces {name}'s pods on kubectl apply"]


# --------------------------------------------------------------------------
# Write order
# --------------------------------------------------------------------------


def _cluster_refs(node, out: set[str]) -> set[str]:
    """Every cluster name a listener or route resource refers to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("cluster", "collector_cluster", "cluster_name") and isinstance(value, str):
                out.add(value)
            elif key == "weighted_clusters" and isinstance(value, dict):
                out.update(c.get("name", "") for c in value.get("clusters", []))
            else:
                _cluster_refs(value, out)
    elif isinstance(node, list):
        for item in node:
            _cluster_refs(item, out)
    return out


def _resources(data: bytes) -> list[dict]:
    """The resources of a file-based xDS response; none when it is not one (a file edited by hand)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return []
    resources = doc.get("resources") if isinstance(doc, dict) else None
    return [r for r in resources if isinstance(r, dict)] if isinstance(resources, list) else []


def _drops_clusters(old: bytes | None, new: bytes) -> bool:
    if old is None:
        return False
    return bool(_cluster_refs(_resources(old), set()) - _cluster_refs(_resources(new), set()))


def _cluster_union(old: bytes, new: bytes) -> bytes | None:
    """clusters.yaml holding the new clusters plus the old ones it drops; None when it drops none."""
    new_doc = json.loads(new)
    names = {c.get("name") for c in new_doc["resources"]}
    kept = [c for c in _resources(old) if c.get("name") not in names]
    if not kept:
        return None
    resources = new_doc["resources"] + kept
    return (json.dumps({"version_info": new_doc["version_info"] + "+transition", "resources": resources}, indent=2)
            + "\n").encode()


def _kind(rel: str) -> str:
    name = PurePosixPath(rel).name
    if _sidecar(rel) is None:
        return "other"
    if name.startswith("sds-"):
        return "secret"
    if name == CLUSTERS:
        return "clusters"
    if name == LISTENERS or name == "routes-inbound.yaml":
        return "callee"
    if name.startswith("routes-"):
        return "caller"
    return "other"


def steps(old: dict[str, bytes], new: dict[str, bytes]) -> list[dict[str, bytes]]:
    """The changed files of `new` (against `old`) in the steps described above; empty steps left out."""
    secrets, union, callee_add, caller, callee_drop, final, rest, outside = ({} for _ in range(8))
    for rel in sorted(new):
        data, before = new[rel], old.get(rel)
        if before == data:
            continue
        kind = _kind(rel)
        if kind == "secret":
            secrets[rel] = data
        elif kind == "clusters":
            transition = _cluster_union(before, data) if before is not None else None
            if transition is None:
                union[rel] = data
            else:
                union[rel] = transition
                final[rel] = data
        elif kind == "callee":
            (callee_drop if _drops_clusters(before, data) else callee_add)[rel] = data
        elif kind == "caller":
            caller[rel] = data
        elif _sidecar(rel) is None:
            outside[rel] = data  # read by no sidecar (the source map): no step of its own
        else:
            rest[rel] = data
    ordered = [s for s in (secrets, union, callee_add, caller, callee_drop, final, rest) if s]
    if outside:
        ordered[-1:] = [{**(ordered[-1] if ordered else {}), **outside}]
    return ordered


@dataclass
class Rollout:
    """The report of one write: what each sidecar must do."""

    sidecars: list[SidecarChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.sidecars)

    def as_json(self) -> dict:
        return {c.service: c.as_json() for c in self.sidecars}

    def lines(self) -> list[str]:
        return [c.describe() for c in self.sidecars]
