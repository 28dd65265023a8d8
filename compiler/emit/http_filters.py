"""The HTTP filter chain of every HTTP connection manager, in order.

Order matters: Envoy runs decoders top to bottom, and the router must be
last. Features add their filter to this table (with the reason for its
place); nothing else decides filter order.
"""

from __future__ import annotations

from compiler.emit.common import typed

# (filter name, typed config) in execution order.
HTTP_FILTERS: tuple[tuple[str, dict], ...] = (
    # Terminal: forwards the request to the route's cluster.
    ("envoy.filters.http.router", typed("envoy.extensions.filters.http.router.v3.Router")),
)


def http_filters() -> list[dict]:
    return [{"name": name, "typed_config": config} for name, config in HTTP_FILTERS]
