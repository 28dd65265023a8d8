"""The receiving side: the connection (mTLS), then the inbound listener's filters and the version's endpoints.

Filter order is the emitter's (compiler/emit/http_filters.py): path normalisation (the connection manager),
JWT, authorization deny rules, then the allow-list, local rate limits, the global rate-limit service, then
the router: the version the caller marked (`x-meshc-version`) or the default one.
"""

from __future__ import annotations

import ipaddress

from compiler.explain import jwt
from compiler.explain.match import describe_header, header_matches, path_matches, query_params, split_path
from compiler.explain.paths import normalise
from compiler.policy.types import percent_text
from compiler.explain.trace import Trace
from compiler.ir import Access, AccessRule, Cluster, HttpListener, Sidecar, TcpListener


def inbound(callee: Sidecar) -> HttpListener | TcpListener | None:
    return next((l for l in callee.listeners if l.direction == "inbound"), None)


def connection(t: Trace, caller: Sidecar, cluster: Cluster, listener) -> tuple[bool, str | None]:
    """(connected, the caller's identity as the callee knows it)."""
    originates = caller.tls is not None and cluster.upstream_tls is not None
    mode = listener.tls_mode
    mine = caller.tls.identity if caller.tls else None
    if originates:
        theirs = cluster.upstream_tls.peer_identity
        if mode is None:
            t.step("callee", "mTLS", f"{caller.service} originates mTLS but {cluster.service} takes plaintext only: 503", cluster.source)
            return False, None
        t.step("callee", "mTLS", f"{caller.service} originates mTLS: {mine} -> {theirs} (callee mode {mode}; each end "
               "checks the other's certificate)",
               cluster.source, caller_identity=mine, callee_identity=theirs, mode=mode)
        return True, mine
    if mode == "strict":
        why = "has no mesh certificate" if caller.tls is None else f"sends plaintext to {cluster.service}"
        t.step("callee", "mTLS", f"{caller.service} {why}; {cluster.service} accepts mTLS only (strict): "
               "connection refused, the caller's sidecar answers 503", cluster.source, mode=mode)
        return False, None
    t.step("callee", "mTLS", f"plaintext (callee mode {mode or 'disable'}): the caller has no identity here", cluster.source,
           mode=mode or "disable")
    return True, None


def _in_blocks(peer: str, blocks: tuple[str, ...]) -> bool:
    address = ipaddress.ip_address(peer)
    return any(address in ipaddress.ip_network(b) for b in blocks)


def _names(prefixes: tuple[str, ...]) -> str:
    """Namespaces by name: `spiffe://<td>/ns/<ns>/sa/` -> `<ns>`."""
    return ", ".join(p.rsplit("/ns/", 1)[-1].removesuffix("/sa/") for p in prefixes)


def _who_mismatch(rule: AccessRule, who: str | None, peer: str | None) -> str | None:
    """Why the caller is not who the rule is about (None: it is). A plaintext caller has no identity, so it is
    none of `from`/`namespaces` and meets every `not_from`/`not_namespaces`."""
    caller = who or "unauthenticated (no mTLS)"
    if rule.principals and who not in rule.principals:
        return f"from {', '.join(rule.principals)}: caller is {caller}"
    if rule.namespaces and not (who and any(who.startswith(n) for n in rule.namespaces)):
        return f"namespaces {_names(rule.namespaces)}: caller is {caller}"
    if who is not None and who in rule.not_principals:
        return f"not_from {', '.join(rule.not_principals)}: caller is {who}"
    if who is not None and any(who.startswith(n) for n in rule.not_namespaces):
        return f"not_namespaces {_names(rule.not_namespaces)}: caller is {who}"
    if (rule.ip_blocks or rule.not_ip_blocks) and peer is None:
        return "ip blocks: the caller's address is not known here (it runs in pods)"
    if rule.ip_blocks and not _in_blocks(peer, rule.ip_blocks):
        return f"ip_blocks {', '.join(rule.ip_blocks)}: peer address {peer}"
    if rule.not_ip_blocks and _in_blocks(peer, rule.not_ip_blocks):
        return f"not_ip_blocks {', '.join(rule.not_ip_blocks)}: peer address {peer}"
    return None


def _rule_mismatch(rule: AccessRule, who: str | None, method: str, path: str, headers: dict[str, str], claims: dict,
                   peer: str | None = None) -> str | None:
    why = _who_mismatch(rule, who, peer)
    if why is not None:
        return why
    if rule.paths and not any(path_matches(p, path) for p in rule.paths):
        case = " (any case)" if any(p.ignore_case for p in rule.paths) else ""
        return f"paths {', '.join(p.value for p in rule.paths)}{case}: {path} is none of them"
    if rule.methods and method not in rule.methods:
        return f"methods {', '.join(rule.methods)}: {method}"
    if any(path_matches(p, path) for p in rule.not_paths):
        return f"not_paths {', '.join(p.value for p in rule.not_paths)}: {path} is one of them"
    if method in rule.not_methods:
        return f"not_methods {', '.join(rule.not_methods)}: {method}"
    for h in rule.headers:
        if not header_matches(h, headers):
            return f"{describe_header(h)} not met"
    for claim, value in rule.claims:
        got = claims.get(claim)
        if not isinstance(got, str) or got != value:
            return f"claim {claim}={value}: " + ("no verified token" if not claims else f"token has {got!r}")
    return None


def authorize(t: Trace, access: Access | None, who: str | None, path: str, claims: dict, tcp: bool = False,
              peer: str | None = None) -> int | None:
    """403 when the deny rules or the allow-list refuse (None: passes). Dry-run: logged, never refused."""
    if access is None:
        t.step("callee", "authorization", "no AuthorizationPolicy and mesh default allow: every caller passes")
        return None
    headers = t.matching_headers()
    dry = " (dry_run: only logged, not refused)" if access.dry_run else ""
    refused = None
    for i, rule in enumerate(access.deny):
        why = _rule_mismatch(rule, who, t.method, path, headers, claims, peer)
        _unknown_peer(t, rule, peer)
        if why is None:
            t.step("callee", "authorization", f"deny[{i}] matches: refused{dry}", rule.source, rule=f"deny[{i}]")
            refused = i
            break
        t.step("callee", "authorization", f"deny[{i}] does not match ({why})", rule.source, rule=f"deny[{i}]")
    if refused is not None and not access.dry_run:
        return 403
    if access.allow is None:
        if refused is None:
            t.step("callee", "authorization", "no allow-list: everything not denied passes")
        return None
    if not access.allow:
        t.step("callee", "authorization", f"empty allow-list (mesh default deny): refused{dry}")
        return None if access.dry_run else 403
    for i, rule in enumerate(access.allow):
        why = _rule_mismatch(rule, who, t.method, path, headers, claims, peer)
        _unknown_peer(t, rule, peer)
        if why is None:
            t.step("callee", "authorization", f"allow[{i}] matches: allowed", rule.source, rule=f"allow[{i}]")
            return None
        t.step("callee", "authorization", f"allow[{i}] does not match ({why})", rule.source, rule=f"allow[{i}]")
    t.step("callee", "authorization", f"no allow rule matches: refused{dry}")
    return None if access.dry_run else 403


def _unknown_peer(t: Trace, rule: AccessRule, peer: str | None) -> None:
    """In pods the caller's address is the pod's, which the IR does not know: a rule on it leaves the answer open."""
    if peer is None and (rule.ip_blocks or rule.not_ip_blocks):
        t.certain = False


def http_side(t: Trace, callee: Sidecar, listener: HttpListener, who: str | None, targets,
              peer: str | None = None) -> int | None:
    """The status the callee's sidecar answers, or None: delivered to each target's version. `peer`: the
    caller's address as the callee sees it (its sidecar's own address on one host; None in pods)."""
    n = normalise(listener.paths, t.path)
    if n.note:
        t.step("callee", "path", n.note)
    if n.status is not None:
        return n.status
    t.path = n.path
    path, query = split_path(t.path)
    claims: dict = {}
    if listener.jwt is not None:
        v = jwt.check(listener.jwt, path, t.headers, query_params(query))
        t.step("callee", "jwt", v.decision, None, rule=v.rule, provider=v.provider)
        if not v.certain:
            t.certain = False
        if v.status is not None:
            return v.status
        claims = v.claims
        gone = jwt.removed_header(listener.jwt, v, t.headers)
        if gone is not None:
            del t.headers[gone]
            t.step("callee", "jwt", f"token removed from {gone} before the request goes on (forward_token: false)")
        for header, value in jwt.forwarded_claims(listener.jwt, v):
            t.headers[header.lower()] = value
            t.step("callee", "jwt", f"claim forwarded as {header}: {value}")
    status = authorize(t, listener.access, who, path, claims, peer=peer)
    if status is not None:
        return status
    rate_limits(t, "callee", callee.service, listener)
    for target in targets:
        deliver(t, listener, target.set_headers)
    return None


def rate_limits(t: Trace, side, name: str, listener: HttpListener) -> None:
    if listener.rate_limit is not None:
        b = listener.rate_limit
        t.step(side, "rate limit", f"listener bucket {b.requests} per {b.per}: this request passes unless it is empty (429)")
        t.maybe(429, None, f"{name}: listener bucket {b.requests} per {b.per} empty")
    g = listener.global_rate_limit
    if g is not None:
        fail = "refused" if g.failure_mode_deny else "let through"
        t.step(side, "rate limit", f"global service {g.cluster.service} (domain {g.domain}, {', '.join(g.descriptors)}): "
               f"429 when over its limit; {fail} when it does not answer within {g.timeout}", g.cluster.source)
        t.maybe(429, None, f"{name}: global rate limit domain {g.domain}")


def deliver(t: Trace, listener: HttpListener, marks: tuple[tuple[str, str], ...]) -> str | None:
    """The inbound route for the request with the headers the caller's target set (the version it chose, as the
    lowering marks it), and its endpoints; returns the version."""
    headers = {**t.matching_headers(), **{name.lower(): value for name, value in marks}}
    for vhost in listener.routes.virtual_hosts:
        for route in vhost.routes:
            if all(header_matches(h, headers) for h in route.headers):
                c = route.targets[0].cluster
                how = ", ".join(f"{h.name}: {h.value}" for h in route.headers) or "the default version"
                eps = ", ".join(str(e) for e in c.endpoints)
                tmo = f", timeout {route.timeout}" if route.timeout else ""
                t.step("callee", "endpoints", f"{c.version} ({how}): {eps}{tmo}", c.source, version=c.version,
                       endpoints=[str(e) for e in c.endpoints])
                return c.version
    return None


def tcp_side(t: Trace, listener: TcpListener, who: str | None, peer: str | None = None) -> str | None:
    """A tcp service: authorization on who calls only (per connection); returns the version or None (closed)."""
    status = authorize(t, listener.access, who, "/", {}, tcp=True, peer=peer)
    if status is not None:
        return None
    c = listener.cluster
    if listener.split:  # a tcp Route on one host: this sidecar draws the version (compiler/lower/tcp.py)
        split = ", ".join(f"{x.cluster.version} {percent_text(x.weight)}%" for x in listener.split)
        t.step("callee", "targets", f"one version drawn per connection: {split} (tcp Route; bytes, nothing else "
               "applies)", listener.source, weights={x.cluster.version: x.weight for x in listener.split})
        return c.version
    t.step("callee", "endpoints", f"{c.version}: {', '.join(str(e) for e in c.endpoints)} (bytes, nothing else applies)",
           c.source, version=c.version)
    return c.version
