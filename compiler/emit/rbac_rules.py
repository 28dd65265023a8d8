"""What Envoy's two RBAC filters share: who a rule is about, and how rules become one filter's rules.

The HTTP filter (`envoy.filters.http.rbac`, compiler/emit/rbac.py) and the network filter
(`envoy.filters.network.rbac`, compiler/emit/tcp_rbac.py) take the same `config.rbac.v3.RBAC`:
named policies, each with permissions (what is asked) and principals (who asks), and one action
per filter instance, which Envoy applies when any policy matches (`DENY`) or when none does
(`ALLOW`: everything no policy matches is refused, so an empty allow-list refuses everything).
Callers are matched by their client certificate's URI SAN (`authenticated.principal_name`,
the caller's SPIFFE ID), which Envoy knows only on an mTLS connection; a namespace by the prefix
every SPIFFE ID in it shares (`spiffe://<td>/ns/<ns>/sa/`, a plain string prefix: no regex to
escape); an IP block by the connection's peer address (`direct_remote_ip`, never X-Forwarded-For).
A `not_` condition is Envoy's `not_id` over the ids it must not match.
"""

from __future__ import annotations

from typing import Callable

from compiler.emit import jwt
from compiler.ir import AccessRule


def any_of(items: list[dict], key: str) -> dict:
    """One matcher, or Envoy's `or_rules` (permissions) / `or_ids` (principals) over several."""
    return items[0] if len(items) == 1 else {key: {"rules" if key == "or_rules" else "ids": items}}


def _cidr(block: str) -> dict:
    address, length = block.split("/")
    return {"direct_remote_ip": {"address_prefix": address, "prefix_len": int(length)}}


def _ids(rule: AccessRule, negated: bool) -> list[dict]:
    """One `or_ids` (or single id) per non-empty condition: callers, namespaces, IP blocks."""
    if negated:
        groups = (rule.not_principals, rule.not_namespaces, rule.not_ip_blocks)
    else:
        groups = (rule.principals, rule.namespaces, rule.ip_blocks)
    exact, prefix, blocks = groups
    out = []
    if exact:
        out.append(any_of([{"authenticated": {"principal_name": {"exact": p}}} for p in exact], "or_ids"))
    if prefix:
        out.append(any_of([{"authenticated": {"principal_name": {"prefix": p}}} for p in prefix], "or_ids"))
    if blocks:
        out.append(any_of([_cidr(b) for b in blocks], "or_ids"))
    return out


def principal(rule: AccessRule) -> dict:
    """Who the rule is about: its callers (SPIFFE IDs), namespaces and peer IP blocks, the ones it must not
    be, and, over HTTP, the verified JWT claims."""
    who = _ids(rule, negated=False)
    who += [{"not_id": i} for i in _ids(rule, negated=True)]
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
