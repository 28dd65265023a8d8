"""Who may call what, before and after: caller -> service (method, path) pairs newly allowed or denied.

Read from the IR: each service's inbound listener's `Access` (deny rules, allow rules or none, dry run),
which is what its Envoy enforces, the Mesh's `authorization.default` included. The callers are the
services and gateways that exist (each by its SPIFFE identity on that side); the requests are the paths
and methods that the target's rules mention on either side, plus one representative of everything
else ("other paths", "other methods"). A rule that also needs request headers or JWT claims makes the
outcome `conditional` (it depends on what the request carries), as do IP blocks when the caller's
address is not known (in pods; on one host it is its sidecar's own); namespaces and the `not_` conditions are decided like `from`, paths and methods.
A dry-run policy refuses nothing, so its requests are `allowed`. A call to a service without mTLS carries no identity; a caller without a
certificate is refused by a strict service before any rule (`refused (no mTLS)`). A tcp service is authorized per connection, on the caller only (`connect`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from compiler.explain.match import path_matches  # Envoy's path matching, RE2 regexes (shared with explain)
from compiler.ir import Access, AccessRule, MeshIR, TcpListener

ALLOWED, DENIED, CONDITIONAL = "allowed", "denied", "conditional"
NO_MTLS = "refused (no mTLS)"
"""A caller without a certificate (its own mode `disable`) toward a service that takes only mTLS."""
OTHER_PATH = "/meshc-diff/other"  # stands for every path no rule names
OTHER_PATHS, ANY_PATH = "other paths", "any path"
OTHER_METHODS, ANY_METHOD = "other methods", "any method"
CONNECT = "connect"
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")


@dataclass(frozen=True)
class Inbound:
    """A service's inbound authorization as its Envoy enforces it."""

    access: Access | None
    tcp: bool
    tls_mode: str | None = None
    """strict | permissive (mTLS terminated: callers with a certificate are known by it) | None (plaintext)."""


@dataclass(frozen=True)
class Pair:
    caller: str
    service: str
    method: str
    path: str
    before: str
    after: str
    sent: tuple[str | None, str | None] = (None, None)
    """The request tried for it (method, path): a stand-in's concrete method and path; (None, None) for a
    connection."""

    @property
    def request(self) -> str:
        if self.method == CONNECT:
            return CONNECT
        return f"{self.method} {self.path}" if self.path.startswith("/") else f"{self.method}, {self.path}"


def inbound(ir: MeshIR) -> dict[str, Inbound]:
    out = {}
    for sc in ir.sidecars:
        if sc.gateway is not None:
            continue
        for listener in sc.listeners:
            if listener.direction == "inbound":
                out[sc.service] = Inbound(listener.access, isinstance(listener, TcpListener), listener.tls_mode)
    return out


def callers(ir: MeshIR) -> dict[str, str | None]:
    """Service or gateway name -> its SPIFFE identity (None: it has no certificate, so no identity to show)."""
    return {sc.service: (sc.tls.identity if sc.tls else None) for sc in ir.sidecars}


def addresses(ir: MeshIR) -> dict[str, str | None]:
    """Service or gateway name -> the address its connections come from (one host: its sidecar's own; None in
    pods or elsewhere, where IP blocks stay `conditional`)."""
    return {sc.service: sc.source_address for sc in ir.sidecars}


def _in(peer: str, blocks: tuple[str, ...]) -> bool:
    return any(ipaddress.ip_address(peer) in ipaddress.ip_network(b) for b in blocks)


def _rule(rule: AccessRule, identity: str | None, method: str | None, path: str | None,
          peer: str | None = None) -> str | None:
    """True-ish outcome of one rule: ALLOWED (it matches), None (it does not), CONDITIONAL (only with some
    headers or claims, or on IP blocks when the caller's address is not known). `method`/`path` None: a
    connection (tcp), where only the caller counts."""
    if rule.principals and identity not in rule.principals:
        return None
    if rule.namespaces and not (identity and identity.startswith(rule.namespaces)):
        return None
    if identity is not None and (identity in rule.not_principals or identity.startswith(rule.not_namespaces or ("\0",))):
        return None
    if method is not None:
        if rule.methods and method not in rule.methods:
            return None
        if rule.paths and not any(path_matches(p, path) for p in rule.paths):
            return None
        if method in rule.not_methods or any(path_matches(p, path) for p in rule.not_paths):
            return None
    if peer is not None:
        if (rule.ip_blocks and not _in(peer, rule.ip_blocks)) or (rule.not_ip_blocks and _in(peer, rule.not_ip_blocks)):
            return None
        blocks_unknown = False
    else:  # it depends on the address the request comes from
        blocks_unknown = bool(rule.ip_blocks or rule.not_ip_blocks)
    return CONDITIONAL if (rule.headers or rule.claims or blocks_unknown) else ALLOWED


def decide(access: Access | None, identity: str | None, method: str | None, path: str | None,
           peer: str | None = None) -> str:
    if access is None or access.dry_run:
        return ALLOWED
    denied = [_rule(r, identity, method, path, peer) for r in access.deny]
    if ALLOWED in denied:
        return DENIED
    if access.allow is None:
        verdict = ALLOWED
    else:
        allowed = [_rule(r, identity, method, path, peer) for r in access.allow]
        verdict = ALLOWED if ALLOWED in allowed else CONDITIONAL if CONDITIONAL in allowed else DENIED
    return CONDITIONAL if (CONDITIONAL in denied and verdict != DENIED) else verdict


def outcome(target: Inbound, identity: str | None, method: str | None, path: str | None,
            peer: str | None = None) -> str:
    """What the target does with a caller's request: a plaintext call carries no identity; a strict
    service refuses it before any rule."""
    if target.tls_mode is None:
        identity = None
    elif identity is None and target.tls_mode == "strict":
        return NO_MTLS
    return decide(target.access, identity, method, path, peer)


def _rules(access: Access | None) -> tuple[AccessRule, ...]:
    if access is None:
        return ()
    return access.deny + (access.allow or ())


def requests(accesses: list[Access | None]) -> list[tuple[str, str, str, str]]:
    """(method label, method, path label, path) to try: what the rules name, and the rest."""
    rules = [r for a in accesses for r in _rules(a)]
    named = sorted({m for r in rules for m in r.methods + r.not_methods}, key=_METHODS.index)
    other = next((m for m in _METHODS if m not in named), None)
    methods = [(m, m) for m in named] + ([(OTHER_METHODS if named else ANY_METHOD, other)] if other else [])
    paths = sorted({p.value for r in rules for p in r.paths + r.not_paths if p.kind != "regex"})
    other_path = [(OTHER_PATHS if paths else ANY_PATH, OTHER_PATH)]
    return [(ml, m, pl, p) for ml, m in methods for pl, p in [(x, x) for x in paths] + other_path]


def pair_changes(old: MeshIR, new: MeshIR) -> list[Pair]:
    """Every caller -> service request whose outcome differs: services on both sides, callers (services and
    gateways) of the new side (one that is new is tried against the old rules with its new identity)."""
    old_in, new_in = inbound(old), inbound(new)
    old_callers, new_callers = callers(old), callers(new)
    old_at, new_at = addresses(old), addresses(new)
    out: list[Pair] = []
    for service in sorted(set(old_in) & set(new_in)):
        a, b = old_in[service], new_in[service]
        if a == b and old_callers == new_callers and old_at == new_at:
            continue
        tcp = a.tcp or b.tcp
        tries = [(CONNECT, None, "", None)] if tcp else requests([a.access, b.access])
        unchanged = a == b  # then only callers that are new or known by another identity can fare otherwise
        for caller in sorted(new_callers):
            same_caller = old_callers.get(caller, "") == new_callers[caller] and old_at.get(caller, "") == new_at[caller]
            if caller == service or (unchanged and same_caller):
                continue
            id_old = old_callers.get(caller, new_callers.get(caller))
            id_new = new_callers.get(caller, id_old)
            for method_label, method, path_label, path in tries:
                before = outcome(a, id_old, method, path, old_at.get(caller, new_at.get(caller)))
                after = outcome(b, id_new, method, path, new_at.get(caller))
                if before != after:
                    out.append(Pair(caller, service, method_label, path_label, before, after, (method, path)))
    return out
