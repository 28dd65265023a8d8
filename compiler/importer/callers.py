"""VirtualService matches on the calling workload (`sourceLabels`, `sourceNamespace`, a match's own
`gateways`) -> `match.callers`.

Istio's control plane leaves such a route out of every proxy whose workload the match does not select; a
meshc rule with `callers` is likewise left out of every other caller's sidecar (compiler/policy/caller.py).
The callers are the meshc Services whose pods the match selects (from the Deployments read), only some of
their versions when the labels select only some of their Deployments, and the meshc Gateways whose Istio
Gateway selects pods with those labels, if the VirtualService is bound to them (Istio applies a VirtualService
without `gateways` at sidecars only). A match's `gateways` names Gateways (callers: those Gateways) or `mesh`
(every sidecar: the Services). Only callers that call the route's service are listed (a Service's
`calls`, a Gateway's routes), so they are found once every document is built (`resolve`, after `calls`).

A caller's version is matched by the caller's sidecar, which reads its pod's `version` label: that needs the
caller in pods, which is where the import's output runs (its Mesh keeps the wildcard sidecar address).
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.importer.model import Context, Doc, Workload, name_of
from compiler.importer.read import Resource

KEYS = ("sourceLabels", "sourceNamespace", "gateways")


@dataclass
class Pending:
    """A match of a rule whose `callers` are given once every document is built."""

    res: Resource
    path: tuple
    """The match (`spec.http[i].match[j]`)."""
    labels: dict | None
    namespace: str | None
    gateways: list[str] | None
    """A match's own `gateways`: `mesh` is every sidecar (every Service), other names those Gateways only."""
    match: dict
    """The rule's `match`, whose `callers` entry is filled in."""
    service: str
    """The Route's service (or ExternalService)."""


def defer(res: Resource, path: tuple, m: dict, match: dict, service: str, ctx: Context) -> None:
    """Keep a match with `sourceLabels`, `sourceNamespace` or its own `gateways` for `resolve`; `callers` is
    its first key."""
    labels, namespace, gateways = m.get("sourceLabels"), m.get("sourceNamespace"), m.get("gateways")
    if labels is not None and (not isinstance(labels, dict) or not labels):
        ctx.refuse(res, path + ("sourceLabels",), "labels as a map of label name to value")
        return
    if gateways is not None and (not isinstance(gateways, list) or not gateways):
        ctx.refuse(res, path + ("gateways",), "a list of gateway names (or mesh)")
        return
    if labels is None and namespace is None and gateways is None:  # written empty: no condition
        return
    match["callers"] = []
    ctx.pending_callers.append(Pending(
        res, path, {str(k): str(v) for k, v in labels.items()} if labels else None,
        str(namespace) if namespace is not None else None,
        [str(g) for g in gateways] if gateways is not None else None, match, service))


def resolve(ctx: Context) -> None:
    """Fill in every deferred match's `callers`; a match that selects no caller of its service is left out
    (listed: it would match no request)."""
    for p in ctx.pending_callers:
        route = _route_of(ctx, p.service)
        rules = route.body["rules"] if route is not None else []
        index = next((i for i, r in enumerate(rules) if r.get("match") is p.match), None)
        if index is None:  # the match was left out already (another condition of it is not imported)
            continue
        key = next(k for k, v in zip(KEYS, (p.labels, p.namespace, p.gateways)) if v is not None)
        try:
            callers, said = _callers(p, ctx)
            why = (f"{said or _nobody(p)}: the rule would match no call to {p.service} (a Route rule's callers "
                   "are Services and Gateways that call it)")
        except Inexact as exc:
            callers, why = [], f"{exc}: meshc callers are services and their versions"
        if not callers:
            ctx.refuse(p.res, p.path + (key,), f"{_what(p)}: {why}")
            ctx.refuse(p.res, p.path, "this match is left out as a whole (a condition of it is not imported)")
            del rules[index]
            if not rules:
                _drop(ctx, route)
            continue
        if _every_caller(p, callers, ctx):  # `gateways: [mesh]` where no Gateway routes to the service
            del p.match["callers"]
            if not p.match:
                del rules[index]["match"]
            said = f"every caller of {p.service} (no Gateway routes to it): no callers needed"
        else:
            p.match["callers"] = callers
        route.comments.append(f"callers from {_what(p)} ({p.res.where(*p.path)}): {said}")


def _every_caller(p: Pending, callers: list, ctx: Context) -> bool:
    """Only `gateways` limits the match, and every Service and Gateway that calls the service is a caller."""
    if p.labels is not None or p.namespace is not None:
        return False
    everyone = [w.name for w in ctx.workloads.values() if p.service in (w.service.get("calls") or [])]
    everyone += [d.body["name"] for d in ctx.edge if d.body.get("kind") == "Gateway"
                 and any(r.get("to") == p.service for r in d.body.get("routes") or [])]
    return set(everyone) == set(callers)


def _nobody(p: Pending) -> str:
    if p.labels is not None:
        where = f" in namespace {p.namespace}" if p.namespace is not None else " the import read"
        return f"no Deployment or Gateway{where} has these labels"
    if p.namespace is not None:
        return f"no Service or Gateway the import read is in namespace {p.namespace}"
    if "mesh" in (p.gateways or []):
        return "no Service calls it and no Gateway of these names routes to it"
    return "no Gateway of these names routes to it"


def _what(p: Pending) -> str:
    parts = []
    if p.labels is not None:
        parts.append("sourceLabels " + ", ".join(f"{k}={v}" for k, v in p.labels.items()))
    if p.namespace is not None:
        parts.append(f"sourceNamespace {p.namespace}")
    if p.gateways is not None:
        parts.append(f"gateways {', '.join(p.gateways)}")
    return " and ".join(parts)


def _callers(p: Pending, ctx: Context) -> tuple[list, str]:
    """The callers (names or {service, versions}) and how they were found, for the comment or the refusal."""
    found: list = []
    said: list[str] = []
    skipped: list[str] = []
    for wl in sorted(ctx.workloads.values(), key=lambda w: w.name):
        if wl.name == p.service or (p.namespace is not None and wl.namespace != p.namespace):
            continue
        if p.gateways is not None and "mesh" not in p.gateways:
            continue
        entry, how = _service_entry(wl, p.labels)
        if entry is None:
            if how:
                skipped.append(how)
            continue
        if p.service not in (wl.service.get("calls") or []):
            skipped.append(f"{wl.name} does not call {p.service}")
            continue
        found.append(entry)
        said.append(how)
    for gw in (d.body for d in ctx.edge if d.body.get("kind") == "Gateway"):
        name = gw["name"]
        if p.namespace is not None and gw.get("namespace", "default") != p.namespace:
            continue
        if p.gateways is not None and name not in {name_of(g.split("/")[-1]) for g in p.gateways if g != "mesh"}:
            continue
        selector = ctx.gateway_selectors.get(name, {})
        if p.labels is not None and not (selector and _within(p.labels, selector)):
            continue
        if not any(r.get("to") == p.service for r in gw.get("routes") or []):
            skipped.append(f"Gateway {name} routes nothing to {p.service}")
            continue
        if p.gateways is None and name not in _bound(p.res):
            skipped.append(f"Gateway {name}: the VirtualService is not bound to it (Istio applies it at sidecars only)")
            continue
        found.append(name)
        said.append(f"Gateway {name}" + (f" (its Istio Gateway selects the pods labelled "
                                          f"{', '.join(f'{k}={v}' for k, v in selector.items())})"
                                          if p.labels is not None else ""))
    if not found:
        return [], "; ".join(skipped)
    text = "; ".join(said)
    if p.namespace is not None:
        text += f" (the Services and Gateways in namespace {p.namespace} that call {p.service})"
    if skipped:
        text += "; left out: " + "; ".join(skipped)
    return found, text


def _bound(res: Resource) -> set[str]:
    """The meshc Gateways a VirtualService is bound to (its `gateways`; none: only `mesh`, every sidecar)."""
    return {name_of(str(g).split("/")[-1]) for g in res.spec.get("gateways") or ["mesh"] if g != "mesh"}


def _service_entry(wl: Workload, labels: dict | None):
    """This service as a caller the labels select: its name (every version), {service, versions} (some), or
    None with why (the labels select only pods that are no meshc version) or None with "" (no pod of it)."""
    if labels is None:
        return wl.name, wl.name
    pods = wl.pods or [("", dict(wl.labels))]  # no Deployment read: its pods have its selector's labels
    chosen = [(dep, pod) for dep, pod in pods if _within(labels, pod)]
    if not chosen:
        return None, ""
    deployments = ", ".join(dep for dep, _ in chosen if dep)
    versions = list(wl.service.get("versions") or {})
    if len(chosen) == len(pods):
        return wl.name, f"{wl.name}, every version" + (f" (Deployment {deployments})" if deployments else "")
    if not versions:
        raise Inexact(f"they select only some pods of {wl.name} (Deployment {deployments}), which has no versions "
                      "to name them by")
    picked = sorted({v for _, pod in chosen for v in _versions_of(wl, pod, versions)})
    if not picked:
        return None, f"the pods of Deployment {deployments} are in no version of {wl.name}"
    if set(picked) == set(versions):
        return wl.name, f"{wl.name}, every version (Deployment {deployments})"
    return ({"service": wl.name, "versions": picked},
            f"{wl.name} {', '.join(picked)} (Deployment {deployments}; its sidecar reads the pod's version label)")


class Inexact(Exception):
    """The labels select pods that no `callers` entry names exactly: the match is not imported (never widened)."""


def _versions_of(wl: Workload, pod: dict, versions: list[str]) -> list[str]:
    """The meshc versions a Deployment's pods are: the subsets whose labels they have, else their `version`."""
    if wl.subsets:
        return [v for v, labels in wl.subsets.items() if labels and _within(labels, pod)]
    version = name_of(pod["version"]) if "version" in pod else None
    return [version] if version in versions else []


def _within(labels: dict, pod: dict) -> bool:
    return all(pod.get(k) == v for k, v in labels.items())


def _route_of(ctx: Context, service: str) -> Doc | None:
    docs = ctx.docs.get(service, []) + ctx.edge
    return next((d for d in docs if d.body.get("kind") == "Route" and d.body.get("service") == service), None)


def _drop(ctx: Context, route: Doc) -> None:
    for docs in list(ctx.docs.values()) + [ctx.edge]:
        docs[:] = [d for d in docs if d is not route]
