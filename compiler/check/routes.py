"""Route meaning: targets exist, weights add up, retries are bounded, rewrites fit their match.

A Route may be for an ExternalService (and mirror to one): a destination with the one version `default`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from compiler.diagnostics import Diagnostic, Severity, did_you_mean
from compiler.policy import Route, RouteRule, Service
from compiler.policy.resolved import Resolved, enforces, unretried_methods
from compiler.check.tcp_routes import check_tcp_route
from compiler.policy.types import PER_MILLION, per_million, percent_text


@dataclass(frozen=True)
class _External:
    """An ExternalService as a Route sees it: a service with the one version `default`."""

    name: str
    protocol: str
    version_names: tuple[str, ...] = ("default",)


def destinations(view: Resolved) -> dict[str, Service | _External]:
    """What a Route (its `service`, a mirror's `service`) may name: Services and ExternalServices."""
    out: dict[str, Service | _External] = {
        name: _External(name, ev.service.protocol, ev.versions) for name, ev in view.externals.items()
    }
    out.update(view.services)
    return out


def check_routes(view: Resolved) -> Iterator[Diagnostic]:
    services = destinations(view)
    for route in view.policy.routes:
        target = services.get(route.service)
        if target is None:
            yield Diagnostic(
                "E207",
                f"'{route.service}' is a Gateway: its routes are written in the Gateway document, and the Route of "
                "the service each one goes to applies there"
                if route.service in view.gateways
                else f"unknown service '{route.service}'{did_you_mean(route.service, sorted(services))}",
                route.where("service"),
                route.subject,
                "service",
            )
            continue
        if not enforces(target, "routes"):
            if isinstance(target, _External):
                yield Diagnostic(
                    "E208",
                    "a tcp ExternalService has one version: there is nothing for a Route to choose",
                    route.where("service"),
                    route.subject,
                    "service",
                )
            else:  # a tcp canary: weights per connection, nothing else (compiler/check/tcp_routes.py)
                yield from check_tcp_route(view, route)
                for i, rule in enumerate(route.rules):
                    yield from _targets(route, i, rule, target)
            continue
        for i, rule in enumerate(route.rules):
            yield from _targets(route, i, rule, target)
            yield from _mirrors(route, i, rule, target, services)
            yield from _retries(route, i, rule, view)
            yield from _shaping(route, i, rule)
        if "retry_budget" in route.model_fields_set and not any(rule.retries for rule in route.rules):
            yield Diagnostic(
                "E280",
                "retry_budget only bounds retries, and no rule of this Route retries, so it would be ignored: "
                "remove it or give a rule retries",
                route.where("retry_budget"),
                route.subject,
                "retry_budget",
            )
        if not any(matches_everything(rule) for rule in route.rules):
            yield Diagnostic(
                "W203",
                "no rule matches every request; requests that match none get 404 from the caller's sidecar",
                route.source,
                route.subject,
                severity=Severity.WARNING,
            )


def matches_everything(rule: RouteRule) -> bool:
    m = rule.match
    return m.path.prefix == "/" and not (m.headers or m.methods or m.cookies or m.query or m.callers)


def _unknown_version(version: str, svc: Service | _External) -> str:
    known = svc.version_names
    return f"unknown version '{version}' of service '{svc.name}'{did_you_mean(version, known)} (known: {', '.join(known)})"


def _targets(route: Route, i: int, rule: RouteRule, target: Service) -> Iterator[Diagnostic]:
    if rule.to is None:
        return
    for version in rule.to:
        if version not in target.version_names:
            yield Diagnostic("E209", _unknown_version(version, target), route.where("rules", i, "to", version), route.subject, f"rules[{i}].to")
    total = sum(per_million(w) for w in rule.to.values())  # exact: each weight has at most 4 decimals
    if total != 100 * PER_MILLION:
        yield Diagnostic("E210", f"weights add up to {percent_text(total / PER_MILLION)}, not 100", route.where("rules", i, "to"), route.subject, f"rules[{i}].to")


def _mirrors(route: Route, i: int, rule: RouteRule, target: Service, services: dict[str, Service]) -> Iterator[Diagnostic]:
    for j, mirror in enumerate(rule.mirror):
        path = f"rules[{i}].mirror[{j}]"
        where = route.where("rules", i, "mirror", j)
        dest = target if mirror.service is None else services.get(mirror.service)
        if dest is None:
            yield Diagnostic(
                "E214", f"unknown service '{mirror.service}'{did_you_mean(mirror.service, sorted(services))}", where, route.subject, path
            )
        elif dest.protocol == "tcp":
            yield Diagnostic("E214", f"cannot mirror HTTP requests to tcp service '{dest.name}'", where, route.subject, path)
        elif mirror.to not in dest.version_names:
            yield Diagnostic("E214", _unknown_version(mirror.to, dest), where, route.subject, path)


def _retries(route: Route, i: int, rule: RouteRule, view: Resolved) -> Iterator[Diagnostic]:
    r = rule.retries
    if r is None:
        return
    path = f"rules[{i}].retries"
    where = route.where("rules", i, "retries")
    if "retriable-status-codes" in r.on and not r.status_codes:
        yield Diagnostic(
            "E219", "retriable-status-codes needs the codes, e.g. on: [{retriable-status-codes: [503]}]", where, route.subject, path
        )
    timeout = view.timeout_of(rule)
    if r.per_try_timeout is not None and timeout is not None:
        worst = r.per_try_timeout.ms * (r.attempts + 1)
        if worst > timeout.ms:
            yield Diagnostic(
                "W301",
                f"per_try_timeout {r.per_try_timeout} × {r.attempts + 1} tries = {worst / 1000:g}s exceeds the route timeout "
                f"{timeout}: the last tries are cut off",
                where,
                route.subject,
                path,
                severity=Severity.WARNING,
            )
    risky = unretried_methods(rule)
    if risky and not r.non_idempotent:
        yield Diagnostic(
            "W302",
            f"{', '.join(risky)} requests of this rule will not be retried (repeating them may repeat their effect); "
            "set retries.non_idempotent: true if that is safe, or limit the rule with match.methods",
            where,
            route.subject,
            path,
            severity=Severity.WARNING,
        )


def _shaping(route: Route, i: int, rule: RouteRule) -> Iterator[Diagnostic]:
    kind = "prefix" if rule.match.path.prefix is not None else "exact" if rule.match.path.exact is not None else "regex"
    if rule.redirect is not None and rule.redirect.prefix is not None and kind != "prefix":
        yield Diagnostic(
            "E216",
            "replaces the matched prefix, so the rule must match a path prefix (for an exact match use redirect.path)",
            route.where("rules", i, "redirect", "prefix"),
            route.subject,
            f"rules[{i}].redirect.prefix",
        )
    if rule.rewrite is not None and rule.rewrite.regex is not None and "?" in rule.rewrite.regex.substitution:
        yield Diagnostic(
            "E220",
            "the substitution rewrites the path only; Envoy keeps the request's query string, so a '?' here "
            "would give two of them",
            route.where("rules", i, "rewrite", "regex", "substitution"),
            route.subject,
            f"rules[{i}].rewrite.regex.substitution",
        )
    if rule.rewrite is not None and rule.rewrite.prefix is not None and kind == "regex":
        yield Diagnostic(
            "E217",
            "rewrite.prefix replaces the matched prefix or path; with a regex match use rewrite.regex",
            route.where("rules", i, "rewrite", "prefix"),
            route.subject,
            f"rules[{i}].rewrite.prefix",
        )
