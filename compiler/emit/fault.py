"""Fault injection: `envoy.filters.http.fault`, configured per route."""

from __future__ import annotations

from compiler.emit.common import typed
from compiler.emit.route_action import fraction
from compiler.emit.route_match import header_matcher
from compiler.ir import HttpRoute

FILTER = "envoy.filters.http.fault"
_TYPE = "envoy.extensions.filters.http.fault.v3.HTTPFault"


def listener_config() -> dict:
    """Listener-level config: no fault unless a route says so."""
    return typed(_TYPE)


def route_config(r: HttpRoute) -> dict | None:
    f = r.fault
    if f is None:
        return None
    out = typed(_TYPE)
    if f.delay is not None:
        out["delay"] = {"fixed_delay": f.delay.proto(), "percentage": fraction(f.delay_percent)}
    if f.abort_status is not None or f.abort_grpc_status is not None:
        abort = {"percentage": fraction(f.abort_percent)}
        if f.abort_status is not None:
            abort["http_status"] = f.abort_status
        else:
            abort["grpc_status"] = f.abort_grpc_status
        out["abort"] = abort
    if f.headers:
        out["headers"] = [header_matcher(h) for h in f.headers]
    return out
