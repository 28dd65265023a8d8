"""`meshc import istio`: Istio resources (with the Kubernetes Services and Deployments they name) -> meshc
policy files a person would have written, plus the list of what could not be carried over.

Stages: read (files -> resources with positions) -> workloads (Kubernetes Services, Deployments) ->
externals (ServiceEntry), gateways -> per kind mapping (routes, traffic, security, edge) -> write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compiler.importer import callers, edge, gateway_rules, routes, security, traffic, workloads
from compiler.importer.model import Context, Doc
from compiler.importer.read import Problem, read_files
from compiler.importer.write import render


@dataclass
class ImportResult:
    files: dict[str, str]
    """Policy file name -> text."""
    problems: list[Problem]
    """What was not carried over: the import fails unless `--partial`."""
    notes: list[Problem]
    """Carried over with a choice to review."""


def import_istio(paths: list[Path], mesh_name: str = "mesh") -> ImportResult:
    resources, problems, notes = read_files([Path(p) for p in paths])
    ctx = Context(mesh_name)
    ctx.problems.extend(problems)
    ctx.notes.extend(notes)
    policies: dict = {}
    calls: dict[str, tuple[int, list[str]]] = {}
    steps = [
        ("Service", workloads.import_service), ("ServiceEntry", edge.import_service_entry),
        ("Gateway", edge.import_gateway), ("DestinationRule", traffic.import_destination_rule),
        ("VirtualService", routes.import_virtual_service), ("PeerAuthentication", security.import_peer_authentication),
        ("AuthorizationPolicy", lambda r, c: security.import_authorization_policy(r, c, policies)),
        ("RequestAuthentication", security.import_request_authentication),
        ("Sidecar", lambda r, c: edge.import_sidecar(r, c, calls)),
    ]
    deployments = [r for r in resources if r.kind == "Deployment"]
    for kind, step in steps:
        for res in (r for r in resources if r.kind == kind):
            _guarded(res, ctx, lambda r=res, s=step: s(r, ctx) if kind != "Service" else s(r, deployments, ctx))
    gateway_rules.merge(ctx)  # every VirtualService read: the gateway rules go before the mesh rules
    _calls(ctx, calls)
    callers.resolve(ctx)  # needs every Service's calls and every Gateway's routes
    _mesh_defaults(ctx)
    docs = [Doc("mesh.yaml", ctx.mesh, ctx.mesh_comments)]
    for name in sorted(ctx.docs):
        docs.extend(ctx.docs[name])
    docs.extend(ctx.edge)
    for gw in (d for d in ctx.edge if d.body.get("kind") == "Gateway"):
        if not gw.body.get("routes"):
            gw.body.pop("routes", None)
    key = lambda p: (p.source.file, p.source.line, p.source.column, p.message)  # noqa: E731
    return ImportResult(render(docs), sorted(ctx.problems, key=key), sorted(ctx.notes, key=key))


def _guarded(res, ctx: Context, step) -> None:
    """A resource whose fields do not have the shapes Istio or Kubernetes define is listed, never a traceback;
    what it had added so far stays (each field was checked as it was read)."""
    try:
        step()
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, StopIteration) as exc:
        ctx.refuse(res, ("spec",) if "spec" in res.data else (), f"not the shape {res.kind} has in its API "
                   f"({type(exc).__name__}: {exc}); check it with kubectl apply --dry-run=server")


def _calls(ctx: Context, calls: dict[str, tuple[int, list[str]]]) -> None:
    """`calls` from Sidecar egress hosts; without a Sidecar, every other service and ExternalService (as in Istio)."""
    everyone = sorted(ctx.workloads) + sorted(ctx.externals)
    for name, wl in ctx.workloads.items():
        if name in calls:
            listed = calls[name][1]
            why = "calls: the egress hosts of its Sidecar"
        else:
            listed = [n for n in everyone if n != name]
            why = "calls: every other service (Istio lets any workload call any service; narrow it to what it calls)"
        if listed:
            wl.service["calls"] = listed
            ctx.docs[name][0].comments.append(why)


def _mesh_defaults(ctx: Context) -> None:
    mesh = ctx.mesh
    if "mtls" not in mesh:
        mesh["mtls"] = {"mode": "permissive"}
        ctx.mesh_comments.append("mtls permissive: Istio's default without a mesh-wide PeerAuthentication")
    order = ("kind", "name", "trust_domain", "mtls", "authorization", "egress")
    ctx.mesh = {k: mesh[k] for k in order if k in mesh}
