"""IR route tables -> Envoy `config.route.v3.RouteConfiguration`."""

from __future__ import annotations

from compiler.emit import names
from compiler.emit.common import provenance
from compiler.emit.http_filters import per_filter_config
from compiler.emit.route_action import action, set_headers
from compiler.emit.route_match import route_match
from compiler.ir import HeaderOps, HttpRoute, RouteTable, VirtualHost


def _header_ops(out: dict, ops: HeaderOps, direction: str) -> None:
    to_add = set_headers(ops.add, "APPEND_IF_EXISTS_OR_ADD") + set_headers(ops.set)
    if to_add:
        out[f"{direction}_headers_to_add"] = to_add
    if ops.remove:
        out[f"{direction}_headers_to_remove"] = list(ops.remove)


def route(r: HttpRoute) -> dict:
    kind, value = action(r)
    out = {"match": route_match(r), kind: value, "metadata": provenance(r.source)}
    _header_ops(out, r.request_headers, "request")
    _header_ops(out, r.response_headers, "response")
    filters = per_filter_config(r)
    if filters:
        out["typed_per_filter_config"] = filters
    return out


def virtual_host(v: VirtualHost, build_route=route) -> dict:
    return {"name": v.name, "domains": list(v.domains), "routes": [build_route(r) for r in v.routes]}


def route_configuration(t: RouteTable, build_vhost=virtual_host) -> dict:
    return {"name": names.route_config(t.name), "virtual_hosts": [build_vhost(v) for v in t.virtual_hosts]}
