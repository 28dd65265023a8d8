"""meshc explain: every kind of decision the engine makes, from small policies (compiler/explain).

The real-Envoy agreement (hundreds of generated requests through live sidecars) is tests/test_explain_live.py;
the text and JSON of the example policies are golden files (tests/test_explain_golden.py).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from compiler import cli
from compiler.build import check_policies
from compiler.explain import ExplainError, Request, explain, render_text
from compiler.explain.match import virtual_host
from compiler.ir import VirtualHost
from compiler.lower import lower

ROOT = Path(__file__).resolve().parent.parent

MESH = """\
kind: Mesh
name: t
trust_domain: t.example
mtls: {mode: strict}
---
kind: Service
name: web
port: 8080
app_port: 18080
sidecar: {address: 127.0.60.1}
calls: [api]
---
kind: Service
name: api
port: 8080
sidecar: {address: 127.0.60.2}
versions:
  v1: {endpoints: ["127.0.0.1:18081"]}
  v2: {endpoints: ["127.0.0.1:18082"]}
"""


def _ir(tmp_path: Path, *docs: str):
    (tmp_path / "mesh.yaml").write_text("\n---\n".join(d.strip("\n") for d in docs) + "\n")
    diags, view = check_policies(tmp_path)
    assert view is not None, [d.render(str(tmp_path)) for d in diags]
    return lower(view)


def _example(case: str):
    diags, view = check_policies(ROOT / "policies" / case)
    assert view is not None, diags
    return lower(view)


def _steps(e, what: str) -> list[str]:
    return [s.decision for s in e.steps if s.what == what]


# ---------------------------------------------------------------- routing


def test_route_rules_in_order_with_why_earlier_ones_did_not_match():
    ir = _example("ab-test")
    e = explain(ir, Request("frontend", "reviews", "POST", "/admin/x", (("x-internal", "1"),)))
    routes = _steps(e, "route")
    assert routes[0] == "rules[0] did not match: header x-user-group exact 'beta' not met (request: none)"
    assert routes[1].startswith("rules[1] did not match: header cookie regex")
    assert routes[2] == "rules[2] did not match: path prefix /reviews does not match /admin/x"
    assert routes[3] == "rules[3] matched (path regex /admin/.*, method POST or PUT, header x-internal present)"
    assert [s.source for s in e.steps if s.what == "route"][3] == "mesh.yaml:33 Route/reviews/rules[3]"
    assert (e.outcome.kind, e.outcome.status, e.outcome.versions, e.outcome.certain) == ("forwarded", None, (("v2", 1.0),), True)

    # The same path with GET: the method condition fails, the last rule takes it.
    e = explain(ir, Request("frontend", "reviews", "GET", "/admin/x", (("x-internal", "1"),)))
    assert _steps(e, "route")[3] == "rules[3] did not match: method POST or PUT not met (request: 'GET')"
    assert e.outcome.versions == (("v1", 1.0),)
    # Query and cookie conditions.
    assert explain(ir, Request("frontend", "reviews", "GET", "/reviews/1?variant=b")).outcome.versions == (("v2", 1.0),)
    assert explain(ir, Request("frontend", "reviews", "GET", "/reviews/1?variant=a")).outcome.versions == (("v1", 1.0),)
    assert explain(ir, Request("frontend", "reviews", headers=(("cookie", "x=1; ab=b"),))).outcome.versions == (("v2", 1.0),)


def test_weights_become_versions_with_probabilities_and_each_version_its_endpoints():
    e = explain(_example("canary"), Request("frontend", "reviews", "GET", "/"))
    assert e.outcome.versions == (("v1", 0.9), ("v2", 0.1))
    assert _steps(e, "targets") == ["reviews: v1 90%, v2 10%"]
    assert _steps(e, "endpoints") == [
        "v1 (x-meshc-version: v1): 127.0.0.1:19181, timeout 15s",
        "v2 (x-meshc-version: v2): 127.0.0.1:19182, timeout 15s",
    ]


def test_virtual_host_order_exact_then_longest_suffix_then_star():
    vh = lambda name, *domains: VirtualHost(name, domains, ())  # noqa: E731
    hosts = (vh("any", "*"), vh("short", "*.example.com"), vh("long", "*.api.example.com"), vh("exact", "a.api.example.com"))
    assert virtual_host(hosts, "a.api.example.com")[0].name == "exact"
    assert virtual_host(hosts, "b.api.example.com")[0].name == "long"
    assert virtual_host(hosts, "b.example.com")[0].name == "short"
    assert virtual_host(hosts, "example.org")[0].name == "any"
    assert virtual_host(hosts[1:], "example.org")[0] is None


def test_redirects_direct_responses_rewrites_and_header_changes():
    ir = _example("rewrites")
    e = explain(ir, Request("frontend", "catalog", "GET", "/healthz"))
    assert (e.outcome.kind, e.outcome.status) == ("response", 200)
    e = explain(ir, Request("frontend", "catalog", "GET", "/old-shop/cart?x=1"))
    assert (e.outcome.kind, e.outcome.status) == ("response", 301)
    assert e.steps[-1].data["location"] == "http://catalog/shop/cart?x=1"
    e = explain(ir, Request("frontend", "catalog", "GET", "/insecure/x"))
    assert e.outcome.status == 308 and e.steps[-1].data["location"] == "https://shop.example:443/"
    e = explain(ir, Request("frontend", "catalog", "GET", "/api/v1/items"))
    assert _steps(e, "rewrite") == ["path /api/v1/items -> /v1/items", "Host -> catalog.internal"]
    e = explain(ir, Request("frontend", "catalog", "GET", "/items/42/reviews"))
    assert _steps(e, "rewrite") == ["path /items/42/reviews -> /reviews/42"]
    e = explain(ir, Request("frontend", "catalog", "GET", "/other"))
    assert _steps(e, "request headers") == ["set x-env: prod; add x-via: meshc; remove x-debug"]
    assert _steps(e, "response headers") == ["set cache-control: no-store; remove server"]
    assert e.outcome.kind == "forwarded"
    # CORS: a preflight from an allowed origin is answered by the caller's sidecar; any other goes on.
    preflight = (("origin", "https://a.shop.example"), ("access-control-request-method", "POST"))
    e = explain(ir, Request("frontend", "catalog", "OPTIONS", "/other", preflight))
    assert (e.outcome.status, _steps(e, "cors")) == (200, ["preflight from allowed Origin https://a.shop.example: answered 200 by the CORS filter"])
    e = explain(ir, Request("frontend", "catalog", "OPTIONS", "/other", (("origin", "https://evil.example"),) + preflight[1:]))
    assert e.outcome.kind == "forwarded" and "not allowed" in _steps(e, "cors")[0]


def test_faults_certain_at_100_percent_else_alternatives(tmp_path):
    ir = _example("chaos")
    e = explain(ir, Request("frontend", "ratings", "GET", "/grpc/x", (("content-type", "application/grpc"),)))
    assert (e.outcome.kind, e.outcome.status, e.outcome.certain) == ("response", 200, True)  # grpc-status 14 in HTTP 200
    e = explain(ir, Request("frontend", "ratings", "GET", "/grpc/x"))  # not a gRPC request: the abort does not apply
    assert e.outcome.kind == "forwarded" and _steps(e, "fault")[0].startswith("not applied: header content-type")
    e = explain(ir, Request("frontend", "ratings", "GET", "/x", (("x-chaos", "on"),)))
    assert e.outcome.kind == "forwarded" and not e.outcome.certain
    assert [(a.status, a.percent) for a in e.outcome.alternatives] == [(503, 10.0)]
    assert _steps(e, "fault") == ["delay 2s for 50% of requests", "abort 503 for 10% of requests"]
    e = explain(ir, Request("frontend", "ratings", "GET", "/x"))
    assert e.outcome.certain and e.outcome.alternatives == ()


def test_mirrors_timeout_retries_and_budget():
    e = explain(_example("dark-launch"), Request("frontend", "reviews", "GET", "/"))
    assert [s.data["percent"] for s in e.steps if s.what == "mirror"] and e.outcome.versions == (("v1", 1.0),)
    e = explain(_example("egress"), Request("checkout", "payments", "GET", "/v1/charges/7"))
    assert _steps(e, "retries") == ["up to 2 retries on reset, connect-failure, retriable-status-codes 503, 1s per try, backoff 25ms..250ms"]
    assert _steps(e, "retry budget") == ["retries at most 20% of active requests (at least 3)"]
    assert _steps(e, "timeout") == ["3s for the whole call (504 when exceeded)"]
    assert (e.outcome.kind, e.outcome.external, e.outcome.service) == ("forwarded", True, "payments")


# ---------------------------------------------------------------- the callee


def test_mtls_identities_and_a_caller_without_certificates_meets_strict(tmp_path):
    ir = _ir(tmp_path, MESH)
    e = explain(ir, Request("web", "api"))
    assert _steps(e, "mTLS")[0].startswith("web originates mTLS: spiffe://t.example/ns/default/sa/web -> spiffe://t.example/ns/default/sa/api")
    assert e.steps[[s.what for s in e.steps].index("mTLS")].data["mode"] == "strict"

    # The callee permissive, the caller without mesh certificates: plaintext, no identity.
    ir = _ir(tmp_path, MESH.replace("calls: [api]", "calls: [api]\nmtls: disable") + "mtls: permissive\n")
    e = explain(ir, Request("web", "api"))
    assert _steps(e, "mTLS") == ["plaintext (callee mode permissive): the caller has no identity here"]
    assert e.outcome.kind == "forwarded"


def test_path_normalisation_before_rules():
    ir = _example("paths")
    e = explain(ir, Request("storefront", "backoffice", "GET", "/%2Fadmin"))
    assert (e.outcome.kind, e.outcome.status) == ("response", 400)
    assert e.steps[-1].side == "caller"  # the caller's own sidecar refuses it already


def test_authorization_deny_then_allow_with_the_rule_that_decided():
    ir = _example("authz")
    e = explain(ir, Request("reviews", "ratings", "GET", "/ratings/1"))
    assert _steps(e, "authorization")[-1] == "allow[0] matches: allowed" and e.outcome.kind == "forwarded"
    e = explain(ir, Request("reviews", "ratings", "GET", "/admin/x"))
    assert _steps(e, "authorization") == ["deny[0] matches: refused"] and e.outcome.status == 403
    e = explain(ir, Request("productpage", "ratings", "GET", "/ratings/1"))
    assert e.outcome.status == 403
    assert _steps(e, "authorization")[-2].startswith(
        "allow[0] does not match (from spiffe://shop.example/ns/default/sa/reviews: caller is spiffe://shop.example/ns/default/sa/productpage)"
    )
    e = explain(ir, Request("reviews", "ratings", "DELETE", "/ratings/1"))
    assert "methods GET, HEAD: DELETE" in _steps(e, "authorization")[-2] and e.outcome.status == 403
    # dry_run: a refusal is only logged.
    e = explain(ir, Request("productpage", "reviews", "GET", "/"))
    assert e.outcome.kind == "forwarded" and _steps(e, "authorization")[-1] == "allow[0] matches: allowed"


def test_dry_run_and_mesh_default_deny(tmp_path):
    policy = MESH.replace("name: t\n", "name: t\nauthorization: {default: deny}\n", 1)
    e = explain(_ir(tmp_path, policy), Request("web", "api"))
    assert _steps(e, "authorization") == ["empty allow-list (mesh default deny): refused"] and e.outcome.status == 403
    dry = "kind: AuthorizationPolicy\nservice: api\nmode: dry_run\nallow:\n  - from: [api]\n"
    e = explain(_ir(tmp_path, MESH, dry), Request("web", "api"))
    assert _steps(e, "authorization")[-1] == "no allow rule matches: refused (dry_run: only logged, not refused)"
    assert e.outcome.kind == "forwarded"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(key, **claims) -> str:
    header = _b64(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
    payload = _b64(json.dumps(claims).encode())
    sig = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(sig)}"


def test_jwt_required_verified_and_claims_used_by_authorization(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    uint = lambda n: _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))  # noqa: E731
    jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "n": uint(pub.n), "e": uint(pub.e)}]})
    authn = f"""\
kind: RequestAuthentication
service: api
providers:
  - name: idp
    issuer: https://idp.example
    audiences: [api]
    jwks: '{jwks}'
    from_params: [access_token]
    forward_claims: {{sub: x-user}}
rules:
  - paths: [/public]
    allow_missing: true
  - paths: [/]
"""
    authz = "kind: AuthorizationPolicy\nservice: api\nallow:\n  - methods: [GET]\n  - methods: [DELETE]\n    claims: {role: admin}\n"
    ir = _ir(tmp_path, MESH, authn, authz)
    bearer = lambda tok: (("authorization", f"Bearer {tok}"),)  # noqa: E731
    good = dict(iss="https://idp.example", aud="api", sub="alice", exp=int(time.time()) + 600)

    e = explain(ir, Request("web", "api", "GET", "/x"))
    assert e.outcome.status == 401 and "none sent" in _steps(e, "jwt")[0]
    e = explain(ir, Request("web", "api", "GET", "/public/x"))
    assert e.outcome.kind == "forwarded" and "allow_missing" in _steps(e, "jwt")[0]
    e = explain(ir, Request("web", "api", "GET", "/x", bearer(_token(key, **good))))
    assert e.outcome.kind == "forwarded" and _steps(e, "jwt") == [
        "rules[1] (/): idp: token in header authorization valid (RS256, kid k1)",
        "token removed from authorization before the request goes on (forward_token: false)",
        "claim forwarded as x-user: alice",
    ]
    e = explain(ir, Request("web", "api", "DELETE", "/x", bearer(_token(key, **good))))
    assert e.outcome.status == 403 and "claim role=admin: token has None" in _steps(e, "authorization")[-2]
    e = explain(ir, Request("web", "api", "DELETE", "/x", bearer(_token(key, **good, role="admin"))))
    assert e.outcome.kind == "forwarded" and _steps(e, "authorization")[-1] == "allow[1] matches: allowed"
    # Refused tokens: expired, another audience, another key; a bad token is refused even where none is needed.
    # Envoy's order: exp/nbf (401), issuer (401), audience (403, its only 403), then the signature (401).
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for signer, claims, status, why in (
        (key, {**good, "exp": 1000}, 401, "expired (exp)"),
        (key, {**good, "aud": "web"}, 403, "aud 'web' is none of api"),
        (other, {**good, "aud": "web"}, 403, "aud 'web' is none of api"),
        (other, {**good, "aud": "web", "exp": 1000}, 401, "expired (exp)"),
        (key, {**good, "iss": "https://other"}, 401, "iss 'https://other' is not 'https://idp.example'"),
        (other, good, 401, "signature does not verify"),
    ):
        for path in ("/x", "/public"):
            e = explain(ir, Request("web", "api", "GET", path, bearer(_token(signer, **claims))))
            assert e.outcome.status == status and why in _steps(e, "jwt")[0], _steps(e, "jwt")
    # Every token must pass, the query parameter's first (seen live): its failure decides.
    expired, wrong_aud = _token(key, **{**good, "exp": 1000}), _token(key, **{**good, "aud": "web"})
    e = explain(ir, Request("web", "api", "GET", f"/public?access_token={expired}", bearer(_token(key, **good))))
    assert e.outcome.status == 401 and "token in query access_token: expired (exp) (every token must pass)" in _steps(e, "jwt")[0]
    e = explain(ir, Request("web", "api", "GET", f"/x?access_token={_token(key, **good)}", bearer(wrong_aud)))
    assert e.outcome.status == 403
    e = explain(ir, Request("web", "api", "GET", f"/x?access_token={_token(key, **good)}", (("authorization", f" Bearer {expired} "),)))
    assert e.outcome.status == 401, "a header value's surrounding spaces are not part of it"


def test_rate_limits_make_the_outcome_uncertain():
    ir = _example("rate-limit")
    e = explain(ir, Request("web", "api", "GET", "/search?q=x"))
    assert e.outcome.kind == "forwarded" and not e.outcome.certain
    assert sorted(a.why for a in e.outcome.alternatives) == [
        "api: global rate limit domain shop-api",
        "api: listener bucket 100 per 1s empty",
        "web: route bucket 10 per 1s empty",
    ]
    assert all(a.status == 429 and a.percent is None for a in e.outcome.alternatives)


# ---------------------------------------------------------------- egress, tcp, gateways


def test_egress_catch_all_and_external_services():
    ir = _example("egress")
    e = explain(ir, Request("checkout", None, headers=(("host", "example.com"),)))
    assert (e.outcome.kind, e.outcome.status) == ("response", 502)
    assert _steps(e, "route") == ["catch-all (Mesh egress.undeclared) matched (any request)"]
    e = explain(ir, Request("checkout", "geo", "GET", "/"))
    assert e.outcome.external and "SNI api.geo.partner.example" in _steps(e, "external")[0]
    e = explain(ir, Request("checkout", "orders-db"))
    assert e.outcome.external and e.outcome.kind == "forwarded"


def test_egress_allow_forwards_an_undeclared_host_as_it_is(tmp_path):
    ir = _ir(tmp_path, MESH.replace("name: t\n", "name: t\negress: {undeclared: allow}\n", 1))
    e = explain(ir, Request("web", None, "GET", "/x", (("host", "example.com"),)))
    assert (e.outcome.kind, e.outcome.external, e.outcome.versions) == ("forwarded", True, (("any", 1.0),))
    assert _steps(e, "egress") == ["undeclared host example.com: forwarded as it is, resolved by DNS (Mesh egress.undeclared: allow)"]


def test_tcp_services_decide_per_connection_on_the_caller_only():
    ir = _example("tcp-authz")
    assert explain(ir, Request("web", "ledger")).outcome.kind == "forwarded"
    e = explain(ir, Request("reports", "ledger"))
    assert (e.outcome.kind, e.outcome.status) == ("unreachable", None) and _steps(e, "authorization") == ["deny[0] matches: refused"]


def test_gateway_hosts_edge_jwt_and_the_https_redirect():
    ir = _example("gateway")
    e = explain(ir, Request("ingress", None, "GET", "/static/a", (("host", "v2.api.example.com:8443"),)))
    assert _steps(e, "virtual host") == ["*.api.example.com for Host v2.api.example.com (suffix wildcard *.api.example.com)"]
    assert e.outcome.service == "productpage" and e.outcome.versions == (("v1", 0.9), ("v2", 0.1))
    assert e.steps[0].side == "edge" and any(s.side == "callee" for s in e.steps)
    e = explain(ir, Request("ingress", None, "GET", "/reviews/1", (("host", "api.example.com"),)))
    assert (e.outcome.status, e.outcome.kind) == (401, "response") and e.steps[-1].side == "edge"
    e = explain(ir, Request("ingress", None, "GET", "/x", (("host", "bookinfo.example.com"),), listener="http"))
    assert e.outcome.status == 301 and e.steps[-1].data["location"] == "https://bookinfo.example.com:8443/x"
    e = explain(ir, Request("ingress", "reviews", "GET", "/reviews/1"))  # no Host: one whose routes lead to reviews
    assert _steps(e, "host")[0].startswith("no Host header: sending Host api.example.com") and e.outcome.status == 401
    e = explain(ir, Request("ingress", None, "GET", "/static/x", (("host", "nowhere.example"),)))
    assert (e.outcome.status, _steps(e, "virtual host")) == (404, ["none for Host nowhere.example: 404"])


def test_requests_that_cannot_be_followed_say_what_they_need():
    ir = _example("authz")
    with pytest.raises(ExplainError, match="no Service or Gateway of that name"):
        explain(ir, Request("nobody", "ratings"))
    with pytest.raises(ExplainError, match="no Service or ExternalService of that name"):
        explain(ir, Request("productpage", "nothing"))
    with pytest.raises(ExplainError, match="ratings does not call reviews.*Add reviews to the `calls` of Service ratings"):
        explain(ir, Request("ratings", "reviews"))
    with pytest.raises(ExplainError, match="--to SERVICE"):
        explain(ir, Request("ratings"))
    with pytest.raises(ExplainError, match="--to 'nothing'"):
        explain(_example("gateway"), Request("ingress", "nothing"))
    with pytest.raises(ExplainError, match="--listener 'none': gateway ingress has listeners http, https"):
        explain(_example("gateway"), Request("ingress", None, listener="none"))


def test_text_and_json_are_deterministic():
    ir = _example("authz")
    r = Request("reviews", "ratings", "GET", "/ratings/1")
    a, b = explain(ir, r), explain(_example("authz"), r)
    assert render_text(a) == render_text(b) and json.dumps(a.to_json()) == json.dumps(b.to_json())
    text = render_text(a)
    assert text.splitlines()[-1] == "=> forwarded: forwarded to ratings: default 100%"
    assert "/work/" not in text and str(ROOT) not in json.dumps(a.to_json())


# ---------------------------------------------------------------- the command


def test_command_exit_codes_and_messages(capsys):
    policies = str(ROOT / "policies" / "authz")
    assert cli.main(["explain", policies, "--from", "reviews", "--to", "ratings", "GET", "/ratings/1"]) == 0
    out = capsys.readouterr().out
    assert "allow[0] matches: allowed" in out and out.endswith("=> forwarded: forwarded to ratings: default 100%\n")
    assert cli.main(["explain", policies, "--from", "reviews", "--to", "ratings", "/admin", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"]["status"] == 403
    assert cli.main(["explain", policies, "--from", "ratings", "--to", "reviews"]) == 1
    assert "ratings does not call reviews" in capsys.readouterr().err
    assert cli.main(["explain", policies, "--from", "reviews", "--to", "ratings", "G@T", "/"]) == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain", policies, "--from", "reviews", "-H", "no-colon"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_command_escapes_what_it_echoes(capsys):
    policies = str(ROOT / "policies" / "authz")
    assert cli.main(["explain", policies, "--from", "reviews", "--to", "ratings", "GET", "/\x1b[31mred"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out


def test_command_prints_policy_errors_like_check(tmp_path, capsys):
    (tmp_path / "mesh.yaml").write_text("kind: Mesh\nname: m\n---\nkind: Service\nname: a\nport: 1\ncalls: [b]\n")
    assert cli.main(["explain", str(tmp_path), "--from", "a", "--to", "b"]) == 1
    err = capsys.readouterr().err
    assert "mesh.yaml:" in err and "error(s)" in err and "Traceback" not in err
