"""Envoy's matching, read from the IR: virtual hosts by Host, route conditions, security path conditions.

Every function answers whether something matches and, when it does not, why (a short phrase naming the
condition that failed), so `explain` can print the rules a request skipped. Regexes are RE2 (google-re2, as
Envoy's `safe_regex`) and must match the whole value.
"""

from __future__ import annotations

from functools import lru_cache
import re2

from compiler.ir import HeaderCondition, HttpRoute, PathCondition, QueryCondition, VirtualHost


@lru_cache(maxsize=512)
def _compiled(pattern: str):
    return re2.compile(pattern)


def full_match(pattern: str, text: str) -> bool:
    return _compiled(pattern).fullmatch(text) is not None


def split_path(path: str) -> tuple[str, str]:
    """(path, query) of a request target."""
    path, _, query = path.partition("?")
    return path, query


def query_params(query: str) -> dict[str, str]:
    """The first value of each query parameter, as written: Envoy's route matcher does not percent-decode
    (`QueryParamsMulti::parseQueryString`), so `variant=%62` is not `variant=b`."""
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out.setdefault(name, value)
    return out


def path_matches(p: PathCondition, path: str) -> bool:
    text, value = (path.lower(), p.value.lower()) if p.ignore_case else (path, p.value)
    if p.kind == "exact":
        return text == value
    if p.kind == "prefix":
        return text.startswith(value)
    if p.kind == "path_prefix":
        if value.endswith("/"):
            return text.startswith(value)
        return text == value or text.startswith(value + "/")
    return full_match(f"(?i:{p.value})" if p.ignore_case else p.value, path)


def describe_path(p: PathCondition) -> str:
    kind = {"prefix": "prefix", "path_prefix": "path prefix", "exact": "exact", "regex": "regex"}[p.kind]
    return f"path {kind} {p.value}" + (" (any case)" if p.ignore_case else "")


def header_value(headers: dict[str, str], name: str) -> str | None:
    return headers.get(name.lower())


def header_matches(h: HeaderCondition, headers: dict[str, str]) -> bool:
    value = header_value(headers, h.name)
    if h.kind == "present":
        return value is not None
    if h.kind == "absent":
        return value is None
    if value is None:
        return False
    if h.kind == "exact":
        return value == h.value
    if h.kind == "prefix":
        return value.startswith(h.value)
    return full_match(h.value, value)


def describe_header(h: HeaderCondition) -> str:
    if h.name == ":method":
        return f"method {h.value.replace('|', ' or ')}"
    if h.name == ":path" and h.kind == "prefix":
        return f"gateway route path prefix {h.value}"
    if h.kind in ("present", "absent"):
        return f"header {h.name} {h.kind}"
    return f"header {h.name} {h.kind} {h.value!r}"


def query_matches(q: QueryCondition, params: dict[str, str]) -> bool:
    value = params.get(q.name)
    if value is None:
        return False
    if q.kind == "present":
        return True
    if q.kind == "exact":
        return value == q.value
    if q.kind == "prefix":
        return value.startswith(q.value)
    return full_match(q.value, value)


def describe_query(q: QueryCondition) -> str:
    return f"query {q.name} present" if q.kind == "present" else f"query {q.name} {q.kind} {q.value!r}"


def route_mismatch(route: HttpRoute, path: str, headers: dict[str, str], params: dict[str, str]) -> str | None:
    """None when the route matches; else why not: the first failing condition and what the request had."""
    if not path_matches(route.path, path):
        return f"{describe_path(route.path)} does not match {path}"
    for h in route.headers:
        if not header_matches(h, headers):
            got = header_value(headers, h.name)
            had = "none" if got is None else repr(got)
            return f"{describe_header(h)} not met (request: {had})"
    for q in route.query:
        if not query_matches(q, params):
            got = params.get(q.name)
            return f"{describe_query(q)} not met (request: {'none' if got is None else repr(got)})"
    return None


def _held(h: HeaderCondition) -> str:
    """A header condition that held, in short: `end-user: jason`, `x-group: beta*`."""
    if h.name.startswith(":") or h.kind not in ("exact", "prefix"):
        return describe_header(h)
    return f"{h.name}: {h.value}{'*' if h.kind == 'prefix' else ''}"


def route_conditions(route: HttpRoute) -> str:
    """What a matched route asked of the request, in short."""
    parts = [describe_path(route.path)] if route.path.value != "/" or route.path.kind != "prefix" else []
    parts += [_held(h) for h in route.headers]
    parts += [f"?{q.name}={q.value}" if q.kind == "exact" else describe_query(q) for q in route.query]
    return ", ".join(parts) or "any request"


def virtual_host(vhosts: tuple[VirtualHost, ...], host: str) -> tuple[VirtualHost | None, str]:
    """Envoy's choice of virtual host for `host` (lowercased): an exact domain, then suffix wildcards
    (`*.example.com`, longest first), then prefix wildcards (`api.*`), then `*`. Returns it and how it matched."""
    host = host.lower()
    exact, suffix, prefix, anything = {}, [], [], None
    for v in vhosts:
        for d in v.domains:
            d = d.lower()
            if d == "*":
                anything = anything or v
            elif d.startswith("*"):
                suffix.append((d[1:], v))
            elif d.endswith("*"):
                prefix.append((d[:-1], v))
            else:
                exact.setdefault(d, v)
    if host in exact:
        return exact[host], f"exact domain {host}"
    for tail, v in sorted(suffix, key=lambda t: -len(t[0])):
        if host.endswith(tail) and len(host) > len(tail):
            return v, f"suffix wildcard *{tail}"
    for head, v in sorted(prefix, key=lambda t: -len(t[0])):
        if host.startswith(head) and len(host) > len(head):
            return v, f"prefix wildcard {head}*"
    if anything is not None:
        return anything, "`*`: no other domain matched"
    return None, "no virtual host"
