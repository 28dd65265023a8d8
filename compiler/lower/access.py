"""AuthorizationPolicy (policy) -> the access rules of a service's inbound listener (IR)."""

from __future__ import annotations

from compiler.ir import Access, AccessRule, JwtCheck, JwtIssuer, JwtRequirement, PathCondition
from compiler.lower.routes import header_condition
from compiler.policy import AuthorizationPolicy, Paths, RequestAuthentication
from compiler.policy.resolved import Resolved


def security_path(kind: str, value: str, paths: Paths) -> PathCondition:
    """A path condition of a security rule: prefixes are path prefixes (`/admin` never matches `/administrator`),
    compared case-insensitively when the mesh says so."""
    return PathCondition("path_prefix" if kind == "prefix" else kind, value, ignore_case=not paths.case_sensitive)


def _paths(matches, paths: Paths) -> tuple[PathCondition, ...]:
    out = []
    for p in matches:
        for k in ("prefix", "exact", "regex"):
            if getattr(p, k) is not None:
                out.append(security_path(k, getattr(p, k), paths))
    return tuple(out)


def namespace_prefix(trust_domain: str, namespace: str) -> str:
    """What every SPIFFE ID of a namespace starts with (compiler/policy/placement.py spiffe_id)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/"


def _rule(rule, policy: AuthorizationPolicy, kind: str, i: int, view: Resolved) -> AccessRule:
    td = view.mesh.trust_domain
    return AccessRule(
        principals=tuple(view.identity_of(name) for name in rule.from_),  # a Service or a Gateway
        paths=_paths(rule.paths, view.mesh.paths),
        methods=tuple(sorted(set(rule.methods))),
        headers=tuple(header_condition(h) for h in rule.headers),
        source=policy.where(kind, i),
        claims=tuple(sorted(rule.claims.items())),
        namespaces=tuple(namespace_prefix(td, ns) for ns in sorted(set(rule.namespaces))),
        ip_blocks=tuple(sorted(set(rule.ip_blocks))),
        not_principals=tuple(view.identity_of(name) for name in rule.not_from),
        not_namespaces=tuple(namespace_prefix(td, ns) for ns in sorted(set(rule.not_namespaces))),
        not_ip_blocks=tuple(sorted(set(rule.not_ip_blocks))),
        not_paths=_paths(rule.not_paths, view.mesh.paths),
        not_methods=tuple(sorted(set(rule.not_methods))),
    )


def access(view: Resolved, policy: AuthorizationPolicy | None) -> Access | None:
    """None when nothing restricts the service (no policy and a mesh default of allow)."""
    default_deny = view.mesh.authorization.default == "deny"
    if policy is None:
        return Access(deny=(), allow=(), dry_run=False) if default_deny else None
    deny = tuple(_rule(r, policy, "deny", i, view) for i, r in enumerate(policy.deny))
    allow = tuple(_rule(r, policy, "allow", i, view) for i, r in enumerate(policy.allow))
    return Access(
        deny=deny,
        allow=allow if (allow or default_deny) else None,
        dry_run=policy.mode == "dry_run",
    )


def jwt_check(auth: RequestAuthentication | None, paths: Paths) -> JwtCheck | None:
    if auth is None:
        return None
    providers = tuple(
        JwtIssuer(
            name=p.name,
            issuer=p.issuer,
            audiences=tuple(p.audiences),
            jwks=p.jwks,
            jwks_file=p.jwks_file,
            from_headers=tuple((h.name, h.prefix) for h in p.from_headers),
            from_params=tuple(p.from_params),
            forward_claims=tuple(sorted(p.forward_claims.items())),
            forward_token=p.forward_token,
        )
        for p in auth.providers
    )
    rules = tuple(
        JwtRequirement(tuple(security_path("prefix", p, paths) for p in r.paths), tuple(r.providers), r.allow_missing)
        for r in auth.rules
    )
    return JwtCheck(providers, rules or (JwtRequirement((), (), False),))
