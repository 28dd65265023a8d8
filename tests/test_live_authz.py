"""Authorization, live: AuthorizationPolicy through real Envoy sidecars over mTLS.

Model (compiler/policy/security.py, compiler/lower/access.py, compiler/emit/rbac.py): a service's
AuthorizationPolicy becomes two `envoy.filters.http.rbac` filters on its inbound listener, the DENY
instance first and the ALLOW instance second, so a deny rule wins over any allow rule. `from` names
callers by the SPIFFE ID of their client certificate, so it needs mTLS. Once a service has allow rules
(or the mesh's `authorization.default` is `deny`), whatever they do not allow is refused with 403
"RBAC: access denied" before it reaches the app. `mode: dry_run` puts the same rules into
`shadow_rules` (one stat prefix per instance): nothing is refused, Envoy only counts.

Stats of the inbound HTTP connection manager (stat prefix `inbound_http`):
  http.inbound_http.rbac.<deny|allow>.allowed / denied  enforced rules, per filter instance
  http.inbound_http.rbac.<deny|allow>.shadow_allowed / shadow_denied   dry-run rules

The mesh: productpage -> reviews, ratings; reviews -> ratings; strict mTLS with certificates made by
compiler.certs. The test process plays the callers' apps (through their outbound listeners).
"""

from __future__ import annotations

import re
import time

import pytest

from compiler import certs
from compiler.build import build
from harness import raw_exchange, report

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "authz.test"
DENIED_BODY = "RBAC: access denied"
RBAC = "http.inbound_http.rbac."

# ratings: reviews may GET/HEAD /ratings/*; nobody may reach /admin. The second allow rule would let
# reviews reach /admin: it is shadowed by the deny rule (deny wins, and the build says so: W244).
RATINGS_ALLOW = [
    {"from": ["reviews"], "paths": [{"prefix": "/ratings/"}], "methods": ["GET", "HEAD"]},
    {"from": ["reviews"], "paths": [{"prefix": "/admin"}]},
]
RATINGS_DENY = [{"paths": [{"prefix": "/admin"}]}]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def spiffe(service: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{service}"


def ratings_policy(mode: str = "enforce") -> dict:
    return {"kind": "AuthorizationPolicy", "service": "ratings", "mode": mode, "allow": RATINGS_ALLOW, "deny": RATINGS_DENY}


def authz_mesh(live_mesh, tmp_path, policies: list[dict], *, default: str = "allow"):
    """productpage, reviews (app), ratings (app); strict mTLS; `policies` added; all sidecars started.

    Returns ({service: app}, build result).
    """
    apps = {name: live_mesh.upstream(name) for name in ("reviews", "ratings")}
    certs_root = tmp_path / "certs"
    result = live_mesh.build(
        [
            live_mesh.mesh_doc(trust_domain=TRUST_DOMAIN, mtls={"mode": "strict"}, authorization={"default": default}),
            live_mesh.service("productpage", calls=["reviews", "ratings"]),
            live_mesh.service("reviews", versions={"default": apps["reviews"]}, calls=["ratings"]),
            live_mesh.service("ratings", versions={"default": apps["ratings"]}),
            *policies,
        ],
        certs_root=str(certs_root),
    )
    assert result.ok, [d.render() for d in result.diagnostics]
    identities = {s.service: s.tls.identity for s in result.ir.sidecars}
    assert identities == {s: spiffe(s) for s in ("productpage", "reviews", "ratings")}, identities
    certs.write_service_certs(certs_root, TRUST_DOMAIN, identities)
    live_mesh.start("productpage", "reviews", "ratings")
    return apps, result


def rbac_stats(sidecar) -> dict[str, int]:
    return {k[len(RBAC):]: v for k, v in sidecar.stats(rf"^{re.escape(RBAC)}").items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)}


def send(live_mesh, caller: str, callee: str, path: str, method: str = "GET"):
    """One request from `caller`'s app; returns (response, RBAC stat delta on the callee's sidecar)."""
    before = rbac_stats(live_mesh[callee])
    r = live_mesh.call_one(caller, callee, path, method=method)
    return r, delta(before, rbac_stats(live_mesh[callee]))


# Dry-run counters as compiler/emit/rbac.py documents them: http.<prefix>.rbac.<deny|allow>.shadow_<outcome>.
SHADOW_SEP = "."


def shadow(kind: str, outcome: str) -> str:
    """Name (after `http.inbound_http.rbac.`) of a dry-run counter of the `kind` instance."""
    return f"{kind}{SHADOW_SEP}shadow_{outcome}"


# Expected RBAC stat deltas for one request on a service with both filter instances (enforce mode).
# The two instances share the stat names, so a request that passes both counts `allowed` twice.
PASSED = {"deny.allowed": 1, "allow.allowed": 1}
REFUSED_BY_ALLOW = {"deny.allowed": 1, "allow.denied": 1}  # the deny instance let it through, the allow-list did not
REFUSED_BY_DENY = {"deny.denied": 1}  # stopped at the first instance; the allow-list never ran


# --------------------------------------------------------------------------
# 1. enforce: identity + path + method; deny wins; the app never sees refusals
# --------------------------------------------------------------------------


def test_enforced_policy_allows_only_what_it_names(live_mesh, tmp_path):
    t0 = time.monotonic()
    apps, result = authz_mesh(live_mesh, tmp_path, [ratings_policy()])
    started = time.monotonic() - t0
    ratings = apps["ratings"]
    # The shadowed allow rule compiles, with a warning that it allows nothing.
    warnings = [d for d in result.diagnostics if d.code == "W244"]
    assert [(d.subject, d.path) for d in warnings] == [("AuthorizationPolicy 'ratings'", "allow[1]")], [
        d.render() for d in result.diagnostics
    ]

    cases = [
        # caller, method, path, expected status, expected RBAC stat delta on ratings
        ("reviews", "GET", "/ratings/1", 200, PASSED),
        ("reviews", "HEAD", "/ratings/1", 200, PASSED),
        ("reviews", "POST", "/ratings/1", 403, REFUSED_BY_ALLOW),  # method not allowed
        ("reviews", "GET", "/other", 403, REFUSED_BY_ALLOW),  # path not allowed
        ("reviews", "GET", "/ratingsX", 403, REFUSED_BY_ALLOW),  # prefix is /ratings/, not /ratings
        ("productpage", "GET", "/ratings/1", 403, REFUSED_BY_ALLOW),  # identity not allowed
        ("reviews", "GET", "/admin/x", 403, REFUSED_BY_DENY),  # allow[1] names it, deny wins
        ("reviews", "GET", "/admin", 403, REFUSED_BY_DENY),
        ("productpage", "GET", "/admin", 403, REFUSED_BY_DENY),
    ]
    seen = []
    for caller, method, path, status, stats in cases:
        r, grew = send(live_mesh, caller, "ratings", path, method)
        seen.append((caller, method, path, r.status, grew))
        assert r.status == status, (caller, method, path, r.status, r.text)
        if status == 403:
            assert r.text == DENIED_BODY, (caller, method, path, r.text)
        elif method != "HEAD":
            assert r.json()["service"] == "ratings" and r.json()["path"] == path, r.text
        assert grew == stats, (caller, method, path, grew)

    # Only the allowed requests reached the app.
    assert [(q.method, q.path) for q in ratings.requests] == [("GET", "/ratings/1"), ("HEAD", "/ratings/1")]
    # Services without a policy (mesh default allow) stay open.
    r, grew = send(live_mesh, "productpage", "reviews", "/open")
    assert r.status == 200 and grew == {}, (r.status, grew)

    # Plaintext straight to ratings' inbound listener (strict): refused at the TLS layer, no HTTP at all.
    host, port = live_mesh["ratings"].inbound
    data, how = raw_exchange(host, port, b"GET /ratings/1 HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n")
    assert not data.startswith(b"HTTP/") and how in ("closed", "reset"), (how, data[:200])
    assert ratings.count == 2

    totals = rbac_stats(live_mesh["ratings"])
    # 2 passed (each counted by both instances), 4 refused by the allow-list, 3 by the deny rules.
    assert totals.get("deny.denied") == 3 and totals.get("deny.allowed") == 2 + 4, totals
    assert totals.get("allow.denied") == 4 and totals.get("allow.allowed") == 2, totals
    report(
        "authz_enforce",
        start_s=started,
        total_s=time.monotonic() - t0,
        requests=len(cases),
        app_saw=ratings.count,
        rbac=totals,
        plaintext=how,
    )


# --------------------------------------------------------------------------
# 2. dry run: nothing refused, the shadow stats count what would be
# --------------------------------------------------------------------------


def test_dry_run_refuses_nothing_and_counts_shadow_denials(live_mesh, tmp_path):
    apps, _ = authz_mesh(live_mesh, tmp_path, [ratings_policy("dry_run")])
    ratings = apps["ratings"]
    cases = [
        # caller, path, expected shadow stat delta
        ("reviews", "/ratings/1", {shadow("deny", "allowed"): 1, shadow("allow", "allowed"): 1}),
        ("productpage", "/ratings/1", {shadow("deny", "allowed"): 1, shadow("allow", "denied"): 1}),
        ("reviews", "/other", {shadow("deny", "allowed"): 1, shadow("allow", "denied"): 1}),
        # In dry run both instances evaluate every request: the allow instance runs after a shadow deny.
        ("reviews", "/admin/x", {shadow("deny", "denied"): 1, shadow("allow", "allowed"): 1}),
    ]
    seen = [(caller, path, *send(live_mesh, caller, "ratings", path)) for caller, path, _ in cases]
    # Nothing is refused: every request reaches the app, and the enforcing counters do not move.
    assert [(c, p, r.status) for c, p, r, _ in seen] == [(c, p, 200) for c, p, _ in cases], [r.text for *_, r, _ in seen]
    assert [q.path for q in ratings.requests] == [p for _, p, _ in cases]
    totals = rbac_stats(live_mesh["ratings"])
    assert not any(totals.get(f"{k}.{o}", 0) for k in ("deny", "allow") for o in ("allowed", "denied")), totals
    # What would have been refused is counted by the shadow counters, per filter instance.
    shadow_names = sorted(k for k in totals if "shadow" in k and k not in ("shadow_allowed", "shadow_denied"))
    assert shadow_names == sorted(shadow(k, o) for k in ("allow", "deny") for o in ("allowed", "denied")), (
        f"dry-run counters are {shadow_names}; compiler/emit/rbac.py documents "
        "http.<prefix>.rbac.<deny|allow>.shadow_denied (Envoy joins shadow_rules_stat_prefix with a '.')"
    )
    assert [(c, p, grew) for c, p, _, grew in seen] == cases
    report("authz_dry_run", statuses=[r.status for _, _, r, _ in seen], rbac=totals)


# --------------------------------------------------------------------------
# 3. mesh default deny
# --------------------------------------------------------------------------


def test_mesh_default_deny(live_mesh, tmp_path):
    """authorization.default deny: reviews has no policy, so nobody may call it; ratings allows only what its
    policy names."""
    policy = {"kind": "AuthorizationPolicy", "service": "ratings", "allow": [{"from": ["reviews"]}]}
    apps, _ = authz_mesh(live_mesh, tmp_path, [policy], default="deny")
    r, grew = send(live_mesh, "productpage", "reviews", "/anything")
    assert (r.status, r.text) == (403, DENIED_BODY), (r.status, r.text)
    assert grew == {"allow.denied": 1}, grew  # only the (empty) allow-list instance: no deny rules, no deny instance
    assert apps["reviews"].count == 0

    r, grew = send(live_mesh, "reviews", "ratings", "/ratings/7", method="POST")
    assert r.status == 200 and r.json()["method"] == "POST", (r.status, r.text)
    assert grew == {"allow.allowed": 1}, grew
    r, grew = send(live_mesh, "productpage", "ratings", "/ratings/7")
    assert (r.status, r.text) == (403, DENIED_BODY), (r.status, r.text)
    assert grew == {"allow.denied": 1}, grew
    assert [q.path for q in apps["ratings"].requests] == ["/ratings/7"]
    report("authz_default_deny", reviews=rbac_stats(live_mesh["reviews"]), ratings=rbac_stats(live_mesh["ratings"]))


# --------------------------------------------------------------------------
# 4. W244: a deny rule that covers an allow rule (build only)
# --------------------------------------------------------------------------


# allow[0] is PUT /ok from anyone: no deny rule below covers it except the empty one (which refuses everything).
OTHER_ALLOW = {"paths": [{"exact": "/ok"}], "methods": ["PUT"]}


@pytest.mark.parametrize(
    ("allow", "deny", "warned"),
    [
        ({"from": ["reviews"], "paths": [{"prefix": "/admin/x"}]}, {"paths": [{"prefix": "/admin"}]}, ["allow[1]"]),
        ({"from": ["reviews"], "methods": ["GET"]}, {}, ["allow[0]", "allow[1]"]),  # an empty deny rule refuses all
        ({"from": ["reviews"]}, {"from": ["reviews", "productpage"]}, ["allow[1]"]),
        ({"methods": ["GET"], "paths": [{"exact": "/a"}]}, {"methods": ["GET", "POST"], "paths": [{"prefix": "/"}]}, ["allow[1]"]),
        ({"from": ["reviews"]}, {"from": ["productpage"]}, []),  # other callers
        ({"paths": [{"prefix": "/ratings/"}]}, {"paths": [{"prefix": "/admin"}]}, []),  # other paths
        ({"methods": ["GET", "POST"]}, {"methods": ["POST"]}, []),  # GET still allowed
        ({"from": ["reviews"]}, {"headers": [{"name": "x-debug", "exact": "1"}]}, []),  # only some requests
        ({"paths": [{"prefix": "/admin"}]}, {"from": ["reviews"], "paths": [{"prefix": "/admin"}]}, []),  # others may
    ],
)
def test_W244_deny_covering_allow_is_a_warning(live_mesh, allow, deny, warned):
    """Compiler only (no Envoy): W244 is a warning on the allow rule; the build still succeeds."""
    live_mesh.write_policy(
        [
            live_mesh.mesh_doc(trust_domain=TRUST_DOMAIN, mtls={"mode": "strict"}),
            live_mesh.service("productpage", calls=["ratings"]),
            live_mesh.service("reviews", calls=["ratings"]),
            live_mesh.service("ratings"),
            {"kind": "AuthorizationPolicy", "service": "ratings", "allow": [OTHER_ALLOW, allow], "deny": [deny]},
        ]
    )
    result = build(live_mesh.policy_dir)
    assert result.ok, [d.render() for d in result.diagnostics]  # a warning never fails the build
    assert [d.code for d in result.diagnostics if d.code != "W244"] == [], [d.render() for d in result.diagnostics]
    w = [d for d in result.diagnostics if d.code == "W244"]
    assert [d.path for d in w] == warned, [d.render() for d in w]
    for d in w:
        assert d.severity.value == "warning" and not d.is_error
        assert d.subject == "AuthorizationPolicy 'ratings'"
        assert d.source is not None and d.source.file == "mesh.yaml"
        assert d.render() == (
            f"{d.source}: warning[W244]: AuthorizationPolicy 'ratings' {d.path}: "
            "deny[0] refuses every request this rule allows (deny wins), so it allows nothing"
        )
