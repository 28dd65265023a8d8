"""Authorization of tcp services without Envoy: lowering fills the tcp listener's access, the emitter puts
network RBAC filters before tcp_proxy, and what tcp cannot enforce is refused (live: test_live_tcp_authz.py)."""

from __future__ import annotations

from compiler.check import check
from compiler.emit import emit
from compiler.ir import TcpListener
from compiler.lower import lower
from compiler.policy import Authorization, AuthorizationPolicy, AuthzRule, Mesh, PolicySet, Service

RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"


def _docs(policy=None, default="allow"):
    docs = [
        Mesh(name="m", trust_domain="t.test", mtls={"mode": "strict"}, authorization=Authorization(default=default)),
        Service(name="web", port=8080, app_port=18080, calls=["db"], sidecar={"address": "127.0.0.2"}),
        Service(name="db", protocol="tcp", port=5432, app_port=15432, sidecar={"address": "127.0.0.3"}),
    ]
    return PolicySet(tuple(docs + ([policy] if policy else [])))


def _inbound(policy=None, default="allow") -> tuple[TcpListener, dict]:
    ps = _docs(policy, default)
    assert [d for d in check(ps) if d.is_error] == []
    ir = lower(ps)
    db = next(s for s in ir.sidecars if s.service == "db")
    listener = next(l for l in db.listeners if l.direction == "inbound")
    emitted = next(s for s in emit(ir).sidecars if s.service == "db")
    envoy = next(l for l in (emitted.listeners or emitted.bootstrap.listeners) if l["name"] == "inbound")
    return listener, envoy["filter_chains"][0]


def test_allow_and_deny_become_two_network_rbac_filters_before_tcp_proxy():
    policy = AuthorizationPolicy(service="db", allow=[AuthzRule(from_=["web"])], deny=[AuthzRule(from_=["db"])])
    listener, chain = _inbound(policy)
    assert listener.access is not None and len(listener.access.allow) == 1 and len(listener.access.deny) == 1
    names = [f["name"] for f in chain["filters"]]
    assert names == ["meshc.authz.deny", "meshc.authz.allow", "envoy.filters.network.tcp_proxy"]
    deny, allow, proxy = (f["typed_config"] for f in chain["filters"])
    assert deny["@type"] == allow["@type"] == RBAC
    assert (deny["rules"]["action"], allow["rules"]["action"]) == ("DENY", "ALLOW")
    assert (deny["stat_prefix"], allow["stat_prefix"]) == ("inbound_tcp_5432.deny", "inbound_tcp_5432.allow")
    (policy_body,) = allow["rules"]["policies"].values()
    assert policy_body == {
        "permissions": [{"any": True}],
        "principals": [{"authenticated": {"principal_name": {"exact": "spiffe://t.test/ns/default/sa/web"}}}],
    }
    # tcp_proxy connects to the app only after the caller's first bytes passed RBAC.
    assert proxy["upstream_connect_mode"] == "ON_DOWNSTREAM_DATA" and proxy["max_early_data_bytes"] > 0


def test_dry_run_uses_shadow_rules_and_connects_as_usual():
    policy = AuthorizationPolicy(service="db", mode="dry_run", allow=[AuthzRule(from_=["web"])])
    _, chain = _inbound(policy)
    allow, proxy = (f["typed_config"] for f in chain["filters"])
    assert "rules" not in allow and allow["shadow_rules"]["action"] == "ALLOW"
    assert "upstream_connect_mode" not in proxy


def test_mesh_default_deny_without_policy_refuses_every_connection():
    listener, chain = _inbound(default="deny")
    assert listener.access is not None and listener.access.allow == ()
    allow = chain["filters"][0]["typed_config"]
    assert allow["rules"] == {"action": "ALLOW", "policies": {}}  # Envoy: nothing allowed


def test_no_policy_and_default_allow_add_nothing():
    listener, chain = _inbound()
    assert listener.access is None
    assert [f["name"] for f in chain["filters"]] == ["envoy.filters.network.tcp_proxy"]
    assert "upstream_connect_mode" not in chain["filters"][0]["typed_config"]
