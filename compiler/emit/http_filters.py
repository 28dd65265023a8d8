"""The HTTP filter chain of every HTTP connection manager, in order.

Order matters: Envoy runs decoders top to bottom, and the router must be
last. A filter is added to a listener only when the listener or one of its
routes uses it; per-route settings go through `typed_per_filter_config`.
Features add their filter to this table (with the reason for its place);
nothing else decides filter order.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from compiler.emit import cors, edge, external, fault, jwt, ratelimit, rbac
from compiler.emit.common import typed
from compiler.ir import HttpListener, HttpRoute


class HttpFilter(NamedTuple):
    name: str
    listener_config: Callable[[HttpListener], dict | None]  # needed by the listener itself, or None
    route_config: Callable[[HttpRoute], dict | None] | None  # per-route config, or None
    base_config: Callable[[], dict] | None = None  # listener config when only routes need the filter


def _never(_: HttpListener) -> None:
    return None


HTTP_FILTERS: tuple[HttpFilter, ...] = (
    # CORS first: preflights are answered here, before limits, faults or routing can touch them.
    HttpFilter(cors.FILTER, _never, cors.route_config, cors.listener_config),
    # Authentication before authorization: a token is verified (401 if invalid) and its claims recorded.
    HttpFilter(jwt.FILTER, jwt.listener_config, None),
    # Authorization before anything that costs: deny rules first (deny wins), then the allow-list.
    HttpFilter(rbac.DENY, rbac.deny_config, None),
    HttpFilter(rbac.ALLOW, rbac.allow_config, None),
    # Local rate limits next: excess requests are refused (429) before anything costs more.
    HttpFilter(ratelimit.LOCAL, ratelimit.local_listener_config, ratelimit.local_route_config, ratelimit.local_base_config),
    # The global rate-limit service after the local buckets, which are cheaper and shed load first.
    HttpFilter(ratelimit.GLOBAL, ratelimit.global_listener_config, None),
    # A gateway's body limit after every cheaper refusal (token, rate limits): a refused client never makes
    # the gateway hold its body; before faults and the router, which would forward the body as it streams.
    HttpFilter(edge.BUFFER_FILTER, edge.buffer_config, None),
    # Faults before the router, so an abort never reaches the upstream and a delay precedes it.
    HttpFilter(fault.FILTER, _never, fault.route_config, fault.listener_config),
    # Resolves an undeclared Host (Mesh egress.undeclared: allow) right before the router, once every filter
    # that may refuse the request has run: nothing is resolved for a request that goes nowhere.
    HttpFilter(external.FORWARD_PROXY, external.forward_proxy_filter, None),
    # Terminal: forwards the request to the route's cluster.
    HttpFilter("envoy.filters.http.router", lambda _: typed("envoy.extensions.filters.http.router.v3.Router"), None),
)


def _routes(listener: HttpListener):
    for vhost in listener.routes.virtual_hosts:
        yield from vhost.routes


def http_filters(listener: HttpListener) -> list[dict]:
    """The filters this listener needs, in table order."""
    used = []
    for f in HTTP_FILTERS:
        config = f.listener_config(listener)
        if config is None and f.route_config is not None and f.base_config is not None:
            if any(f.route_config(r) is not None for r in _routes(listener)):
                config = f.base_config()
        if config is not None:
            used.append({"name": f.name, "typed_config": config})
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
