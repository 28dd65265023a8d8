"""The HTTP filter chain of every HTTP connection manager, in order.

Order matters: Envoy runs decoders top to bottom, and the router must be
last. A filter is added to a listener only when one of its routes uses it,
and configured per route through `typed_per_filter_config`. Features add
their filter to this table (with the reason for its place); nothing else
decides filter order.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from compiler.emit import cors, fault
from compiler.emit.common import typed
from compiler.ir import HttpRoute, RouteTable


class HttpFilter(NamedTuple):
    name: str
    listener_config: Callable[[], dict]
    route_config: Callable[[HttpRoute], dict | None] | None  # None: always present, nothing per route


HTTP_FILTERS: tuple[HttpFilter, ...] = (
    # CORS first: preflights are answered here, before faults or routing can touch them.
    HttpFilter(cors.FILTER, cors.listener_config, cors.route_config),
    # Faults before the router, so an abort never reaches the upstream and a delay precedes it.
    HttpFilter(fault.FILTER, fault.listener_config, fault.route_config),
    # Terminal: forwards the request to the route's cluster.
    HttpFilter("envoy.filters.http.router", lambda: typed("envoy.extensions.filters.http.router.v3.Router"), None),
)


def _routes(table: RouteTable):
    for vhost in table.virtual_hosts:
        yield from vhost.routes


def http_filters(table: RouteTable) -> list[dict]:
    """The filters this listener needs, in table order."""
    used = []
    for f in HTTP_FILTERS:
        if f.route_config is None or any(f.route_config(r) is not None for r in _routes(table)):
            used.append({"name": f.name, "typed_config": f.listener_config()})
    return used


def per_filter_config(r: HttpRoute) -> dict:
    """`typed_per_filter_config` of one route."""
    out = {}
    for f in HTTP_FILTERS:
        if f.route_config is not None:
            config = f.route_config(r)
            if config is not None:
                out[f.name] = config
    return out
