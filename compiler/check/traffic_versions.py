"""TrafficPolicy `versions` (per-version settings): each names a version of the service, and what it sets can
apply to that version (E237, and the service-level checks E234, E236, E525, W233 at the version's field)."""

from __future__ import annotations

from typing import Iterator

from compiler.check.external import _INBOUND_ONLY
from compiler.check.traffic import _HTTP_ONLY, _get
from compiler.diagnostics import Diagnostic, Severity, did_you_mean
from compiler.policy.protections import FIELDS
from compiler.policy.resolved import Resolved

_HASHING = ("ring_hash", "maglev")


def check_version_traffic(view: Resolved) -> Iterator[Diagnostic]:
    for tp in view.policy.traffic_policies:
        if not tp.versions:
            continue
        external = tp.service in view.externals and tp.service not in view.views
        target = view.externals[tp.service] if external else view.views.get(tp.service)
        if target is None:
            continue  # unknown service: E231
        for v, vt in tp.versions.items():
            if v not in target.versions:
                yield _unknown(tp, v, target, external)
                continue
            yield from _version(tp, v, vt, target, external)


def _unknown(tp, v: str, target, external: bool) -> Diagnostic:
    if external:
        why = f"'{tp.service}' is an ExternalService: it has one version, 'default'"
    elif not target.service.versions:
        why = f"'{tp.service}' declares no versions: its one version is 'default'"
    else:
        why = f"'{tp.service}' has no version '{v}'{did_you_mean(v, list(target.versions))} (its versions: " + (
            ", ".join(target.versions) + ")"
        )
    return Diagnostic("E237", f"{why}; settings for a version it does not have would apply nowhere",
                      tp.where("versions", v), tp.subject, f"versions.{v}")


def _version(tp, v: str, vt, target, external: bool) -> Iterator[Diagnostic]:
    subject = tp.subject
    at = lambda *path: tp.where("versions", v, *path)  # noqa: E731
    name = lambda *path: ".".join(("versions", v) + path)  # noqa: E731
    if external and vt.health_check is not None:
        yield Diagnostic(
            "E525",
            f"'{tp.service}' is an ExternalService: health_check cannot apply ({dict(_INBOUND_ONLY)['health_check']}); "
            "eject failing hosts with outlier_detection instead",
            at("health_check"), subject, name("health_check"),
        )
    elif target.listener == "tcp":
        for path, why in _HTTP_ONLY:
            if path[0] in FIELDS and _get(vt, path[:1]) is not None and _get(vt, path) is not None:
                yield Diagnostic(
                    "E234",
                    f"{name(*path)} needs an http or grpc service ({why}), but '{tp.service}' is tcp",
                    at(*path), subject, name(*path),
                )
    pool = vt.connection_pool
    protocol = target.service.protocol
    if pool is not None and pool.upstream_protocol == "http1" and protocol == "grpc":
        yield Diagnostic(
            "E238", f"'{tp.service}' is grpc: gRPC needs HTTP/2, so upstream_protocol cannot be http1",
            at("connection_pool", "upstream_protocol"), subject, name("connection_pool", "upstream_protocol"),
        )
    if pool is not None and pool.upstream_protocol == "http2" and tp.websockets and protocol == "http":
        yield Diagnostic(
            "E239", f"websockets need HTTP/1.1 to the app (an upgrade is an HTTP/1.1 request), but version {v}'s "
            "connection_pool says upstream_protocol: http2",
            at("connection_pool", "upstream_protocol"), subject, name("connection_pool", "upstream_protocol"),
        )
    hc = vt.health_check
    if hc is not None and not external and hc.timeout >= hc.interval:
        yield Diagnostic(
            "E236", f"health_check.timeout {hc.timeout} must be shorter than its interval {hc.interval}",
            at("health_check", "timeout"), subject, name("health_check", "timeout"),
        )
    lb = vt.load_balancer
    if lb is not None and lb.policy in _HASHING and tp.load_balancer.hash_on is None:
        yield Diagnostic(
            "W233",
            f"{lb.policy} for version {v} without the TrafficPolicy's load_balancer.hash_on has no key to hash: its "
            "requests spread at random (the key is one per service: set load_balancer.hash_on on the TrafficPolicy)",
            at("load_balancer"), subject, name("load_balancer"), severity=Severity.WARNING,
        )
