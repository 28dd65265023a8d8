"""The sending side: a listener's route table (outbound, or a gateway's edge), the rule chosen and its action.

Envoy picks the virtual host by Host, then the first route whose conditions hold; the route's per-route
filters run in the listener's filter order (rate limit, fault), then the router redirects, answers or
forwards with the route's header changes, rewrites, timeout, retries and mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.explain.match import (
    describe_header,
    full_match,
    query_params,
    route_conditions,
    route_mismatch,
    split_path,
    virtual_host,
    header_matches,
)
from compiler.explain.model import Side
from compiler.explain.trace import Trace
from compiler.ir import HttpListener, HttpRoute, Redirect, Sidecar, Target


@dataclass(frozen=True)
class Answer:
    """The sending side's verdict: a status it answers itself, or the targets it forwards to."""

    status: int | None = None
    route: HttpRoute | None = None
    targets: tuple[Target, ...] = ()


def choose_route(t: Trace, side: Side, listener: HttpListener, host: str) -> tuple[HttpRoute | None, int | None]:
    """The virtual host and route for the request; (None, 404) when nothing matches."""
    vhost, how = virtual_host(listener.routes.virtual_hosts, host)
    if vhost is None:
        t.step(side, "virtual host", f"none for Host {host}: 404", table=listener.routes.name)
        return None, 404
    name = "the egress catch-all" if listener.direction == "outbound" and "*" in vhost.domains else vhost.name
    t.step(side, "virtual host", f"{name} for Host {host} ({how})", table=listener.routes.name, vhost=vhost.name)
    path, query = split_path(t.path)
    headers, params = t.matching_headers(), query_params(query)
    routes = vhost.routes
    for i, route in enumerate(routes):
        why = route_mismatch(route, path, headers, params)
        name = rule_name(route, i)
        twin = i + 1 < len(routes) and routes[i + 1].source == route.source and route.retry is None and routes[i + 1].retry
        if twin:  # compiler/lower/routes.py: non-idempotent methods get the rule without its retries, first
            name += " without retries (its non-idempotent methods)"
        if why is None and route.caller_versions:
            why, version = _caller_version(t, route)
            if why is None and version is None:
                _depends_on_version(t, side, route, i, name)
                continue
        if why is None:
            held = route_conditions(route)
            if route.caller_versions:
                held = f"caller pod version {version}" + ("" if held == "any request" else f", {held}")
            t.step(side, "route", f"{name} matched ({held})", route.source, index=i, rule=name, matched=True)
            return route, None
        t.step(side, "route", f"{name} did not match: {why}", route.source, index=i, rule=name, matched=False)
    t.step(side, "route", f"no route of {vhost.name} matches {t.method} {path}: 404 (Envoy: NR)")
    return None, 404


def _either(versions) -> str:
    return " or ".join(versions)


def _what_it_does(route: HttpRoute) -> str:
    """A matched route's action in short: where it forwards, or what it answers."""
    if route.redirect is not None:
        return f"redirects with {route.redirect.code}"
    if route.respond is not None:
        return f"answers {route.respond.status}"
    total = sum(x.weight for x in route.targets) or 1
    split = ", ".join(f"{x.cluster.version} {x.weight * 100 / total:g}%" for x in route.targets)
    return f"sends it to {route.targets[0].cluster.service}: {split}" if route.targets else "matches"


def _followed(t: Trace) -> list[str]:
    """Without `--from-version`: the caller's versions the explanation still stands for (the rules above that
    depend on the version were followed as the other versions)."""
    return [v for v in t.pod_versions if v not in t.passed_versions]


def _caller_version(t: Trace, route: HttpRoute) -> tuple[str | None, str | None]:
    """A route limited to some caller versions whose other conditions hold: (why it does not match, None), or
    (None, the version it matches as), or (None, None) when it depends on a version that was not given."""
    versions = route.caller_versions
    if t.caller_version is not None:
        if t.caller_version in versions:
            return None, t.caller_version
        return f"only for caller pods of version {_either(versions)} (this one: {t.caller_version})", None
    followed = _followed(t)
    if followed and not set(followed) & set(versions):
        return f"only for caller pods of version {_either(versions)} (followed here: {_either(followed)})", None
    if followed and set(followed) <= set(versions):
        return None, _either(followed)
    return None, None


def _depends_on_version(t: Trace, side: Side, route: HttpRoute, index: int, name: str) -> None:
    """A rule that matches this request but only from some versions of the caller (`match.callers` with
    versions): each pod's sidecar matches its own `version` label, which no request shows. Without
    `--from-version` both ways are said, and the rules after it (what the other versions get) are followed."""
    versions = route.caller_versions
    t.passed_versions.update(versions)
    others = _followed(t)
    rest = f"version {_either(others)}" if others else "another version"
    conditions = route_conditions(route)
    also = "" if conditions == "any request" else f" ({conditions})"
    t.step(side, "route", f"{name} depends on the caller's version: if the caller pod is version {_either(versions)} "
           f"it matches{also} and {_what_it_does(route)}; followed here as a caller pod of {rest} "
           f"(--from-version picks one)", route.source, index=index, rule=name, matched=False,
           caller_versions=list(versions))
    t.depends.append(f"if the caller pod is version {_either(versions)}: {name} {_what_it_does(route)} instead")


def rule_name(route: HttpRoute, index: int) -> str:
    """The policy's name for a route: `rules[i]` of its Route, else the default route (or the IR's index)."""
    anchor = route.source.anchor
    if anchor.startswith("Route/") and "/rules[" in anchor:
        return "rules[" + anchor.split("/rules[", 1)[1].split("/")[0]
    if anchor.startswith(("Service/", "ExternalService/")):
        return "default route"
    if anchor.startswith("Mesh/"):
        return "catch-all (Mesh egress.undeclared)"
    if anchor.startswith("Gateway/"):
        return "https redirect"
    return f"routes[{index}]"


def _apply_ops(t: Trace, side: Side, what: str, ops, source) -> None:
    if not ops:
        return
    for name in ops.remove:
        t.headers.pop(name.lower(), None)
    for name, value in ops.set:
        t.headers[name.lower()] = value
    for name, value in ops.add:
        old = t.headers.get(name.lower())
        t.headers[name.lower()] = value if old is None else f"{old},{value}"
    parts = [f"set {n}: {v}" for n, v in ops.set] + [f"add {n}: {v}" for n, v in ops.add] + [f"remove {n}" for n in ops.remove]
    t.step(side, what, "; ".join(parts), source)


def _request_scheme(t: Trace, listener: HttpListener) -> str:
    """The scheme a redirect that names none keeps (Envoy: the request's x-forwarded-proto). A gateway's edge
    listener sets that header itself (https on a TLS listener); a sidecar's outbound listener keeps the app's."""
    if listener.edge is not None:
        return "https" if listener.edge.tls is not None else "http"
    sent = (t.headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
    return sent if sent in ("http", "https") else "http"


def _location(r: Redirect, host: str, path: str, matched_prefix: str | None, scheme: str = "http") -> str:
    scheme = r.scheme or scheme
    name = r.host or host.split(":")[0]
    port = f":{r.port}" if r.port else ""
    p, sep, q = path.partition("?")
    if r.path is not None:
        p = r.path
    elif r.prefix is not None and matched_prefix is not None:
        p = r.prefix + p[len(matched_prefix):]
    return f"{scheme}://{name}{port}{p}{sep}{q}"


def _rewrite(t: Trace, side: Side, route: HttpRoute) -> None:
    rw = route.rewrite
    if rw is None:
        return
    path, sep, query = t.path.partition("?")
    new = path
    if rw.prefix is not None and route.path.kind == "prefix":
        new = rw.prefix + path[len(route.path.value):]
    elif rw.regex is not None:
        import re2

        pattern, sub = rw.regex
        new = re2.sub(pattern, sub.replace("\\", "\\"), path)
    if new != path:
        t.step(side, "rewrite", f"path {path} -> {new}", route.source)
        t.path = new + sep + query
    if rw.host is not None:
        t.headers["host"] = rw.host
        t.step(side, "rewrite", f"Host -> {rw.host}", route.source)


def _upgrade(t: Trace) -> str | None:
    """The protocol a request asks to upgrade to (`Connection: upgrade` and `Upgrade: <protocol>`), else None."""
    tokens = [x.strip().lower() for x in t.headers.get("connection", "").split(",")]
    return t.headers.get("upgrade", "").strip().lower() or None if "upgrade" in tokens else None


def act(t: Trace, side: Side, sidecar: Sidecar, listener: HttpListener, route: HttpRoute, host: str) -> Answer:
    """The matched route's filters and action."""
    src = route.source
    upgrade = _upgrade(t)
    if upgrade is not None:
        # Envoy decides an upgrade when it builds the stream's filters, before any of them runs.
        if upgrade == "websocket" and route.websocket:
            t.step(side, "upgrade", "websocket: allowed on this route (TrafficPolicy websockets)", src)
        else:
            t.step(side, "upgrade", f"{upgrade}: not allowed on this route: 403 (Envoy: upgrade_failed)", src, status=403)
            return Answer(status=403, route=route)
    if route.cors is not None and "origin" in t.headers:
        c, origin = route.cors, t.headers["origin"]
        allowed = origin in c.origins_exact or any(full_match(r, origin) for r in c.origins_regex)
        if allowed and t.method == "OPTIONS" and "access-control-request-method" in t.headers:
            t.step(side, "cors", f"preflight from allowed Origin {origin}: answered 200 by the CORS filter", src, status=200)
            return Answer(status=200, route=route)
        verdict = "allowed: CORS headers added to the answer" if allowed else "not allowed: no CORS headers (the browser refuses)"
        t.step(side, "cors", f"Origin {origin} {verdict}", src)
    if route.rate_limit is not None:
        b = route.rate_limit
        t.step(side, "rate limit", f"route bucket {b.requests} per {b.per}: 429 once it is empty", src)
        t.maybe(429, None, f"{sidecar.service}: route bucket {b.requests} per {b.per} empty")
    f = route.fault
    if f is not None:
        headers = t.matching_headers()
        failed = [h for h in f.headers if not header_matches(h, headers)]
        if failed:
            t.step(side, "fault", f"not applied: {describe_header(failed[0])} not met", src)
        else:
            if f.delay is not None and f.delay_percent:
                t.step(side, "fault", f"delay {f.delay} for {f.delay_percent}% of requests", src,
                       delay=str(f.delay), percent=f.delay_percent)
                if f.delay_percent < 100:
                    t.certain = False
            status = f.abort_status
            if status is None and f.abort_grpc_status is not None:
                status = 200  # a gRPC abort is HTTP 200 with grpc-status
            if status is not None and not f.abort_percent:
                t.step(side, "fault", f"abort {status} for 0% of requests: never", src, status=status, percent=0)
            if status is not None and f.abort_percent:
                what = f"grpc-status {f.abort_grpc_status}" if f.abort_status is None else str(status)
                t.step(side, "fault", f"abort {what} for {f.abort_percent}% of requests", src,
                       status=status, percent=f.abort_percent)
                if f.abort_percent >= 100:
                    return Answer(status=status, route=route)
                t.maybe(status, float(f.abort_percent), f"fault abort on {sidecar.service}")
    if route.redirect is not None:
        r = route.redirect
        matched = route.path.value if route.path.kind == "prefix" else None
        location = _location(r, host, t.path, matched, _request_scheme(t, listener))
        t.step(side, "redirect", f"{r.code} to {location}", src, status=r.code, location=location)
        return Answer(status=r.code, route=route)
    if route.respond is not None:
        body = route.respond.body
        short = body if len(body) <= 60 else body[:57] + "..."
        t.step(side, "respond", f"{route.respond.status} direct response {short!r}", src, status=route.respond.status)
        _apply_ops(t, side, "response headers", route.response_headers, src)
        return Answer(status=route.respond.status, route=route)
    return _forward(t, side, route)


def _forward(t: Trace, side: Side, route: HttpRoute) -> Answer:
    src = route.source
    total = sum(x.weight for x in route.targets) or 1
    split = ", ".join(f"{x.cluster.version} {x.weight * 100 / total:g}%" for x in route.targets)
    t.step(side, "targets", f"{route.targets[0].cluster.service}: {split}", src,
           weights={x.cluster.version: x.weight for x in route.targets})
    for m in route.mirrors:
        t.step(side, "mirror", f"{m.percent}% copied to {m.cluster.service} {m.cluster.version} (answer dropped)", src,
               service=m.cluster.service, version=m.cluster.version, percent=m.percent)
    _apply_ops(t, side, "request headers", route.request_headers, src)
    _rewrite(t, side, route)
    if route.timeout is not None:
        t.step(side, "timeout", f"{route.timeout} for the whole call (504 when exceeded)", src, timeout=str(route.timeout))
    r = route.retry
    if r is not None:
        codes = "retriable-status-codes " + "/".join(str(c) for c in r.status_codes)
        conds = ", ".join(codes if c == "retriable-status-codes" else c for c in r.conditions) or "none"
        per_try = f", {r.per_try_timeout} per try" if r.per_try_timeout else ""
        t.step(side, "retries", f"up to {r.attempts} retries on {conds}{per_try}, backoff {r.backoff_base}..{r.backoff_max}", src,
               attempts=r.attempts, conditions=list(r.conditions), status_codes=list(r.status_codes))
        budget = route.targets[0].cluster.retry_budget
        if budget is not None:
            t.step(side, "retry budget", f"retries at most {budget.percent}% of active requests (at least {budget.min_concurrency})",
                   route.targets[0].cluster.source, percent=budget.percent, min_concurrency=budget.min_concurrency)
    if route.hash_key is not None:
        k = route.hash_key
        t.step(side, "balancing", f"consistent hash on {k.kind} {k.name}".rstrip(), src)
    _apply_ops(t, side, "response headers", route.response_headers, src)
    return Answer(route=route, targets=route.targets)

