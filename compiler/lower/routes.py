"""Route rules (policy) -> HttpRoute (IR): matching, forwarding controls, redirects, answers."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from compiler.diagnostics import Source
from compiler.ir import (
    Cluster,
    HashKey,
    Cors,
    Fault,
    HeaderCondition,
    HeaderOps,
    HttpRoute,
    Mirror,
    PathCondition,
    QueryCondition,
    Redirect,
    Respond,
    Retry,
    Rewrite,
    Target,
)
from compiler.lower.protection import bucket
from compiler.policy import RouteRule
from compiler.policy.resolved import unretried_methods
from compiler.policy.regex import cookie_regex
from compiler.policy.types import MAX_DURATION_MS, Duration

VERSION_HEADER = "x-meshc-version"
"""Set by the caller's sidecar to the version it chose; read and removed by the callee's sidecar."""

ClustersOf = Callable[[str], dict[str, Cluster]]


def lower_rule(
    rule: RouteRule,
    source: Source,
    service: str,
    clusters_of: ClustersOf,
    timeout: Duration,
    hash_key: HashKey | None = None,
) -> list[HttpRoute]:
    """One Envoy route per rule, or two when retries must spare non-idempotent methods.

    Envoy's retry policy does not look at the method, so unless the rule says
    `retries.non_idempotent: true`, its POST/PATCH/CONNECT requests go through
    a twin route placed first: the same match limited to those methods, the
    same action, no retries. `timeout`: the rule's effective timeout (Resolved.timeout_of).
    """
    route = _lower(rule, source, service, clusters_of, timeout, hash_key)
    if route.retry is None or rule.retries.non_idempotent:
        return [route]
    risky = unretried_methods(rule)
    if not risky:
        return [route]
    others = tuple(h for h in route.headers if h.name != ":method")
    twin = replace(route, headers=tuple(_method(risky)) + others, retry=None)
    return [twin, route]


def _lower(
    rule: RouteRule, source: Source, service: str, clusters_of: ClustersOf, timeout: Duration, hash_key
) -> HttpRoute:
    m = rule.match
    common = dict(
        path=_path(rule),
        headers=tuple(_method(m.methods)) + tuple(header_condition(h) for h in m.headers) + tuple(_cookie(c) for c in m.cookies),
        query=tuple(_query(q) for q in m.query),
        source=source,
        fault=_fault(rule.fault) if rule.fault else None,
        request_headers=_header_ops(rule.request_headers),
        response_headers=_header_ops(rule.response_headers),
        cors=_cors(rule.cors) if rule.cors else None,
        rate_limit=bucket(rule.rate_limit),
    )
    if rule.redirect is not None:
        r = rule.redirect
        return HttpRoute(**common, redirect=Redirect(r.scheme, r.host, r.port, r.path, r.prefix, r.code))
    if rule.respond is not None:
        return HttpRoute(**common, respond=Respond(rule.respond.status, rule.respond.body))

    clusters = clusters_of(service)
    return HttpRoute(
        **common,
        targets=tuple(
            Target(clusters[version], weight, ((VERSION_HEADER, version),)) for version, weight in sorted(rule.to.items())
        ),
        timeout=timeout,
        idle_timeout=rule.idle_timeout,
        retry=_retry(rule.retries) if rule.retries else None,
        mirrors=tuple(
            Mirror(clusters_of(m.service or service)[m.to], m.percent, ((VERSION_HEADER, m.to),)) for m in rule.mirror
        ),
        rewrite=_rewrite(rule.rewrite) if rule.rewrite else None,
        hash_key=hash_key,
    )


def _path(rule: RouteRule) -> PathCondition:
    p = rule.match.path
    if p.exact is not None:
        return PathCondition("exact", p.exact)
    if p.regex is not None:
        return PathCondition("regex", p.regex)
    return PathCondition("prefix", p.prefix or "/")


def header_condition(h) -> HeaderCondition:
    if h.present is not None:
        return HeaderCondition(h.name, "present" if h.present else "absent")
    for kind in ("exact", "prefix", "regex"):
        value = getattr(h, kind)
        if value is not None:
            return HeaderCondition(h.name, kind, value)
    raise AssertionError("HeaderMatch validated to have exactly one condition")


def _method(methods) -> list[HeaderCondition]:
    if not methods:
        return []
    ordered = sorted(set(methods))
    if len(ordered) == 1:
        return [HeaderCondition(":method", "exact", ordered[0])]
    return [HeaderCondition(":method", "regex", "|".join(ordered))]


def _cookie(c) -> HeaderCondition:
    """Envoy has no cookie matcher: match the whole Cookie header with a regex around `name=value`."""
    return HeaderCondition("cookie", "regex", cookie_regex(c.name, c.exact, c.regex))


def _query(q) -> QueryCondition:
    if q.present:
        return QueryCondition(q.name, "present")
    for kind in ("exact", "prefix", "regex"):
        value = getattr(q, kind)
        if value is not None:
            return QueryCondition(q.name, kind, value)
    raise AssertionError("QueryMatch validated to have exactly one condition")


def _retry(r) -> Retry:
    return Retry(
        attempts=r.attempts,
        per_try_timeout=r.per_try_timeout,
        conditions=tuple(r.conditions),
        status_codes=tuple(r.status_codes),
        backoff_base=r.backoff.base,
        backoff_max=r.backoff.max or Duration(min(r.backoff.base.ms * 10, MAX_DURATION_MS)),
    )


GRPC_REQUEST = HeaderCondition("content-type", "prefix", "application/grpc")


def _fault(f) -> Fault:
    headers = tuple(header_condition(h) for h in f.headers)
    if f.abort is not None and f.abort.grpc_status is not None:
        # Envoy answers a gRPC abort with HTTP 200: a plain HTTP caller would read it as success.
        headers += (GRPC_REQUEST,)
    return Fault(
        delay=f.delay.fixed if f.delay else None,
        delay_percent=f.delay.percent if f.delay else 0,
        abort_status=f.abort.status if f.abort else None,
        abort_grpc_status=f.abort.grpc_status if f.abort else None,
        abort_percent=f.abort.percent if f.abort else 0,
        headers=headers,
    )


def _rewrite(r) -> Rewrite:
    return Rewrite(prefix=r.prefix, regex=(r.regex.pattern, r.regex.substitution) if r.regex else None, host=r.host)


def _header_ops(h) -> HeaderOps:
    if h is None:
        return HeaderOps()
    return HeaderOps(add=tuple(sorted(h.add.items())), set=tuple(sorted(h.set.items())), remove=tuple(h.remove))


def _cors(c) -> Cors:
    exact = tuple(o for o in c.allow_origins if not o.startswith("regex:") and o != "*")
    regex = tuple(o[len("regex:"):] for o in c.allow_origins if o.startswith("regex:"))
    if "*" in c.allow_origins:
        regex += (".*",)
    return Cors(exact, regex, tuple(c.allow_methods), tuple(c.allow_headers), tuple(c.expose_headers), c.max_age, c.allow_credentials)
