"""CORS: `envoy.filters.http.cors`, configured per route."""

from __future__ import annotations

from compiler.emit.common import typed
from compiler.ir import HttpRoute

FILTER = "envoy.filters.http.cors"


def listener_config() -> dict:
    return typed("envoy.extensions.filters.http.cors.v3.Cors")


def route_config(r: HttpRoute) -> dict | None:
    c = r.cors
    if c is None:
        return None
    origins = [{"exact": o} for o in c.origins_exact] + [{"safe_regex": {"regex": o}} for o in c.origins_regex]
    out = typed("envoy.extensions.filters.http.cors.v3.CorsPolicy", allow_origin_string_match=origins)
    if c.methods:
        out["allow_methods"] = ",".join(c.methods)
    if c.headers:
        out["allow_headers"] = ",".join(c.headers)
    if c.expose_headers:
        out["expose_headers"] = ",".join(c.expose_headers)
    if c.max_age is not None:
        out["max_age"] = str(c.max_age.ms // 1000)
    if c.credentials:
        out["allow_credentials"] = True
    return out
