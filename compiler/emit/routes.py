"""IR route tables -> Envoy `config.route.v3.RouteConfiguration`."""

from __future__ import annotations

from compiler.emit import names
from compiler.emit.common import provenance
from compiler.ir import HeaderCondition, HttpRoute, PathCondition, RouteTable, VirtualHost


def _path(p: PathCondition) -> dict:
    if p.kind == "prefix":
        return {"prefix": p.value}
    if p.kind == "exact":
        return {"path": p.value}
    return {"safe_regex": {"regex": p.value}}


def _header(h: HeaderCondition) -> dict:
    if h.kind == "present":
        return {"name": h.name, "present_match": True}
    if h.kind == "absent":
        return {"name": h.name, "present_match": False}
    if h.kind == "regex":
        return {"name": h.name, "string_match": {"safe_regex": {"regex": h.value}}}
    return {"name": h.name, "string_match": {h.kind: h.value}}


def _set_headers(pairs) -> list[dict]:
    return [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for k, v in pairs]


def route(r: HttpRoute) -> dict:
    match = _path(r.path)
    if r.headers:
        match["headers"] = [_header(h) for h in r.headers]
    action: dict
    if len(r.targets) == 1 and not r.targets[0].set_headers:
        action = {"cluster": names.cluster(r.targets[0].cluster)}
    else:
        clusters = []
        for t in r.targets:
            entry = {"name": names.cluster(t.cluster), "weight": t.weight}
            if t.set_headers:
                entry["request_headers_to_add"] = _set_headers(t.set_headers)
            clusters.append(entry)
        action = {"weighted_clusters": {"clusters": clusters}}
    action["timeout"] = r.timeout.proto()
    out = {"match": match, "route": action, "metadata": provenance(r.source)}
    if r.remove_headers:
        out["request_headers_to_remove"] = list(r.remove_headers)
    return out


def virtual_host(v: VirtualHost, build_route=route) -> dict:
    return {"name": v.name, "domains": list(v.domains), "routes": [build_route(r) for r in v.routes]}


def route_configuration(t: RouteTable, build_vhost=virtual_host) -> dict:
    return {"name": names.route_config(t.name), "virtual_hosts": [build_vhost(v) for v in t.virtual_hosts]}
