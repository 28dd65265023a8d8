"""W244 (a deny rule leaves an allow rule nothing to allow) is exact about claims."""

from __future__ import annotations

from compiler.check import check
from compiler.policy import AuthorizationPolicy, JwtProvider, Mesh, PolicySet, RequestAuthentication, Service

JWKS = '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'


def _w244(allow, deny):
    policy = PolicySet(
        (
            Mesh(name="m", mtls={"mode": "strict"}),
            Service(name="a", port=1000, app_port=2000),
            RequestAuthentication(service="a", providers=[JwtProvider(name="p", issuer="i", jwks=JWKS)]),
            AuthorizationPolicy(service="a", allow=allow, deny=deny),
        )
    )
    return [d.path for d in check(policy) if d.code == "W244"]


def test_a_deny_rule_with_claims_only_covers_allow_rules_requiring_them():
    assert _w244([{"methods": ["GET"]}], [{"claims": {"banned": "true"}}]) == []
    assert _w244([{"methods": ["GET"], "claims": {"banned": "true"}}], [{"claims": {"banned": "true"}}]) == ["allow[0]"]
    assert _w244([{"methods": ["GET"]}], [{}]) == ["allow[0]"]
