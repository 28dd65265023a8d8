"""Request authentication: `envoy.filters.http.jwt_authn` on the inbound side.

Each provider's verified payload is put into dynamic metadata under
`PAYLOAD_KEY`, where the RBAC filters read claims (AuthorizationPolicy `claims`).
"""

from __future__ import annotations

from compiler.emit.common import typed
from compiler.ir import HttpListener, JwtIssuer, JwtRequirement, PathCondition

FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "jwt_payload"


def _provider(p: JwtIssuer) -> dict:
    out: dict = {"issuer": p.issuer}
    if p.audiences:
        out["audiences"] = list(p.audiences)
    out["local_jwks"] = {"inline_string": p.jwks} if p.jwks is not None else {"filename": p.jwks_file}
    out["from_headers"] = [{"name": name, "value_prefix": prefix} for name, prefix in p.from_headers]
    if p.from_params:
        out["from_params"] = list(p.from_params)
    out["forward"] = p.forward_token
    out["payload_in_metadata"] = PAYLOAD_KEY
    if p.forward_claims:
        out["claim_to_headers"] = [{"claim_name": c, "header_name": h} for c, h in p.forward_claims]
    return out


def _requires(r: JwtRequirement, all_providers: tuple[str, ...]) -> dict:
    names = list(r.providers or all_providers)
    options = [{"provider_name": n} for n in names]
    if r.allow_missing:
        options.append({"allow_missing": {}})
    if len(options) == 1:
        return options[0]
    return {"requires_any": {"requirements": options}}


def _match(p: PathCondition) -> dict:
    """A rule's RouteMatch for a path prefix. `path_separated_prefix` matches the path itself or anything
    under `<prefix>/` (never `/publicity` for `/public`); Envoy refuses it for a prefix ending in `/`, for
    which, like `/` itself, a plain `prefix` means the same. `case_sensitive: false` compares letters
    case-insensitively."""
    out = {"prefix": p.value} if p.value.endswith("/") else {"path_separated_prefix": p.value}
    if p.ignore_case:
        out["case_sensitive"] = False
    return out


def listener_config(l: HttpListener) -> dict | None:
    """Rules are tried in order and the first whose path matches decides what a request needs."""
    j = l.jwt
    if j is None:
        return None
    names = tuple(p.name for p in j.providers)
    rules = []
    for r in j.rules:
        for path in r.paths or (PathCondition("path_prefix", "/"),):
            rules.append({"match": _match(path), "requires": _requires(r, names)})
    return typed(
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={p.name: _provider(p) for p in j.providers},
        rules=rules,
    )
