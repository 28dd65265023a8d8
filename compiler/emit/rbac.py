"""Authorization: two `envoy.filters.http.rbac` filters on the inbound side, deny first, then allow.

Envoy's RBAC filter takes one action per instance, so "deny wins over allow"
is two instances in that order. In dry-run mode the same policies go into
`shadow_rules`: Envoy counts and logs what it would refuse
(`http.<prefix>.rbac.<deny|allow>.shadow_denied`) and refuses nothing. Enforcing
filters count per filter too (`http.<prefix>.rbac.<deny|allow>.denied`).
"""

from __future__ import annotations

from compiler.emit import rbac_rules
from compiler.emit.common import typed
from compiler.emit.rbac_rules import any_of as _any_of
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


def _permission(rule: AccessRule) -> dict:
    """What the request asks for: all of the rule's path, method and header conditions, and none of its
    `not_paths` / `not_methods` (Envoy `not_rule`)."""
    conditions = []
    if rule.paths:
        conditions.append(_any_of([m for p in rule.paths for m in _paths(p)], "or_rules"))
    if rule.methods:
        conditions.append(
            _any_of([{"header": {"name": ":method", "string_match": {"exact": m}}} for m in rule.methods], "or_rules")
        )
    conditions += [{"header": header_matcher(h)} for h in rule.headers]
    if rule.not_paths:
        conditions.append({"not_rule": _any_of([m for p in rule.not_paths for m in _paths(p)], "or_rules")})
    if rule.not_methods:
        methods = [{"header": {"name": ":method", "string_match": {"exact": m}}} for m in rule.not_methods]
        conditions.append({"not_rule": _any_of(methods, "or_rules")})
    if not conditions:
        return {"any": True}
    if len(conditions) == 1:
        return conditions[0]
    return {"and_rules": {"rules": conditions}}


def _rbac(action: str, rules: tuple[AccessRule, ...], dry_run: bool, kind: str) -> dict:
    body = rbac_rules.rules(action, rules, kind, _permission)
    if dry_run:
        return typed("envoy.extensions.filters.http.rbac.v3.RBAC", shadow_rules=body, shadow_rules_stat_prefix=kind)
    return typed("envoy.extensions.filters.http.rbac.v3.RBAC", rules=body, rules_stat_prefix=kind)


def deny_config(l: HttpListener) -> dict | None:
    a = l.access
    return _rbac("DENY", a.deny, a.dry_run, "deny") if a is not None and a.deny else None


def allow_config(l: HttpListener) -> dict | None:
    a = l.access
    return _rbac("ALLOW", a.allow, a.dry_run, "allow") if a is not None and a.allow is not None else None
