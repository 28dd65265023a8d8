"""`meshc explain` predicts what real Envoy sidecars do, request by request.

One mesh exercises every decision explain makes (strict mTLS, the Mesh's default deny, a gateway):

  frontend  -> reviews (v1, v2, v3), ratings, ledger, weather (an ExternalService: a plain app on loopback);
            any other Host meets the egress catch-all (502)
  ingress   (Gateway, plain HTTP edge) -> shop.example/ratings… to ratings, shop.example/… to reviews
  reviews   Route: a direct response, a redirect, path exact/prefix/regex, methods, headers exact/prefix/
            regex/present/absent, query exact/prefix/regex/present, deterministic splits (100, 100/0), a 100%
            and a 0% fault abort, a prefix rewrite with a mirror, a cookie, a 50/50 weighted split last;
            RequestAuthentication (inline JWKS; /public and /items optional, /secure required, elsewhere no
            rule) and an enforcing AuthorizationPolicy (deny on paths/headers/methods+from, allow on
            from/methods/paths/headers/claims)
  ratings   AuthorizationPolicy in dry_run (it denies everything, so nothing is refused); a rate limit that
            never empties here (explain: forwarded, uncertain, or 429)
  ledger    no policy: the Mesh's `authorization.default: deny` refuses everything

Per Mesh `paths` setting (escaped slashes reject / decode with case-insensitive security paths / redirect /
keep), 500 requests are drawn with a fixed seed over callers, services, hosts, methods, paths (dot segments,
escaped slashes, capitals), queries, headers, cookies and `authorization` values (valid, admin, expired, not
yet valid, wrong issuer, wrong audience, bad signature, not a JWT...; half the requests carry none), plus
fixed ones (`curated`). Each goes through the real sidecars once (the test process plays the calling apps and
the outside client at the gateway); each app answers 200 with `x-served-by: <service>/<version>`. For each,
`compiler.explain.explain(ir, request)` is asked, and the two must agree on every request
(harness/agreement.py `disagreement`): same status (and a redirect's Location); when forwarded, the app of
the predicted service answered, with a version the prediction gives p > 0. Disagreements are
printed as a table with both sides. And the comparison has teeth: explain reading policies that each differ
from the running one in a single decision (a route target, an abort's percentage, a deny rule, a token
requirement, the audience check, the Mesh's default) disagrees with the same observations (`mutants`).
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter

import pytest
import yaml

from compiler import certs
from compiler.build import BuildOptions, build
from compiler.explain import ExplainError, Request, explain
from compiler.policy.gateway import Gateway
from harness import policy_yaml, report, write_policy
from harness.agreement import (
    Case, Vocabulary, decision_path, disagreement, generate, predicted, redirect_location, send, serve_identity, table,
    tally,
)
from harness.edge_mesh import Signer
from harness.gateway import start_gateway

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "agree.test"
ISSUER, AUDIENCE = "https://auth.agree.test", "reviews"
GW, SHOP = "ingress", "shop.example"
WEATHER = "weather.example"
SEED = int(os.environ.get("MESHC_AGREEMENT_SEED", "14"))
"""The draw's seed: fixed; another one (the environment variable) explores other requests, as when hunting."""
COUNT = 500


def reviews_route() -> dict:
    return {
        "kind": "Route",
        "service": "reviews",
        "rules": [
            {"match": {"path": {"exact": "/healthz"}}, "respond": {"status": 200, "body": "ok\n"}},
            {"match": {"path": {"prefix": "/old/"}}, "redirect": {"prefix": "/new/", "code": 301}},
            {"match": {"path": {"regex": "/items/[0-9]+"}, "methods": ["GET", "HEAD"]}, "to": {"v2": 100}},
            {"match": {"headers": [{"name": "end-user", "exact": "jason"}]}, "to": {"v3": 100}},
            {"match": {"headers": [{"name": "x-group", "prefix": "beta"}]}, "to": {"v2": 100, "v1": 0}},
            {
                "match": {"headers": [{"name": "x-debug", "regex": "[0-9]+"}]},
                "to": {"v1": 100},
                "fault": {"abort": {"status": 503, "percent": 100}},
            },
            {
                "match": {"headers": [{"name": "x-canary", "present": True}]},
                "to": {"v2": 100},
                "fault": {"abort": {"status": 500, "percent": 0}},
            },
            {
                "match": {
                    "query": [{"name": "variant", "exact": "b"}],
                    "headers": [{"name": "x-legacy", "present": False}],
                },
                "to": {"v3": 100},
            },
            {
                "match": {"path": {"prefix": "/api/"}},
                "to": {"v1": 100},
                "rewrite": {"prefix": "/v1/"},
                "mirror": [{"to": "v3", "percent": 100}],
            },
            {"match": {"cookies": [{"name": "ab", "exact": "b"}]}, "to": {"v2": 100}},
            {"match": {"methods": ["POST", "PUT"]}, "to": {"v1": 100}},
            {"match": {"query": [{"name": "page", "prefix": "1"}]}, "to": {"v3": 100}},
            {"match": {"query": [{"name": "sort", "regex": "(asc|desc)"}]}, "to": {"v2": 100}},
            {"match": {"query": [{"name": "trace", "present": True}]}, "to": {"v3": 100}},
            {"to": {"v1": 50, "v2": 50}},
        ],
    }


def reviews_security(signer: Signer) -> list[dict]:
    provider = {"name": "agree-issuer", "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": signer.jwks()}
    return [
        {
            "kind": "RequestAuthentication",
            "service": "reviews",
            "providers": [provider],
            "rules": [
                {"paths": ["/public"], "allow_missing": True},
                {"paths": ["/items"], "allow_missing": True},
                {"paths": ["/secure"]},
            ],
        },
        {
            "kind": "AuthorizationPolicy",
            "service": "reviews",
            "deny": [
                {"paths": [{"prefix": "/admin"}]},
                {"headers": [{"name": "x-block", "present": True}]},
                {"from": [GW], "methods": ["PUT", "DELETE"]},
            ],
            "allow": [
                {"from": ["frontend"], "methods": ["GET", "HEAD", "POST"]},
                {
                    "from": [GW],
                    "paths": [{"prefix": "/public"}, {"prefix": "/items/"}, {"exact": "/"}],
                    "methods": ["GET", "HEAD"],
                },
                {"from": ["frontend"], "methods": ["DELETE"], "claims": {"role": "admin"}},
                {"methods": ["PUT"], "headers": [{"name": "x-tenant", "exact": "acme"}]},
                {"paths": [{"regex": "/v1/[a-z]+"}]},
            ],
        },
    ]


def tokens(signer: Signer) -> dict[str, str]:
    """`authorization` header values by label: good tokens and every way one can be wrong."""
    now = int(time.time())
    forger = Signer(kid=signer.kid)  # same key id, another key: the signature does not verify
    base = {"iss": ISSUER, "aud": AUDIENCE}
    good = signer.token(**base)
    tokens = {
        "valid": good,
        "admin": signer.token(**base, role="admin"),
        "expired": signer.token(**base, iat=now - 7200, exp=now - 3600),
        "not-yet": signer.token(**base, nbf=now + 3600),
        "wrong-iss": signer.token(iss="https://other.example", aud=AUDIENCE),
        "wrong-aud": signer.token(iss=ISSUER, aud="ratings"),
        "bad-sig": forger.token(**base, role="admin"),
        "bad-sig-wrong-aud": forger.token(iss=ISSUER, aud="ratings"),
        "expired-wrong-aud": signer.token(iss=ISSUER, aud="ratings", iat=now - 7200, exp=now - 3600),
        "garbage": "not.a.jwt",
    }
    headers = {label: f"Bearer {token}" for label, token in tokens.items()}
    headers["lower-bearer"] = f"bearer {good}"
    headers["basic"] = "Basic dXNlcjpwYXNz"
    return headers


def agreement_mesh(live_mesh, tmp_path, signer: Signer, paths: dict | None = None):
    """Build and start the mesh (`paths`: the Mesh's path settings); returns (ir, entries: caller -> (host, port)
    where its requests enter, the policy documents as dicts)."""
    apps = {("reviews", v): serve_identity(live_mesh.upstream("reviews", v)) for v in ("v1", "v2", "v3")}
    for name in ("ratings", "ledger"):
        apps[(name, "default")] = serve_identity(live_mesh.upstream(name))
    weather = serve_identity(live_mesh.upstream("weather", "external", host=live_mesh.loopback.address()))
    address = live_mesh.loopback.address()
    root = tmp_path / "certs"
    edge = root / GW / "edge" / SHOP
    gateway = {
        "kind": "Gateway",
        "name": GW,
        "address": address,
        "admin_port": live_mesh.loopback.port(address),
        "listeners": [
            {"name": "web", "port": live_mesh.loopback.port(address)},
            {"name": "tohttps", "port": live_mesh.loopback.port(address), "redirect_to_https": True},
            {
                "name": "secure",
                "port": live_mesh.loopback.port(address),
                "protocol": "https",
                "tls": {"certificates": [{"hosts": [SHOP], "cert": str(edge / "cert.pem"), "key": str(edge / "key.pem")}]},
            },
        ],
        "routes": [{"hosts": [SHOP], "path": "/ratings", "to": "ratings"}, {"hosts": [SHOP], "to": "reviews"}],
        "rate_limit": {"requests": 1_000_000, "per": "1s"},
    }
    # At the edge: a token is required for ratings and checked (then removed: forward_token false) on /secure.
    edge_authn = {
        "kind": "RequestAuthentication",
        "service": GW,
        "providers": [{"name": "edge-issuer", "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": signer.jwks()}],
        "rules": [{"paths": ["/ratings"]}, {"paths": ["/secure"], "allow_missing": True}],
    }
    docs = [
        live_mesh.mesh_doc(
            trust_domain=TRUST_DOMAIN,
            mtls={"mode": "strict"},
            authorization={"default": "deny"},
            **({"paths": paths} if paths else {}),
        ),
        live_mesh.service("frontend", calls=["reviews", "ratings", "ledger", "weather"]),
        live_mesh.service("reviews", versions={v: apps[("reviews", v)] for v in ("v1", "v2", "v3")}),
        live_mesh.service("ratings", versions={"default": apps[("ratings", "default")]}),
        live_mesh.service("ledger", versions={"default": apps[("ledger", "default")]}),
        reviews_route(),
        *reviews_security(signer),
        {"kind": "AuthorizationPolicy", "service": "ratings", "mode": "dry_run", 
         "deny": [{"paths": [{"prefix": "/"}]}]},
        {"kind": "TrafficPolicy", "service": "ratings", "rate_limit": {"requests": 1_000_000, "per": "1s"}},
        {"kind": "ExternalService", "name": "weather", "host": WEATHER, "port": 80, "endpoints": [weather.endpoint]},
        gateway,
        edge_authn,
    ]
    result = live_mesh.build(docs, certs_root=str(root))
    assert not [d for d in result.diagnostics if d.is_error], [d.render() for d in result.diagnostics]
    certs.write_service_certs(root, TRUST_DOMAIN, {s.service: s.tls.identity for s in result.ir.sidecars})
    certs.write_edge_certs(root, TRUST_DOMAIN, Gateway.model_validate(gateway))
    live_mesh.start("reviews", "ratings", "ledger", "frontend")
    gw = start_gateway(live_mesh, GW)
    entries = {"frontend": live_mesh["frontend"].outbound, GW: gw.edge("web"), f"{GW}/tohttps": gw.edge("tohttps")}
    return result.ir, entries, list(yaml.safe_load_all(policy_yaml(docs)))


def mutants(docs: list[dict]) -> dict[str, list[dict]]:
    """Policies that each differ from the running one in one decision: explain reading them must disagree with
    what the sidecars did on some request, or the comparison could not tell a wrong prediction."""

    def edit(kind: str, change, service: str | None = None) -> list[dict]:
        out = copy.deepcopy(docs)
        doc = next(d for d in out if d["kind"] == kind and d.get("service", service) == service)
        change(doc)
        return out

    return {
        "jason to v2": edit("Route", lambda d: d["rules"][3].update(to={"v2": 100}), "reviews"),
        "abort never": edit("Route", lambda d: d["rules"][5]["fault"]["abort"].update(percent=0), "reviews"),
        "no deny of /admin": edit("AuthorizationPolicy", lambda d: d["deny"].pop(0), "reviews"),
        "/secure token optional": edit(
            "RequestAuthentication", lambda d: d["rules"][2].update(allow_missing=True), "reviews"
        ),
        "any audience": edit("RequestAuthentication", lambda d: d["providers"][0].pop("audiences"), "reviews"),
        "mesh default allow": edit("Mesh", lambda d: d.update(authorization={"default": "allow"})),
    }


def mutant_ir(tmp_path, name: str, docs: list[dict]):
    folder = tmp_path / "mutants" / name.replace(" ", "-").replace("/", "")
    write_policy(folder, docs)
    result = build(folder, BuildOptions(config_root=str(tmp_path / "out"), certs_root=str(tmp_path / "certs")))
    assert result.ok, [d.render() for d in result.diagnostics]
    return result.ir


def vocabulary(signer: Signer) -> Vocabulary:
    return Vocabulary(
        targets=[
            *[("frontend", "reviews", None)] * 5,
            ("frontend", "ratings", None),
            ("frontend", "ledger", None),
            ("frontend", None, "api.unknown.example"),
            ("frontend", "weather", None),
            ("frontend", None, WEATHER),
            ("frontend", "reviews", "REVIEWS"),
            ("frontend", "reviews", "reviews:9080"),
            *[(GW, None, SHOP)] * 3,
            (GW, None, "other.example"),
            (GW, None, "Shop.Example:8080"),
            (GW, None, SHOP, "tohttps"),
        ],
        methods=["GET", "GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
        paths=[
            "/", "/healthz", "/healthz/x", "/old/page", "/oldies", "/items/12", "/items/x", "/items",
            "/api/books", "/api/", "/secure/x", "/secure", "/public/p", "/publicity", "/admin",
            "/administrator", "/a/../admin", "/x/%2E%2E/admin", "/%2Fadmin", "/a%2fb", "//admin", "/ratings/1",
            "/reviews/1", "/%61dmin", "/ADMIN", "/admin;x", "/public/../admin", "/items/%31%32", "/admin/.",
            "/ratingsx", "/public/%2e%2e/admin", "/secure/", "/Public/p", "/SECURE/x", "/admin%2Fx",
            "/public%2F..%2Fadmin", "/%5Cadmin", "/items%2f12", "/old/%3a%7e", "/old/a%2fb",
        ],
        queries=[
            "", "", "", "variant=b", "variant=a", "page=12", "page=2", "sort=asc", "sort=up", "trace", "trace=1",
            "variant=%62", "variant=b&variant=a", "Variant=b", "sort=desc&page=1",
        ],
        headers={
            "end-user": ["jason", "bob"],
            "x-group": ["beta", "beta-2", "alpha", "Beta"],
            "x-debug": ["123", "abc", "12a"],
            "x-canary": ["1"],
            "x-legacy": ["yes"],
            "x-block": ["1"],
            "x-tenant": ["acme", "umbrella"],
            "cookie": ["ab=b", "ab=bb; x=1", "x=1; ab=b"],
        },
        tokens=tokens(signer),
    )


def curated(tokens: dict[str, str]) -> list[Case]:
    """A few requests the draw is unlikely to make, so that every authorization rule decides at least once."""

    def bearer(label: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", tokens[label]),)

    return [
        Case("frontend", "reviews", "DELETE", "/secure/x", bearer("admin"), token="admin"),  # allow[2]: the claim
        Case("frontend", "reviews", "DELETE", "/items/7", bearer("admin"), token="admin"),  # optional token, verified
        Case("frontend", "reviews", "DELETE", "/secure/x", bearer("valid"), token="valid"),  # no role claim: 403
        Case("frontend", "reviews", "DELETE", "/other", bearer("admin"), token="admin"),  # no JWT rule: no claims, 403
        Case("frontend", "reviews", "PUT", "/x", (("x-tenant", "acme"),)),  # allow[3]
        Case(GW, None, "GET", "/public/p", host=SHOP),  # allow[1]
        Case(GW, None, "GET", "/api/books", host=SHOP),  # rewritten to /v1/books: allow[4]
        Case(GW, None, "PUT", "/public/p", host=SHOP),  # deny[2]
        Case("frontend", "reviews", "GET", "/x", (("x-block", "1"),)),  # deny[1]
        Case("frontend", "reviews", "GET", "/a/../admin"),  # deny[0] after normalisation
        # Disagreements found by this test once (explain fixed since): a token for another audience is 403,
        # even with a bad signature (jwt_authn checks the audience before the signature), but 401 when expired;
        # query parameters are matched as sent, not percent-decoded.
        Case("frontend", "reviews", "GET", "/secure/x", bearer("wrong-aud"), token="wrong-aud"),
        Case("frontend", "reviews", "GET", "/public/p", bearer("bad-sig-wrong-aud"), token="bad-sig-wrong-aud"),
        Case("frontend", "reviews", "GET", "/items/1", bearer("expired-wrong-aud"), token="expired-wrong-aud"),
        Case("frontend", "reviews", "GET", "/x?variant=%62"),
        Case("frontend", "reviews", "GET", "/x?variant=b"),
    ]


def ask(ir, case: Case):
    headers = case.headers + ((("host", case.host),) if case.host else ())
    listener = (case.listener or "web") if case.caller == GW else None
    return explain(ir, Request(case.caller, case.service, case.method, case.path, headers, listener))


STEPS = {
    ("caller", "path"), ("caller", "route"), ("caller", "respond"), ("caller", "redirect"), ("caller", "fault"),
    ("caller", "targets"), ("caller", "rewrite"), ("caller", "mirror"), ("caller", "external"),
    ("edge", "listener"), ("edge", "route"), ("callee", "mTLS"), ("callee", "jwt"), ("callee", "authorization"),
    ("callee", "rate limit"), ("callee", "endpoints"),
}
"""Steps explain must have taken somewhere in the draw (so that agreement covers every kind of decision)."""
RULES = {f"AuthorizationPolicy/reviews/{r}" for r in ("deny[0]", "deny[1]", "deny[2]")} | {
    f"AuthorizationPolicy/reviews/allow[{i}]" for i in range(5)
}
"""reviews' authorization rules: each must have decided some request."""
ANSWERS = {200, 301, 401, 403, 404, 502, 503, "reviews/v1", "reviews/v2", "reviews/v3", "ratings/default",
           "weather/external"}
"""What the sidecars answered (a status, or the app that answered): each must occur (and 400 for escaped
slashes when they are rejected, 307 when they are redirected)."""


PATHS = {
    "reject": None,  # the defaults: escaped slashes 400, case-sensitive security paths
    "decode-any-case": {"escaped_slashes": "decode", "case_sensitive": False},
    "redirect": {"escaped_slashes": "redirect"},
    "keep": {"escaped_slashes": "keep"},
}
"""The Mesh's path settings the mesh is built with, one test each (path normalisation and security path case)."""


@pytest.mark.parametrize("mode", list(PATHS))
def test_explain_agrees_with_envoy_on_every_generated_request(live_mesh, tmp_path, mode):
    started = time.monotonic()
    signer = Signer(kid="agree-1")
    ir, entries, docs = agreement_mesh(live_mesh, tmp_path, signer, PATHS[mode])
    vocab = vocabulary(signer)
    fixed = curated(vocab.tokens)
    cases = fixed + [c for c in generate(vocab, COUNT, SEED) if c not in fixed]
    assert len(set(cases)) == len(cases) >= COUNT

    rows, paths, answers, steps, rules, kinds = [], Counter(), Counter(), Counter(), Counter(), Counter()
    observed = []
    for case in cases:
        seen = send(entries, case)
        observed.append((case, seen))
        answers[seen.served_by or seen.status] += 1
        try:
            said = ask(ir, case)
        except ExplainError as exc:
            rows.append((case, "ExplainError", seen, str(exc)))
            continue
        paths[decision_path(said)] += 1
        kinds[(said.outcome.kind, "certain" if said.outcome.certain else "uncertain")] += 1
        for step in said.steps:
            steps[(step.side, step.what)] += 1
            if step.what == "authorization" and " matches" in step.decision and step.source:
                rules[step.source.split(" ", 1)[-1]] += 1
        why = disagreement(said.outcome, seen, case.service, redirect_location(said))
        if why is not None:
            rows.append((case, predicted(said.outcome), seen, why))
    elapsed = time.monotonic() - started
    report(
        f"explain-agreement[{mode}]", requests=len(cases), disagreements=len(rows), decision_paths=len(paths),
        seconds=round(elapsed, 1), predictions=tally(kinds), answers=tally(answers), rules=tally(rules),
    )
    assert not rows, f"{len(rows)} of {len(cases)} requests disagree:\n{table(rows)}"
    expected = ANSWERS | {"reject": {400}, "redirect": {307}}.get(mode, set())
    assert not expected - set(answers), (sorted(map(str, expected - set(answers))), tally(answers))
    assert not STEPS - set(steps), (sorted(STEPS - set(steps)), tally(steps))
    assert not RULES - set(rules), (sorted(RULES - set(rules)), tally(rules))
    assert len(paths) >= 80, len(paths)
    if mode == "reject":  # the comparison has teeth: explain on a policy one decision off disagrees
        irs = {name: mutant_ir(tmp_path, name, m) for name, m in mutants(docs).items()}
        caught = {name: sum(1 for case, seen in observed if _differs(m, case, seen)) for name, m in irs.items()}
        report("explain-agreement[mutants]", **{k.replace(" ", "_").replace("/", ""): v for k, v in caught.items()})
        assert all(caught.values()), caught


def _differs(ir, case: Case, seen) -> bool:
    said = ask(ir, case)
    return disagreement(said.outcome, seen, case.service, redirect_location(said)) is not None
