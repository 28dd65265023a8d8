"""TrafficPolicy meaning: one per known service or ExternalService, hashing only with a hashing balancer,
checks that fit."""

from __future__ import annotations

from typing import Iterator

from compiler.diagnostics import Diagnostic, Severity, did_you_mean
from compiler.policy.resolved import Resolved, enforces

_HASHING = ("ring_hash", "maglev")
# What a tcp service cannot do, and why: its bytes carry no requests.
_HTTP_ONLY = (
    (("health_check",), "an HTTP GET checks each instance"),
    (("rate_limit",), "it takes a token per request"),
    (("global_rate_limit",), "it asks per request"),
    (("load_balancer", "hash_on"), "the key comes from each request"),
    (("connection_pool", "max_requests_per_connection"), "it counts requests"),
    (("connection_pool", "idle_timeout"), "it is HTTP's connection idle timeout"),
    (("connection_pool", "upstream_protocol"), "it is an HTTP version"),
    (("websockets",), "it is an HTTP upgrade; a tcp service's bytes pass anyway"),
)
_EXTERNAL_REFUSED = ("health_check", "rate_limit", "global_rate_limit")  # E525 on an ExternalService


def _get(obj, path: tuple[str, ...]):
    """The value at `path`, None when unset or when the model has no such field (a version's load_balancer
    has no hash_on: it is one per service)."""
    for part in path:
        obj = getattr(obj, part, None)
    return obj if obj is not False else None


def check_traffic_policies(view: Resolved) -> Iterator[Diagnostic]:
    services = view.services
    seen: dict[str, object] = {}
    for tp in view.policy.traffic_policies:
        subject = tp.subject
        if tp.service in seen:
            yield Diagnostic(
                "E230", "a second TrafficPolicy for this service (the first is at {0})", tp.where("service"), subject,
                refs=(seen[tp.service].where("service"),),
            )
        seen.setdefault(tp.service, tp)
        svc = services.get(tp.service)
        ext = view.externals.get(tp.service)
        if svc is None and ext is not None:
            svc = ext.service  # its inbound-side settings are E525 (compiler/check/external.py)
        elif svc is None:
            known = sorted(set(services) | set(view.externals))
            yield Diagnostic(
                "E231",
                f"'{tp.service}' is a Gateway: a TrafficPolicy is for the callers of a service; the gateway "
                "applies the TrafficPolicy of each service it routes to"
                if tp.service in view.gateways
                else f"unknown service '{tp.service}'{did_you_mean(tp.service, known)}",
                tp.where("service"), subject, "service",
            )
            continue
        lb = tp.load_balancer
        versions_hash = any(v.load_balancer and v.load_balancer.policy in _HASHING for v in tp.versions.values())
        if lb.hash_on is not None and lb.policy not in _HASHING and not versions_hash:
            yield Diagnostic(
                "E232", f"hash_on needs a hashing load balancer (policy: ring_hash or maglev), not {lb.policy}",
                tp.where("load_balancer", "hash_on"), subject, "load_balancer.hash_on",
            )
        if lb.policy in _HASHING and lb.hash_on is None:
            yield Diagnostic(
                "W233", f"{lb.policy} without hash_on has no key to hash: requests spread at random",
                tp.where("load_balancer"), subject, "load_balancer", severity=Severity.WARNING,
            )
        for path, why in _HTTP_ONLY:
            if ext is not None and tp.service not in services and path[0] in _EXTERNAL_REFUSED:
                continue  # refused on any ExternalService (E525)
            if _get(tp, path) is not None and not enforces(svc, path[-1]):
                field = ".".join(path)
                yield Diagnostic(
                    "E234", f"{field} needs an http or grpc service ({why}), but '{tp.service}' is tcp",
                    tp.where(*path), subject, field,
                )
        yield from _connections(view, tp, svc)
        if tp.service not in services:
            continue  # an ExternalService: its health_check and global_rate_limit are refused whole (E525)
        hc = tp.health_check
        if hc is not None and hc.timeout >= hc.interval:
            yield Diagnostic(
                "E236", f"health_check.timeout {hc.timeout} must be shorter than its interval {hc.interval}",
                tp.where("health_check", "timeout"), subject, "health_check.timeout",
            )
        g = tp.global_rate_limit
        if g is not None:
            limiter = services.get(g.service)
            if limiter is None:
                yield Diagnostic(
                    "E235", f"unknown rate-limit service '{g.service}'{did_you_mean(g.service, sorted(services))}",
                    tp.where("global_rate_limit", "service"), subject, "global_rate_limit.service",
                )
            elif limiter.protocol != "grpc":
                yield Diagnostic(
                    "E235", f"the rate-limit service '{g.service}' must speak grpc (protocol: grpc)",
                    tp.where("global_rate_limit", "service"), subject, "global_rate_limit.service",
                )


def _connections(view: Resolved, tp, svc) -> Iterator[Diagnostic]:
    """HTTP versions that cannot carry what the service speaks: gRPC needs HTTP/2 (E238); a WebSocket
    upgrade is an HTTP/1.1 request, which Envoy cannot hand to an HTTP/2-only upstream (E239)."""
    pool = tp.connection_pool
    if svc.protocol == "grpc" and pool is not None and pool.upstream_protocol == "http1":
        yield Diagnostic(
            "E238", f"'{tp.service}' is grpc: gRPC needs HTTP/2, so upstream_protocol cannot be http1",
            tp.where("connection_pool", "upstream_protocol"), tp.subject, "connection_pool.upstream_protocol",
        )
    if not tp.websockets or svc.protocol == "tcp":
        return
    effective = view.pool_of(tp.service)
    if svc.protocol == "grpc":
        why = f"'{tp.service}' is grpc (HTTP/2 to its app)"
    elif effective is not None and effective.upstream_protocol == "http2":
        whose = "its" if pool is not None else "the Mesh's default"
        why = f"{whose} connection_pool says upstream_protocol: http2"
    else:
        return
    yield Diagnostic(
        "E239", f"websockets need HTTP/1.1 to the app (an upgrade is an HTTP/1.1 request), but {why}",
        tp.where("websockets"), tp.subject, "websockets",
    )
