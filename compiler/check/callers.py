"""Route rules for some callers only (`match.callers`): each caller must exist, call, and have the versions named.

A rule that names its callers is put only on those callers' sidecars (compiler/policy/caller.py): the caller's
sidecar applies the callee's Route to the calls its own app makes. So a caller must be something with a sidecar
that calls this Route's service, and a caller version must be something its sidecar can tell:

- E255 a caller that is neither a Service nor a Gateway (an ExternalService has no sidecar: it is called, it
  never calls through the mesh);
- E256 a caller that never calls this Route's service: a Service whose `calls` does not name it, a Gateway none
  of whose routes leads to it (mirror copies are not calls). The rule would be on no sidecar for that caller;
  meshc never ignores a setting silently;
- E257 caller versions that do not exist: on a Gateway (it has no versions), on a Service that declares none,
  or a version the Service does not declare;
- E258 caller versions that no sidecar can tell apart: a caller that is not in pods (on one host, and in
  Docker, every version of a service shares one sidecar, which cannot tell which version's app opened a
  connection), or a version that lists its own `endpoints` (its instances are not pods: no sidecar of that
  version). In pods each pod's sidecar reads its pod's `version` label and matches on it.

A Route that E207 (unknown service) or E208 (tcp: connections carry no request to match) refuses is skipped.
"""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic, did_you_mean
from compiler.policy import Route
from compiler.policy.caller import Caller
from compiler.policy.resolved import Resolved


def check_callers(view: Resolved) -> Iterator[Diagnostic]:
    for route in view.policy.routes:
        if not _routes_requests(view, route.service):
            continue
        for i, rule in enumerate(route.rules):
            for k, caller in enumerate(rule.match.callers):
                yield from _caller(view, route, i, k, caller)


def _routes_requests(view: Resolved, name: str) -> bool:
    """The Route's service is known and http or grpc: its callers' sidecars match requests against its rules."""
    if name in view.views:
        return view.views[name].listener == "http"
    return name in view.externals and view.externals[name].listener == "http"


def _caller(view: Resolved, route: Route, i: int, k: int, caller: Caller) -> Iterator[Diagnostic]:
    name, callee = caller.service, route.service
    path = f"rules[{i}].match.callers[{k}]"
    where = route.where("rules", i, "match", "callers", k)
    if name in view.views:
        if callee == name:
            yield Diagnostic(
                "E256",
                f"'{name}' is this Route's own service: its app reaches its own port directly, never through a "
                "Route, so the rule would apply nowhere for it; name a service or gateway that calls it",
                where, route.subject, path,
            )
        elif callee not in view.views[name].service.calls:
            yield Diagnostic(
                "E256",
                f"'{name}' does not call '{callee}' (its `calls` does not name it), so its sidecar has no route to "
                f"'{callee}' and the rule would apply nowhere for it: add '{callee}' to the calls of '{name}', or "
                "remove this caller",
                where, route.subject, path,
            )
        yield from _service_versions(view, route, i, k, caller)
        return
    if name in view.gateways:
        if callee not in view.gateways[name].destinations:
            yield Diagnostic(
                "E256",
                f"gateway '{name}' does not route to '{callee}' (none of its routes leads there), so the rule would "
                f"apply nowhere for it: add a route to '{callee}' to the gateway, or remove this caller",
                where, route.subject, path,
            )
        if caller.versions:
            yield Diagnostic(
                "E257",
                f"gateway '{name}' has no versions: all its requests come from one proxy; write the gateway's name "
                f"alone (`callers: [{name}]`)",
                route.where("rules", i, "match", "callers", k, "versions"), route.subject, f"{path}.versions",
            )
        return
    if name in view.externals:
        message = (
            f"'{name}' is an ExternalService: it has no sidecar and does not call through the mesh, so no rule "
            "can be for its calls; name the Services or Gateways that call this service"
        )
    else:
        known = sorted(set(view.views) | set(view.gateways))
        message = (
            f"unknown caller '{name}'{did_you_mean(name, known)}: a caller is a Service or a Gateway that calls "
            f"'{callee}'"
        )
    yield Diagnostic("E255", message, where, route.subject, path)


def _service_versions(view: Resolved, route: Route, i: int, k: int, caller: Caller) -> Iterator[Diagnostic]:
    if not caller.versions:
        return
    name = caller.service
    sv = view.views[name]
    path = f"rules[{i}].match.callers[{k}].versions"
    at = ("rules", i, "match", "callers", k, "versions")
    if not sv.service.versions:
        yield Diagnostic(
            "E257",
            f"service '{name}' declares no versions, so its calls cannot be told apart by version: declare its "
            f"versions, or write the service alone (`callers: [{name}]`)",
            route.where(*at), route.subject, path,
        )
        return
    for j, version in enumerate(caller.versions):
        if version not in sv.versions:
            yield Diagnostic(
                "E257",
                f"unknown version '{version}' of caller '{name}'{did_you_mean(version, sv.versions)} "
                f"(known: {', '.join(sv.versions)})",
                route.where(*at, j), route.subject, f"{path}[{j}]",
            )
    if sv.in_pods is False:
        yield Diagnostic(
            "E258",
            f"'{name}' does not run in pods: on one host (and in Docker) all its versions share one sidecar, which "
            "cannot tell which version's app is calling, so the rule could not be limited to these versions; caller versions work in pods (sidecar "
            "address 0.0.0.0, the default, with the Mesh's `kubernetes` settings: each pod's sidecar reads its pod's "
            f"`version` label), else write the service alone (`callers: [{name}]`)",
            route.where(*at), route.subject, path,
        )
        return
    for j, version in enumerate(caller.versions):
        if version in sv.versions and version not in sv.app_port_versions:
            yield Diagnostic(
                "E258",
                f"version '{version}' of '{name}' lists its own endpoints, so its instances are not pods and have "
                "no sidecar of that version to tell their calls apart; name versions that run in pods (no "
                "`endpoints`)",
                route.where(*at, j), route.subject, f"{path}[{j}]",
            )
