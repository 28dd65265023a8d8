"""Kubernetes mode: names the cluster must accept, and meshes that cannot work across pods.

A service whose sidecar address is a wildcard runs in pods; its versions are
found through headless Services named `<service>-<version>` (see
compiler/policy/kubernetes.py). What a platform engineer gets wrong there:

- E290 a Service name or the name callers resolve is no valid DNS name (a label
  is at most 63 characters, a name at most 253): Kubernetes refuses the Service,
  or callers resolve nothing;
- E291 two of the mesh's Kubernetes Services get one name in one namespace
  (`reviews` version `v1-canary` and service `reviews-v1` version `canary`, or
  version `v1` of `reviews` and a service `reviews-v1`): one would overwrite the
  other, and callers would reach the wrong pods;
- E292 a service's certificate Secret name (`kubernetes.certs_secret`) is too long;
- E293 a service in pods and a service on a host's loopback address call each
  other: from a pod, a loopback address is the pod itself, and a host's loopback
  cannot resolve cluster DNS;
- E294 `kubernetes.shutdown_grace` too short for a pod to leave without failing
  requests: callers notice it is gone only at their next DNS refresh (plus
  DNS_MARGIN for TTLs), which the sidecar's preStop sleep waits out, and the
  app then needs time to finish (DRAIN_TIME of headroom before SIGKILL);
- E295 `kubernetes` settings while no service or gateway runs in pods: they would be ignored;
- W296 callers health-check each pod of a service in pods through its sidecar
  (`GET <health_check.path>` with the caller's identity and no token): when
  its AuthorizationPolicy or RequestAuthentication refuses that request, every
  pod looks unhealthy to that caller.

Port clashes inside a pod (the app's port, the probe port) are E212 (ports.py).
"""

from __future__ import annotations

from typing import Iterator

from compiler.check.shadowing import covers_path
from compiler.diagnostics import Diagnostic, Severity
from compiler.emit.bootstrap import ENVOY_ARGS
from compiler.policy.kubernetes import DNS_LABEL, DNS_MARGIN
from compiler.policy.regex import fullmatch
from compiler.policy.resolved import Resolved, ServiceView
from compiler.policy.route import PathMatch
from compiler.policy.security import AuthzRule
from compiler.policy.types import Duration, is_loopback

DRAIN_TIME = Duration(1000 * int(ENVOY_ARGS[ENVOY_ARGS.index("--drain-time-s") + 1]))
"""How long a sidecar that is going away keeps draining its connections (how sidecars are started)."""


def check_kubernetes(view: Resolved) -> Iterator[Diagnostic]:
    mesh = view.mesh
    if mesh is None:
        return
    in_pods = [sv for sv in view.views.values() if sv.in_pods]
    if not in_pods and not any(gv.in_pods for gv in view.gateways.values()):
        for name in sorted(mesh.kubernetes.model_fields_set):
            yield Diagnostic(
                "E295",
                "no service or gateway runs in pods (every sidecar and gateway address is specific), so this would "
                "be ignored: remove it, or leave a service's sidecar address at 0.0.0.0",
                mesh.where("kubernetes", name), mesh.subject, f"kubernetes.{name}",
            )
        return
    yield from _names(view, in_pods)
    yield from _mixed_hosts(view)
    yield from _health_checks(view, in_pods)
    k = mesh.kubernetes
    needed = Duration(k.dns_refresh.ms + DNS_MARGIN.ms + DRAIN_TIME.ms)
    if k.shutdown_grace <= needed:
        yield Diagnostic(
            "E294",
            f"{k.shutdown_grace} is too short: a pod that goes away still gets requests until its callers' next "
            f"DNS refresh ({k.dns_refresh}) plus {DNS_MARGIN} for DNS TTLs (the sidecar's preStop sleep), and then "
            f"needs {DRAIN_TIME} to finish before it is killed; give it more than {needed}",
            mesh.where("kubernetes", "shutdown_grace"), mesh.subject, "kubernetes.shutdown_grace",
        )


def _version_place(sv: ServiceView, version: str):
    svc = sv.service
    return svc.where("versions", version) if version in svc.versions else svc.where("name")


def _names(view: Resolved, in_pods: list[ServiceView]) -> Iterator[Diagnostic]:
    mesh = view.mesh
    k = mesh.kubernetes
    taken: dict[tuple[str, str], tuple[str, object]] = {}  # (namespace, Service name) -> (what, where)
    # ClusterIP Services first: a headless name that hits a service's own name is the headless one's fault.
    for sv in in_pods:
        taken[(sv.service.namespace, sv.name)] = (f"the ClusterIP Service of '{sv.name}'", sv.service.where("name"))
    for sv in in_pods:
        svc = sv.service
        for version, name in sv.headless_services.items():
            if version not in sv.app_port_versions:
                continue  # its instances are not pods: no headless Service (callers reach any pod)
            at = _version_place(sv, version)
            what = f"the headless Service of '{svc.name}' version '{version}'"
            fqdn = f"{name}.{svc.namespace}.svc.{k.cluster_domain}"
            if not DNS_LABEL.match(name):
                yield Diagnostic(
                    "E290",
                    f"{what} would be named '{name}' ({len(name)} characters), longer than a DNS label (63): "
                    "shorten the service or version name",
                    at, svc.subject,
                )
            elif len(fqdn) > 253:
                yield Diagnostic(
                    "E290",
                    f"callers of '{svc.name}' version '{version}' would resolve '{fqdn}' ({len(fqdn)} characters), "
                    "longer than a DNS name (253): shorten the names or kubernetes.cluster_domain",
                    at, svc.subject,
                )
            key = (svc.namespace, name)
            if key in taken:
                other, other_at = taken[key]
                yield Diagnostic(
                    "E291",
                    f"{what} would be named '{name}' in namespace '{svc.namespace}', like {other} ({{0}}): "
                    "one would replace the other; rename a service or version",
                    at, svc.subject, refs=(other_at,),
                )
            else:
                taken[key] = (what, at)
        if sv.mtls != "disable":
            yield from certs_secret_name(mesh, svc, f"the certificate Secret of '{svc.name}'", "service")


def certs_secret_name(mesh, doc, what: str, kind: str) -> Iterator[Diagnostic]:
    """E292 when the certificate Secret of `doc` (a Service or a Gateway, a `kind`) is no DNS label; `what`
    names that Secret in the message."""
    secret = mesh.kubernetes.certs_secret_of(doc.name)
    if not DNS_LABEL.match(secret):
        explicit = "certs_secret" in mesh.kubernetes.model_fields_set
        yield Diagnostic(
            "E292",
            f"{what} would be named '{secret}' ({len(secret)} characters), longer than a DNS label (63): shorten "
            f"kubernetes.certs_secret or the {kind} name",
            mesh.where("kubernetes", "certs_secret") if explicit else doc.where("name"),
            mesh.subject if explicit else doc.subject,
        )


def _mixed_hosts(view: Resolved) -> Iterator[Diagnostic]:
    """Outbound clusters (calls, tracing collector, rate-limit service) between pods and a host's loopback."""

    def on_loopback(sv: ServiceView) -> bool:
        return sv.placement.one_host and is_loopback(sv.placement.address)

    for sv in view.views.values():
        svc = sv.service
        targets = [(dep, svc, ("calls", i)) for i, dep in enumerate(svc.calls)]
        if sv.tracing is not None:
            own = svc.observability.tracing
            doc = svc if own else view.mesh
            targets.append((sv.tracing.collector, doc, ("observability", "tracing", "collector")))
        if sv.traffic is not None and sv.traffic.global_rate_limit is not None:
            targets.append((sv.traffic.global_rate_limit.service, sv.traffic, ("global_rate_limit", "service")))
        for name, doc, path in targets:
            target = view.views.get(name)
            if target is None or target.placement is None:
                continue  # unknown services are reported elsewhere
            if sv.in_pods and on_loopback(target):
                reason = f"from a pod, {target.placement.address} is the pod itself"
            elif on_loopback(sv) and target.in_pods:
                reason = f"'{svc.name}' runs on a host's loopback ({sv.placement.address}), outside the cluster's network"
            else:
                continue
            yield Diagnostic(
                "E293",
                f"'{svc.name}' {'runs in pods' if sv.in_pods else 'is on one host'} and reaches '{name}', which "
                f"{'runs in pods' if target.in_pods else 'is on one host'}: {reason}; run both in pods "
                "(sidecar address 0.0.0.0) or give the one-host service an address pods can reach",
                doc.where(*path), doc.subject,
            )


def _health_checks(view: Resolved, in_pods: list[ServiceView]) -> Iterator[Diagnostic]:
    for sv in in_pods:
        tp = sv.traffic
        if tp is None or sv.listener != "http":
            continue
        # Each distinct health check of its versions (a version's own, else the TrafficPolicy's).
        checks: dict[tuple, str] = {}
        for v in sv.versions:
            p = sv.protections[v]
            if p.health_check is not None:
                at = ("versions", v, "health_check", "path") if p.origin["health_check"][0] == "version" else (
                    "health_check", "path")
                checks.setdefault(at, p.health_check.path)
        for at, path in checks.items():
            for caller in sorted((c for c in view.views.values() if sv.name in c.service.calls), key=lambda c: c.name):
                reason = _refuses(view, sv, caller, path)
                if reason:
                    yield Diagnostic(
                        "W296",
                        f"'{caller.name}' health-checks each pod of '{sv.name}' through its sidecar (GET {path}, "
                        f"as '{caller.name}', without a token), and {reason}: every pod would look unhealthy to "
                        f"'{caller.name}'; allow GET {path} to its callers",
                        tp.where(*at), tp.subject, severity=Severity.WARNING,
                    )


def _refuses(view: Resolved, sv: ServiceView, caller: ServiceView, path: str) -> str | None:
    """Why the callee's sidecar would refuse a caller's health check, if it certainly would."""
    mesh = view.mesh
    sensitive = mesh.paths.case_sensitive
    identity = caller.name if sv.mtls != "disable" and caller.mtls != "disable" else None

    def matches(rule: AuthzRule, deny: bool) -> bool:
        """Deny rules: certainly matches; allow rules: may match (the sidecar's address is not known here)."""
        if rule.from_ and identity not in rule.from_:
            return False
        namespace = caller.service.namespace if identity else None
        if rule.namespaces and namespace not in rule.namespaces:
            return False
        if identity and (identity in rule.not_from or namespace in rule.not_namespaces):
            return False
        if any(_path_holds(p, path, sensitive) for p in rule.not_paths) or "GET" in rule.not_methods:
            return False
        if deny and (rule.ip_blocks or rule.not_ip_blocks):
            return False
        if rule.paths and not any(_path_holds(p, path, sensitive) for p in rule.paths):
            return False
        if rule.methods and "GET" not in rule.methods:
            return False
        if any(h.present is not False for h in rule.headers) or rule.claims:
            return False  # the check sends no such header and no token
        return True

    ap = sv.authz
    if ap is None or ap.mode == "enforce":
        deny = ap.deny if ap else []
        allow = ap.allow if ap else []
        if any(matches(r, deny=True) for r in deny):
            return "its AuthorizationPolicy denies it"
        if (allow or mesh.authorization.default == "deny") and not any(matches(r, deny=False) for r in allow):
            return "its AuthorizationPolicy does not allow it"
    authn = sv.authn
    if authn is not None:
        rules = authn.rules or []
        first = next((r for r in rules if not r.paths or any(_under(path, p, sensitive) for p in r.paths)), None)
        if (not rules or first is not None) and not (first is not None and first.allow_missing):
            return "its RequestAuthentication requires a token there"
    return None


def _path_holds(rule_path: PathMatch, path: str, case_sensitive: bool) -> bool:
    if rule_path.regex is not None:
        return fullmatch(rule_path.regex, path, ignore_case=not case_sensitive)
    return covers_path(rule_path, PathMatch(exact=path), segments=True, case_sensitive=case_sensitive)


def _under(path: str, prefix: str, case_sensitive: bool) -> bool:
    return covers_path(PathMatch(prefix=prefix), PathMatch(exact=path), segments=True, case_sensitive=case_sensitive)
