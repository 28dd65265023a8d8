"""Structure and references: one Mesh, unique names, services and versions named exist, and
each version has somewhere to send its traffic (its own endpoints or the service's app_port).
`calls` may name Services and ExternalServices."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from compiler.diagnostics import Diagnostic, did_you_mean
from compiler.policy.resolved import Resolved, ServiceView

T = TypeVar("T")


def repeats(docs: Iterable[T], key: Callable[[T], str]) -> Iterator[tuple[T, T]]:
    """(document, the first document with its key) for each document whose key an earlier one has."""
    first: dict[str, T] = {}
    for doc in docs:
        if first.setdefault(key(doc), doc) is not doc:
            yield doc, first[key(doc)]


def check_structure(view: Resolved) -> Iterator[Diagnostic]:
    policy = view.policy
    meshes = policy.meshes
    if not meshes:
        first = policy.documents[0].source if policy.documents else None
        yield Diagnostic("E201", "no Mesh document: a policy directory needs exactly one (kind: Mesh)", first)
    for extra in meshes[1:]:
        yield Diagnostic(
            "E202",
            "a second Mesh (the first is at {0}); exactly one is allowed",
            extra.source,
            extra.subject,
            refs=(meshes[0].source,),
        )
    for svc, first in repeats(policy.services, lambda s: s.name):
        yield Diagnostic(
            "E203",
            "duplicate service name (first defined at {0})",
            svc.where("name"),
            svc.subject,
            refs=(first.where("name"),),
        )
    for route, first in repeats(policy.routes, lambda r: r.service):
        yield Diagnostic(
            "E204",
            "a second Route for this service (the first is at {0}); put all rules in one Route, they run in order",
            route.where("service"),
            route.subject,
            refs=(first.where("service"),),
        )


def check_references(view: Resolved) -> Iterator[Diagnostic]:
    services = view.services
    # a service calls Services and ExternalServices (compiler/check/external.py), never a Gateway
    names = sorted(set(services) | set(view.externals))

    for svc in view.policy.services:
        for i, dep in enumerate(svc.calls):
            if dep == svc.name:
                yield Diagnostic("E206", "a service cannot call itself through its own sidecar", svc.where("calls", i), svc.subject, f"calls[{i}]")
            elif dep not in services and dep not in view.externals:
                yield Diagnostic(
                    "E205",
                    f"'{dep}' is a Gateway: it takes requests from outside the mesh; call the service it routes to"
                    if dep in view.gateways
                    else f"unknown service '{dep}'{did_you_mean(dep, names)}",
                    svc.where("calls", i),
                    svc.subject,
                    f"calls[{i}]",
                )
        if svc.default_version is not None and svc.default_version not in svc.version_names:
            yield Diagnostic(
                "E211",
                f"unknown version '{svc.default_version}'{did_you_mean(svc.default_version, svc.version_names)} "
                f"(known: {', '.join(svc.version_names)})",
                svc.where("default_version"),
                svc.subject,
                "default_version",
            )
    for sv in view.all_services:
        yield from _app_port(sv)


def _app_port(sv: ServiceView) -> Iterator[Diagnostic]:
    """app_port is the endpoint of the versions that list none: needed for them, refused without them."""
    svc = sv.service
    if svc.app_port is not None:
        if not sv.app_port_versions:
            yield Diagnostic(
                "E281",
                "app_port is not used: every version lists its endpoints; remove it",
                svc.where("app_port"),
                svc.subject,
                "app_port",
            )
        return
    for version in sv.app_port_versions:
        if version in svc.versions:
            yield Diagnostic(
                "E215",
                f"app_port is needed: version '{version}' lists no endpoints, so it is the app on 127.0.0.1:<app_port>",
                svc.where("versions", version),
                svc.subject,
                f"versions.{version}",
            )
        else:
            yield Diagnostic(
                "E215",
                f"app_port is needed: the service lists no versions, so its one version '{version}' "
                "is the app on 127.0.0.1:<app_port>",
                svc.source,
                svc.subject,
            )

