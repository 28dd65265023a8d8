"""IR route conditions -> Envoy `config.route.v3.RouteMatch` (and header matchers, reused by filters)."""

from __future__ import annotations

from compiler.ir import CALLER_VERSION_KEY, HeaderCondition, HttpRoute, PathCondition, QueryCondition


def _path(p: PathCondition) -> dict:
    if p.kind == "prefix":
        return {"prefix": p.value}
    if p.kind == "exact":
        return {"path": p.value}
    return {"safe_regex": {"regex": p.value}}


def _string_match(kind: str, value: str) -> dict:
    return {"safe_regex": {"regex": value}} if kind == "regex" else {kind: value}


def header_matcher(h: HeaderCondition) -> dict:
    if h.kind == "present":
        return {"name": h.name, "present_match": True}
    if h.kind == "absent":
        return {"name": h.name, "present_match": False}
    return {"name": h.name, "string_match": _string_match(h.kind, h.value)}


def _query(q: QueryCondition) -> dict:
    if q.kind == "present":
        return {"name": q.name, "present_match": True}
    return {"name": q.name, "string_match": _string_match(q.kind, q.value)}


def route_match(r: HttpRoute) -> dict:
    match = _path(r.path)
    if r.headers:
        match["headers"] = [header_matcher(h) for h in r.headers]
    if r.query:
        match["query_parameters"] = [_query(q) for q in r.query]
    if r.caller_versions:
        # The calling app's version, kept with its connection by the outbound listener (compiler/emit/listeners.py)
        versions = r.caller_versions
        string = {"exact": versions[0]} if len(versions) == 1 else {"safe_regex": {"regex": "|".join(versions)}}
        match["filter_state"] = [{"key": CALLER_VERSION_KEY, "string_match": string}]
    return match
