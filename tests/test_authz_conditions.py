"""AuthorizationPolicy conditions on namespaces, peer IP blocks and negations, without Envoy: what the rules
become (RBAC principals and permissions), what checks that reason about policies make of them (W296 in pods,
diff's pairs), and what explain says when the caller's address is unknown. Live: test_live_authz_advanced.py."""

from __future__ import annotations

from compiler.check import check
from compiler.diff.authz import ALLOWED, CONDITIONAL, DENIED, decide
from compiler.emit import emit
from compiler.explain import Request, explain
from compiler.ir import Access
from compiler.lower import lower
from compiler.policy import AuthorizationPolicy, Mesh, PolicySet, Service, TrafficPolicy
from test_kubernetes_discovery import _bookinfo, _codes

TD = "corp.example"


def _mesh(*rules_allow, deny=(), mtls="strict") -> PolicySet:
    return PolicySet(
        (
            Mesh(name="m", trust_domain=TD, mtls={"mode": mtls}),
            Service(name="web", namespace="shop", port=9080, app_port=19080, calls=["api"], sidecar={"address": "127.0.50.1"}),
            Service(name="ops", namespace="ops", port=9081, app_port=19081, calls=["api"], sidecar={"address": "127.0.50.2"}),
            Service(name="api", namespace="shop", port=9082, app_port=19082, sidecar={"address": "127.0.50.3"}),
            AuthorizationPolicy.model_validate({"service": "api", "allow": list(rules_allow), "deny": list(deny)}),
        )
    )


def _rbac(policy: PolicySet, kind: str) -> dict:
    api = next(s for s in emit(lower(policy)).sidecars if s.service == "api")
    for listener in api.listeners:
        for chain in listener.get("filter_chains", []):
            for f in chain["filters"]:
                for h in f["typed_config"].get("http_filters", []):
                    if h["name"] == f"meshc.authz.{kind}":
                        return h["typed_config"]["rules"]["policies"]
    raise AssertionError(f"no {kind} filter")


def test_namespaces_and_negations_become_principals_and_permissions():
    (allow,) = _rbac(
        _mesh({"namespaces": ["shop"], "not_from": ["ops"], "not_ip_blocks": ["10.0.0.0/8"],
               "not_paths": [{"prefix": "/internal"}], "not_methods": ["DELETE"]}),
        "allow",
    ).values()
    assert allow["principals"] == [{"and_ids": {"ids": [
        {"authenticated": {"principal_name": {"prefix": f"spiffe://{TD}/ns/shop/sa/"}}},
        {"not_id": {"authenticated": {"principal_name": {"exact": f"spiffe://{TD}/ns/ops/sa/ops"}}}},
        {"not_id": {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}},
    ]}}]
    assert allow["permissions"] == [{"and_rules": {"rules": [
        {"not_rule": {"or_rules": {"rules": [{"url_path": {"path": {"exact": "/internal"}}},
                                             {"url_path": {"path": {"prefix": "/internal/"}}}]}}},
        {"not_rule": {"header": {"name": ":method", "string_match": {"exact": "DELETE"}}}},
    ]}}]


def test_ip_blocks_work_without_mtls_and_are_normalised():
    policy = _mesh({"ip_blocks": ["127.0.50.1", "fd00::/8"]}, mtls="disable")
    assert [d.code for d in check(policy)] == []
    (allow,) = _rbac(policy, "allow").values()
    assert allow["principals"] == [{"or_ids": {"ids": [
        {"direct_remote_ip": {"address_prefix": "127.0.50.1", "prefix_len": 32}},
        {"direct_remote_ip": {"address_prefix": "fd00::", "prefix_len": 8}},
    ]}}]


def test_explain_on_one_host_knows_the_callers_address():
    policy = _mesh({"ip_blocks": ["127.0.50.1/32"]})
    ir = lower(policy)
    assert explain(ir, Request("web", "api")).outcome.kind == "forwarded"
    refused = explain(ir, Request("ops", "api")).outcome
    assert (refused.status, refused.certain) == (403, True)


def test_explain_in_pods_cannot_know_the_callers_address():
    ir = lower(_bookinfo(AuthorizationPolicy.model_validate(
        {"service": "reviews", "allow": [{"ip_blocks": ["10.0.0.0/8"]}]}), mesh={"mtls": {"mode": "strict"}}))
    said = explain(ir, Request("productpage", "reviews")).outcome
    assert not said.certain, said


def test_diff_decides_namespaces_and_negations_and_leaves_ip_blocks_open():
    ir = lower(_mesh({"namespaces": ["shop"], "not_methods": ["DELETE"]}, {"not_from": ["web"], "ip_blocks": ["127.0.0.0/8"]}))
    (api,) = [s for s in ir.sidecars if s.service == "api"]
    access: Access = next(l for l in api.listeners if l.direction == "inbound").access
    web, ops = f"spiffe://{TD}/ns/shop/sa/web", f"spiffe://{TD}/ns/ops/sa/ops"
    assert decide(access, web, "GET", "/x") == ALLOWED
    assert decide(access, web, "DELETE", "/x") == DENIED
    assert decide(access, ops, "GET", "/x") == CONDITIONAL, "not web, and maybe from 127.0.0.0/8"
    assert decide(access, None, "GET", "/x") == CONDITIONAL
    # on one host the caller's address is its sidecar's: the IP block is decided
    assert decide(access, ops, "GET", "/x", peer="127.0.50.2") == ALLOWED
    assert decide(access, ops, "GET", "/x", peer="10.0.0.1") == DENIED


def test_kubelet_style_health_checks_see_the_new_conditions():
    tp = TrafficPolicy.model_validate({"service": "reviews", "health_check": {"path": "/health"}})

    def warned(rules: dict) -> list[str]:
        ap = AuthorizationPolicy.model_validate({"service": "reviews", **rules})
        return [m for c, m in _codes(_bookinfo(tp, ap, mesh={"mtls": {"mode": "strict"}})) if c == "W296"]

    assert warned({"allow": [{"namespaces": ["shop"]}]}) == []
    assert "does not allow it" in warned({"allow": [{"namespaces": ["ops"]}]})[0]
    assert "does not allow it" in warned({"allow": [{"not_paths": [{"exact": "/health"}]}]})[0]
    assert "does not allow it" in warned({"allow": [{"not_from": ["productpage"]}]})[0]
    assert "denies it" in warned({"deny": [{"not_paths": [{"prefix": "/api"}]}]})[0]
    assert warned({"deny": [{"ip_blocks": ["10.0.0.0/8"]}]}) == [], "the pod's address is not known: no claim"
    assert warned({"deny": [{"not_methods": ["GET"]}]}) == []
