"""Shadowed rules: a rule that can never match because an earlier rule of its Route matches everything it does.

Envoy tries a Route's rules in order and the first match decides, so a rule
after one that matches a superset of its requests is dead configuration, and
almost always a mistake in the order (a catch-all written first) or in a
condition. `covers()` proves the superset from the conditions as written;
when it cannot prove it, nothing is reported (no false positives).

A Gateway's routes are tried in order too, per listener and host:
`check_shadowed_gateway_routes()` reports a route that an earlier one covers
(its hosts, its path prefix, and a destination that answers every request).
"""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic, Severity
from compiler.policy import PolicySet
from compiler.policy.caller import covers_callers
from compiler.policy.route import CookieMatch, HeaderMatch, Match, PathMatch, QueryMatch


def check_shadowed_rules(policy: PolicySet) -> Iterator[Diagnostic]:
    """E218 for every rule that an earlier rule of the same Route covers (the first such rule is named)."""
    for route in policy.routes:
        for i, later in enumerate(route.rules):
            for j in range(i):
                if covers(route.rules[j].match, later.match):
                    yield Diagnostic(
                        "E218",
                        f"never matches: rules[{j}] (at {{0}}) already matches every request it matches",
                        route.where("rules", i),
                        route.subject,
                        f"rules[{i}]",
                        refs=(route.where("rules", j),),
                    )
                    break


def covers(a: Match, b: Match) -> bool:
    """True only when every request that `b` matches is provably matched by `a` too.

    `a` covers `b` when its path covers `b`'s path and each of its other
    conditions is implied by one of `b`'s conditions. Detected:

    path (Envoy `prefix` is a case-sensitive plain string prefix of `:path`, no
    segment boundary; `path` and `safe_regex` compare the path without the
    query string; routing only sees paths starting with '/'):
      - prefix "/" covers every path, regexes included;
      - prefix p covers prefix q when q starts with p (so /api covers /apis),
        and exact v when v starts with p;
      - exact v covers exact v; regex r covers regex r (the same text).
    methods: `a` without methods allows all; else `b` must name methods, all
      of them among `a`'s.
    headers (by name; `present: false` is absence):
      - present covers exact, prefix, regex or present on that header;
      - exact v covers exact v;
      - prefix p covers exact v when v starts with p, and prefix q when q starts with p;
      - regex r covers regex r only; absent covers absent only.
    query parameters: as headers (no absence).
    cookies: the same cookie with the same `exact` value or the same `regex`.

    Deliberately not detected (reported as not covering, even when it does):
    regex subsumption in general (a regex against a different regex, a prefix
    or an exact path or value; regexes are only compared as text), an exact
    path against a prefix, and implications across fields (a `:method` or
    `cookie` header condition against `methods` or `cookies`).
    callers: `a` without callers admits every caller; else each of `b`'s callers
      (and its versions) must be among `a`'s (compiler/policy/caller.py).
    Conditions that do not take part in matching (fault headers, actions)
    are ignored: they never change which rule a request takes.
    """
    return (
        covers_path(a.path, b.path)
        and _methods_cover(a.methods, b.methods)
        and all(any(_value_covers(x, y) for y in b.headers if y.name == x.name) for x in a.headers)
        and all(any(_value_covers(x, y) for y in b.query if y.name == x.name) for x in a.query)
        and all(any(_cookie_covers(x, y) for y in b.cookies) for x in a.cookies)
        and covers_callers(a.callers, b.callers)
    )


def covers_path(a: PathMatch, b: PathMatch, *, segments: bool = False, case_sensitive: bool = True) -> bool:
    """Whether every path `b` matches is matched by `a` too.

    Routes (the default): a prefix is a string prefix, so /api covers /apis. Security rules
    (`segments=True`, AuthorizationPolicy and RequestAuthentication paths): a prefix is a path prefix,
    so /api covers /api, /api/ and /api/v1 but not /apis, and /api/ does not cover /api.
    `case_sensitive=False`: prefixes and exact paths are compared case-insensitively (regexes, as
    always, only as the same text).
    """
    fold = (lambda v: v) if case_sensitive else _ascii_lower
    if a.prefix is not None:
        if a.prefix == "/":
            return True  # every path that reaches routing starts with '/'
        other = b.prefix if b.prefix is not None else b.exact
        if other is None:
            return False
        if segments:
            return under_path(fold(other), fold(a.prefix))
        return other.startswith(a.prefix)
    if a.exact is not None:
        return b.exact is not None and fold(b.exact) == fold(a.exact)
    return b.regex is not None and b.regex == a.regex


def _ascii_lower(value: str) -> str:
    """Envoy's `ignore_case` folds ASCII letters only."""
    return value.encode().lower().decode()


def under_path(path: str, prefix: str) -> bool:
    """`path` (a path, or a path prefix) lies within the path prefix `prefix`: `/admin` holds `/admin`,
    `/admin/` and `/admin/x`, never `/administrator`; a prefix ending in '/' holds what starts with it."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _methods_cover(a: list[str], b: list[str]) -> bool:
    if not a:
        return True
    return bool(b) and set(b) <= set(a)


def _value_covers(a: HeaderMatch | QueryMatch, b: HeaderMatch | QueryMatch) -> bool:
    """Whether condition `b` on a header (or query parameter) implies `a` on the same one."""
    if a.present is True:
        return b.present is True or any(v is not None for v in (b.exact, b.prefix, b.regex))
    if a.present is False:
        return b.present is False
    if a.exact is not None:
        return b.exact == a.exact
    if a.prefix is not None:
        return (b.exact is not None and b.exact.startswith(a.prefix)) or (
            b.prefix is not None and b.prefix.startswith(a.prefix)
        )
    return b.regex is not None and b.regex == a.regex


def _cookie_covers(a: CookieMatch, b: CookieMatch) -> bool:
    if a.name != b.name:
        return False
    if a.exact is not None:
        return b.exact == a.exact
    return b.regex is not None and b.regex == a.regex


# -- gateway routes ----------------------------------------------------------


def host_covers(a: str, b: str) -> bool:
    """Every name the host pattern `b` matches is matched by `a` too (Envoy's virtual host domains and SNI
    server names: `*.example.com` matches any name ending in `.example.com`, however many labels)."""
    return a == b or (a.startswith("*.") and b.endswith(a[1:]) and len(b) > len(a) - 1)


def hosts_cover(a: list[str], b: list[str]) -> bool:
    """Every host the list `b` matches is matched by `a` (an empty list is any host)."""
    if not a:
        return True
    return bool(b) and all(any(host_covers(x, y) for x in a) for y in b)


def check_shadowed_gateway_routes(view) -> Iterator[Diagnostic]:
    """E511 for a gateway route that earlier routes cover for every host it names on every listener it is
    served on; W512 when they do for some of its hosts or listeners only (the rest still reach it).

    The gateway tries its routes in order (on each listener, in each virtual host, see compiler/lower/gateway.py):
    an earlier route covers a later one for a host when it is served on the same listener, its hosts cover
    that host (no hosts: any host), its path prefix is a prefix of the later one's, and its destination answers
    every request it gets: no Route, or a Route with a rule that matches everything. A destination whose
    rules match only some requests lets the others fall through to the later routes, so nothing is said.
    """
    from compiler.check.routes import matches_everything

    def answers_all(name: str) -> bool:
        sv = view.views.get(name)
        if sv is None or sv.listener != "http":
            return False
        return sv.route is None or any(matches_everything(rule) for rule in sv.route.rules)

    for gv in view.all_gateways:
        gw = gv.gateway
        for i, (later, on) in enumerate(gv.routes):
            # (listener, host) -> the first earlier route that takes all its requests; host None: any host
            pairs = [(name, host) for name in dict.fromkeys(on) for host in (later.hosts or [None])]
            shadowed: dict[tuple, int] = {}
            for name, host in pairs:
                for j in range(i):
                    earlier, earlier_on = gv.routes[j]
                    if (
                        name in earlier_on
                        and hosts_cover(earlier.hosts, [host] if host else [])
                        and later.path.startswith(earlier.path)
                        and answers_all(earlier.to)
                    ):
                        shadowed[(name, host)] = j
                        break
            if not shadowed:
                continue
            j = next(iter(shadowed.values()))
            if len(shadowed) == len(pairs):
                yield Diagnostic(
                    "E511",
                    f"never matches: routes[{j}] (at {{0}}) is served on its listeners too, already matches every "
                    f"host and path it matches, and '{gv.routes[j][0].to}' answers every request it gets; put the "
                    "more specific route first",
                    gw.where("routes", i), gw.subject, f"routes[{i}]", refs=(gw.where("routes", j),),
                )
                continue
            where = []
            for name in dict.fromkeys(on):
                hosts = [h for (n, h) in shadowed if n == name]
                if not hosts:
                    continue
                mine = [h for (n, h) in pairs if n == name]
                what = "any host" if hosts == [None] else ", ".join(hosts)
                where.append(f"on listener '{name}'" if len(hosts) == len(mine) else f"for {what} on listener '{name}'")
            yield Diagnostic(
                "W512",
                f"never matches {'; '.join(where)}: earlier routes (routes[{j}] at {{0}}) already match every "
                "request it would get there; put the more specific route first, or drop what it cannot serve",
                gw.where("routes", i), gw.subject, f"routes[{i}]", refs=(gw.where("routes", j),),
                severity=Severity.WARNING,
            )
