"""Authorization: two `envoy.filters.http.rbac` filters on the inbound side, deny first, then allow.

Envoy's RBAC filter takes one action per instance, so "deny wins over allow"
is two instances in that order. In dry-run mode the same policies go into
`shadow_rules`: Envoy counts and logs what it would refuse
(`http.<prefix>.rbac.<deny|allow>.shadow_denied`) and refuses nothing. Enforcing
filters count per filter too (`http.<prefix>.rbac.<deny|allow>.denied`).
"""

from __future__ import annotations

from compiler.emit import jwt
from compiler.emit.common import typed
from compiler.emit.route_match import header_matcher
from compiler.ir import AccessRule, HttpListener, PathCondition

DENY = "meshc.authz.deny"
ALLOW = "meshc.authz.allow"


def _paths(p: PathCondition) -> list[dict]:
    """`url_path` permissions (any of them) for one path condition; RBAC matches the normalised path
    without the query string.

    RBAC's StringMatcher has no path-separated prefix, so a path prefix `/admin` is two matchers: exact
    `/admin` or prefix `/admin/` (never `/administrator`); `/` and prefixes ending in `/` are one prefix.
    `ignore_case` is the StringMatcher's own flag; it does nothing for `safe_regex`, so a regex becomes
    `(?i:...)` (RE2's case-insensitive group).
    """
    if p.kind == "regex":
        matchers = [{"safe_regex": {"regex": f"(?i:{p.value})" if p.ignore_case else p.value}}]
    elif p.kind == "path_prefix" and not p.value.endswith("/"):
        matchers = [{"exact": p.value}, {"prefix": p.value + "/"}]
    else:
        matchers = [{"prefix" if p.kind == "path_prefix" else p.kind: p.value}]
    if p.ignore_case and p.kind != "regex":
        matchers = [{**m, "ignore_case": True} for m in matchers]
    return [{"url_path": {"path": m}} for m in matchers]


def _any_of(items: list[dict], key: str) -> dict:
    return items[0] if len(items) == 1 else {key: {"rules" if key == "or_rules" else "ids": items}}


def _policy(rule: AccessRule) -> dict:
    conditions = []
    if rule.paths:
        conditions.append(_any_of([m for p in rule.paths for m in _paths(p)], "or_rules"))
    if rule.methods:
        conditions.append(
            _any_of([{"header": {"name": ":method", "string_match": {"exact": m}}} for m in rule.methods], "or_rules")
        )
    conditions += [{"header": header_matcher(h)} for h in rule.headers]
    if not conditions:
        permission = {"any": True}
    elif len(conditions) == 1:
        permission = conditions[0]
    else:
        permission = {"and_rules": {"rules": conditions}}
    who = []
    if rule.principals:
        ids = [{"authenticated": {"principal_name": {"exact": p}}} for p in rule.principals]
        who.append(_any_of(ids, "or_ids"))
    who += [
        {
            "sourced_metadata": {
                "metadata_matcher": {
                    "filter": jwt.FILTER,
                    "path": [{"key": jwt.PAYLOAD_KEY}, {"key": claim}],
                    "value": {"string_match": {"exact": value}},
                }
            }
        }
        for claim, value in rule.claims
    ]
    if not who:
        principal = {"any": True}
    elif len(who) == 1:
        principal = who[0]
    else:
        principal = {"and_ids": {"ids": who}}
    return {"permissions": [permission], "principals": [principal]}


def _rbac(action: str, rules: tuple[AccessRule, ...], dry_run: bool, kind: str) -> dict:
    policies = {f"{kind}[{i}] {r.source.short}": _policy(r) for i, r in enumerate(rules)}
    body = {"action": action, "policies": policies}
    if dry_run:
        return typed("envoy.extensions.filters.http.rbac.v3.RBAC", shadow_rules=body, shadow_rules_stat_prefix=kind)
    return typed("envoy.extensions.filters.http.rbac.v3.RBAC", rules=body, rules_stat_prefix=kind)


def deny_config(l: HttpListener) -> dict | None:
    a = l.access
    return _rbac("DENY", a.deny, a.dry_run, "deny") if a is not None and a.deny else None


def allow_config(l: HttpListener) -> dict | None:
    a = l.access
    return _rbac("ALLOW", a.allow, a.dry_run, "allow") if a is not None and a.allow is not None else None
