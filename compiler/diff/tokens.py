"""Requests without a JWT, before and after: which paths of a service (or a gateway) now need a token.

Read from the IR: the `jwt` of a service's inbound listener or a gateway's edge listeners, as its Envoy
applies it (rules in order, the first whose path prefix matches decides; a request no rule matches
needs nothing). Tried on the paths the rules name on either side and one stand-in for the others. An
invalid token is refused (401) wherever a rule matches; what changes for a reviewer is where a request
without one goes through.
"""

from __future__ import annotations

from compiler.diff.authz import ANY_PATH, OTHER_PATH, OTHER_PATHS, path_matches
from compiler.ir import HttpListener, JwtCheck, MeshIR

PASSES, REFUSED = "passes", "refused (401)"


def checks(ir: MeshIR) -> dict[str, JwtCheck | None]:
    """Service or gateway name -> the token check of its inbound (or first edge) listener."""
    out: dict[str, JwtCheck | None] = {}
    for sc in ir.sidecars:
        found = [l.jwt for l in sc.listeners if isinstance(l, HttpListener) and l.direction in ("inbound", "edge")]
        if found or sc.gateway is not None:
            out[sc.service] = next((j for j in found if j is not None), None)
    return out


def without_token(check: JwtCheck | None, path: str) -> str:
    if check is None:
        return PASSES
    for rule in check.rules:
        if not rule.paths or any(path_matches(p, path) for p in rule.paths):
            return PASSES if rule.allow_missing else REFUSED
    return PASSES


def token_changes(old: MeshIR, new: MeshIR) -> list[tuple[str, str, str, str]]:
    """(service or gateway, path label, before, after) where a request without a token fares differently."""
    a, b = checks(old), checks(new)
    out = []
    for name in sorted(set(a) & set(b)):
        if a[name] == b[name]:
            continue
        rules = [r for c in (a[name], b[name]) if c is not None for r in c.rules]
        paths = sorted({p.value for r in rules for p in r.paths})
        tries = [(p, p) for p in paths] + [(OTHER_PATHS if paths else ANY_PATH, OTHER_PATH)]
        for label, path in tries:
            before, after = without_token(a[name], path), without_token(b[name], path)
            if before != after:
                out.append((name, label, before, after))
    return out
