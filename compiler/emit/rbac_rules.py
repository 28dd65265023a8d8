"""What Envoy's two RBAC filters share: who a rule is about, and how rules become one filter's rules.

The HTTP filter (`envoy.filters.http.rbac`, compiler/emit/rbac.py) and the network filter
(`envoy.filters.network.rbac`, compiler/emit/tcp_rbac.py) take the same `config.rbac.v3.RBAC`:
named policies, each with permissions (what is asked) and principals (who asks), and one action
per filter instance, which Envoy applies when any policy matches (`DENY`) or when none does
(`ALLOW`: everything no policy matches is refused, so an empty allow-list refuses everything).
Callers are matched by their client certificate's URI SAN (`authenticated.principal_name`,
the caller's SPIFFE ID), which Envoy knows only on an mTLS connection.
"""

from __future__ import annotations

from typing import Callable

from compiler.emit import jwt
from compiler.ir import AccessRule


def any_of(items: list[dict], key: str) -> dict:
    """One matcher, or Envoy's `or_rules` (permissions) / `or_ids` (principals) over several."""
    return items[0] if len(items) == 1 else {key: {"rules" if key == "or_rules" else "ids": items}}


def principal(rule: AccessRule) -> dict:
    """Who the rule is about: one of its callers (SPIFFE IDs) and, over HTTP, the verified JWT claims."""
    who = []
    if rule.principals:
        ids = [{"authenticated": {"principal_name": {"exact": p}}} for p in rule.principals]
        who.append(any_of(ids, "or_ids"))
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
        return {"any": True}
    if len(who) == 1:
        return who[0]
    return {"and_ids": {"ids": who}}


def rules(action: str, access_rules: tuple[AccessRule, ...], kind: str, permission: Callable[[AccessRule], dict]) -> dict:
    """`config.rbac.v3.RBAC`: one policy per rule, named `<kind>[i] <provenance>` so logs point at the policy."""
    policies = {
        f"{kind}[{i}] {r.source.short}": {"permissions": [permission(r)], "principals": [principal(r)]}
        for i, r in enumerate(access_rules)
    }
    return {"action": action, "policies": policies}
