"""Zero-trust meaning: callers can speak to what they call, authorization names real, identifiable callers.

`from` may name a Service or a Gateway (each has a mesh identity); a RequestAuthentication may be for a
Service or a Gateway (tokens verified at the edge). An ExternalService has no sidecar: policies for it and
`from` naming it are refused (E526, E527, E528), as is an AuthorizationPolicy for a Gateway (E517)."""

from __future__ import annotations

from typing import Iterator

from compiler.check.shadowing import covers_path
from compiler.diagnostics import Diagnostic, Severity, did_you_mean
from compiler.policy.resolved import Resolved, ServiceView


def check_mtls(view: Resolved) -> Iterator[Diagnostic]:
    """A caller without certificates cannot reach a destination that accepts only mTLS."""
    if view.mesh is None:
        return
    for sv in view.all_services:
        svc = sv.service
        if sv.mtls != "disable":
            continue
        for i, dep in enumerate(svc.calls):
            target = view.views.get(dep)
            if target is not None and target.mtls == "strict":
                yield Diagnostic(
                    "E240",
                    f"'{svc.name}' has mTLS disabled but '{dep}' accepts only mTLS (strict): its calls would be "
                    f"refused; enable mTLS for '{svc.name}' or make '{dep}' permissive while it migrates",
                    svc.where("calls", i),
                    svc.subject,
                    f"calls[{i}]",
                )


def check_authorization(view: Resolved) -> Iterator[Diagnostic]:
    mesh = view.mesh
    if mesh is None:
        return
    services = view.services
    seen: dict[str, object] = {}
    for ap in view.policy.authorization_policies:
        subject = ap.subject
        if ap.service in seen:
            yield Diagnostic(
                "E243", "a second AuthorizationPolicy for this service (the first is at {0})", ap.where("service"),
                subject, refs=(seen[ap.service].where("service"),),
            )
        seen.setdefault(ap.service, ap)
        target = services.get(ap.service)
        if target is None:
            yield from _not_a_service(view, ap)
            continue
        for kind in ("allow", "deny"):
            for i, rule in enumerate(getattr(ap, kind)):
                for field in ("from", "not_from"):
                    for j, caller in enumerate(getattr(rule, "from_" if field == "from" else field)):
                        yield from _caller(view, ap, kind, i, j, caller, field)
                yield from _namespaces(view, ap, kind, i, rule)
                yield from _unenforceable(ap, kind, i, rule, view[ap.service])
                yield from _needs_identity(ap, kind, i, rule, view[ap.service].mtls)
        for i, allow in enumerate(ap.allow):
            for j, deny in enumerate(ap.deny):
                if _covers(deny, allow, mesh.paths.case_sensitive):
                    yield Diagnostic(
                        "W244",
                        f"deny[{j}] refuses every request this rule allows (deny wins), so it allows nothing",
                        ap.where("allow", i), subject, f"allow[{i}]", severity=Severity.WARNING,
                    )
                    break


def _not_a_service(view: Resolved, ap) -> Iterator[Diagnostic]:
    """An AuthorizationPolicy for something that has no inbound sidecar to enforce it."""
    name, at = ap.service, ap.where("service")
    if name in view.gateways:
        yield Diagnostic(
            "E517",
            f"'{name}' is a Gateway: it takes requests from outside the mesh, which have no mesh identity to "
            f"authorize; verify tokens at the edge with a RequestAuthentication for '{name}', and authorize the "
            f"services behind it with `from: [{name}]`",
            at, ap.subject, "service",
        )
    elif name in view.externals:
        yield Diagnostic(
            "E526",
            f"'{name}' is an ExternalService: it has no sidecar of the mesh to enforce this; a service reaches it "
            "only when its `calls` lists it",
            at, ap.subject, "service",
        )
    else:
        known = sorted(view.services)
        yield Diagnostic("E241", f"unknown service '{name}'{did_you_mean(name, known)}", at, ap.subject, "service")


_IDENTITY = ("from", "namespaces", "not_from", "not_namespaces")
"""Conditions on the caller's certificate."""


def _needs_identity(ap, kind: str, i: int, rule, mtls: str) -> Iterator[Diagnostic]:
    """Conditions on the caller's certificate need mTLS; on a permissive service a plaintext caller has no
    identity, so a deny on who it is, or an allow on who it is not, can be walked around without a sidecar."""
    for field in _IDENTITY:
        names = getattr(rule, "from_" if field == "from" else field)
        if not names:
            continue
        at, path = ap.where(kind, i, field), f"{kind}[{i}].{field}"
        negated = field.startswith("not_")
        if mtls == "disable":
            yield Diagnostic(
                "E242",
                f"'{field}' needs the caller's certificate, but '{ap.service}' has mTLS disabled: "
                "enable mtls (strict or permissive) for it",
                at, ap.subject, path,
            )
            return
        if mtls == "permissive" and (kind == "deny") != negated:
            if negated:
                why = (f"it counts as none of {', '.join(names)}: this rule lets them in too, by calling without "
                       f"a sidecar; make '{ap.service}' strict (or name the callers it allows in '{field[4:]}')")
            else:
                why = (f"this rule cannot stop {', '.join(names)} from calling without its sidecar; make "
                       f"'{ap.service}' strict (or allow-list the callers instead, which refuses plaintext)")
            yield Diagnostic(
                "W246", f"'{ap.service}' is permissive: a plaintext connection has no identity, so {why}",
                at, ap.subject, path, severity=Severity.WARNING,
            )


def _namespaces(view: Resolved, ap, kind: str, i: int, rule) -> Iterator[Diagnostic]:
    """A namespace no Service or Gateway of the mesh is in matches no caller this mesh compiles (W247)."""
    known = sorted({sv.service.namespace for sv in view.all_services} | {g.gateway.namespace for g in view.all_gateways})
    for field in ("namespaces", "not_namespaces"):
        for j, ns in enumerate(getattr(rule, field)):
            if ns not in known:
                yield Diagnostic(
                    "W247",
                    f"no service or gateway of this mesh is in namespace '{ns}'{did_you_mean(ns, known)}: "
                    f"only callers from outside what meshc compiles could match it",
                    ap.where(kind, i, field, j), ap.subject, f"{kind}[{i}].{field}[{j}]", severity=Severity.WARNING,
                )


def _caller(view: Resolved, ap, kind: str, i: int, j: int, caller: str, field: str = "from") -> Iterator[Diagnostic]:
    """`from` (and `not_from`) names a caller by its certificate: a Service or a Gateway (Resolved.identity_of)."""
    if caller in view.services or caller in view.gateways:
        return
    at, path = ap.where(kind, i, field, j), f"{kind}[{i}].{field}[{j}]"
    if caller in view.externals:
        yield Diagnostic(
            "E528",
            f"'{caller}' is an ExternalService: it is outside the mesh, holds no mesh certificate, and never calls "
            "in through a sidecar; name the services (or the Gateway) its requests come through",
            at, ap.subject, path,
        )
        return
    known = sorted(set(view.services) | set(view.gateways))
    yield Diagnostic("E241", f"unknown service '{caller}'{did_you_mean(caller, known)}", at, ap.subject, path)


_CONDITIONS = ("paths", "methods", "not_paths", "not_methods", "headers", "claims")


def _unenforceable(ap, kind: str, i: int, rule, target: ServiceView) -> Iterator[Diagnostic]:
    """A tcp service is authorized per connection, on the caller's identity: its bytes carry no paths,
    methods, headers or tokens, so a rule that needs them could never be enforced as written."""
    for field in _CONDITIONS:
        if getattr(rule, field) and not target.enforces(field):
            yield Diagnostic(
                "E245",
                f"'{field}' cannot apply to tcp service '{ap.service}': a connection is authorized by its "
                "caller only ('from', 'namespaces', 'ip_blocks' and their 'not_' forms)",
                ap.where(kind, i, field), ap.subject, f"{kind}[{i}].{field}",
            )


_NEW = ("namespaces", "ip_blocks", "not_from", "not_namespaces", "not_ip_blocks", "not_paths", "not_methods")
"""Conditions `_covers` does not reason about: a deny rule with any of them is never said to cover."""


def _covers(deny, allow, case_sensitive: bool = True) -> bool:
    """The deny rule provably matches every request the allow rule matches (headers: only when deny has none;
    claims: only when the allow rule requires the same ones; paths as path prefixes, see `covers_path`)."""
    if deny.headers or any(getattr(deny, f) for f in _NEW):
        return False
    if deny.claims and not set(deny.claims.items()) <= set(allow.claims.items()):
        return False
    if deny.from_ and not (allow.from_ and set(allow.from_) <= set(deny.from_)):
        return False
    if deny.methods and not (allow.methods and set(allow.methods) <= set(deny.methods)):
        return False
    if deny.paths:
        if not allow.paths:
            return any(p.prefix == "/" for p in deny.paths)
        return all(
            any(covers_path(d, a, segments=True, case_sensitive=case_sensitive) for d in deny.paths)
            for a in allow.paths
        )
    return True


def check_authentication(view: Resolved) -> Iterator[Diagnostic]:
    services = view.services
    authn: dict[str, object] = {}
    for ra in view.policy.request_authentications:
        subject = ra.subject
        if ra.service in authn:
            yield Diagnostic(
                "E252", "a second RequestAuthentication for this service (the first is at {0})", ra.where("service"),
                subject, refs=(authn[ra.service].where("service"),),
            )
        authn.setdefault(ra.service, ra)
        if ra.service in view.gateways and ra.service not in services:
            pass  # tokens verified at the edge, on every listener of the gateway
        elif ra.service in view.externals and ra.service not in services:
            yield Diagnostic(
                "E527",
                f"'{ra.service}' is an ExternalService: no sidecar of the mesh receives its requests to verify "
                "tokens in; it verifies its callers itself",
                ra.where("service"), subject, "service",
            )
        elif ra.service not in services:
            known = sorted(set(services) | set(view.gateways))
            yield Diagnostic(
                "E253", f"unknown service '{ra.service}'{did_you_mean(ra.service, known)}",
                ra.where("service"), subject, "service",
            )
        elif not view[ra.service].enforces("request_authentication"):
            yield Diagnostic(
                "E254",
                f"'{ra.service}' is a tcp service: no request carries a token to verify; authorize its "
                "callers by certificate instead (AuthorizationPolicy 'from')",
                ra.where("service"), subject, "service",
            )
        names = [p.name for p in ra.providers]
        for i, rule in enumerate(ra.rules):
            for j, name in enumerate(rule.providers):
                if name not in names:
                    yield Diagnostic(
                        "E250", f"unknown provider '{name}'{did_you_mean(name, names)} (known: {', '.join(names)})",
                        ra.where("rules", i, "providers", j), subject, f"rules[{i}].providers[{j}]",
                    )
    for ap in view.policy.authorization_policies:
        target = view.views.get(ap.service)
        if ap.service in authn or (target is not None and not target.enforces("claims")):  # tcp: E245 says it
            continue
        for kind in ("allow", "deny"):
            for i, rule in enumerate(getattr(ap, kind)):
                if rule.claims:
                    yield Diagnostic(
                        "E251",
                        f"claims need verified tokens: add a RequestAuthentication for '{ap.service}'",
                        ap.where(kind, i, "claims"), ap.subject, f"{kind}[{i}].claims",
                    )
