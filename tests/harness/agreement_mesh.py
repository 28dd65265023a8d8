"""The mesh of the explain-versus-Envoy agreement test (tests/test_explain_agreement.py), built and started.

    ir, entries, docs = agreement_mesh(live_mesh, tmp_path, signer, paths={"escaped_slashes": "keep"})

One mesh that exercises every decision `meshc explain` makes (strict mTLS, the Mesh's default deny):

  frontend  -> reviews (v1, v2, v3), ratings, ledger, weather (an ExternalService: a plain app on loopback);
            any other Host meets the egress catch-all (502)
  ingress   Gateway: `web` (plain HTTP) routes shop.example/ratings… to ratings and shop.example/… to reviews;
            `tohttps` redirects to `secure` (HTTPS); its own RequestAuthentication (a token required on
            /ratings, checked and then removed on /secure) and a rate limit that never empties here
  reviews   Route: rules for some callers only (x-edge from the gateway -> v3, x-inside from frontend -> v2),
            a direct response, a redirect, path exact/prefix/regex, methods, headers exact/prefix/
            regex/present/absent, query exact/prefix/regex/present, cookies, deterministic splits (100, 100/0),
            a 100% and a 0% fault abort, a prefix rewrite with a mirror and CORS, a 50/50 weighted split last;
            RequestAuthentication (inline JWKS; /public and /items optional, /secure required, elsewhere no
            rule) and an enforcing AuthorizationPolicy (deny on paths/headers/methods+from, PATCH from
            any address but frontend's, the gateway's POST off /public; allow on from/methods/paths/headers/
            claims, OPTIONS-like methods from namespace default but not the gateway nor /admin, PATCH from
            frontend's address)
  ratings   AuthorizationPolicy in dry_run (it denies everything, so nothing is refused); a rate limit that
            never empties here (explain: forwarded, uncertain, or 429)
  ledger    no policy: the Mesh's `authorization.default: deny` refuses everything

Every app answers 200 with `x-served-by: <service>/<version>` (agreement.serve_identity). `mutants(docs)`:
policies one decision away from the running one, to show the comparison tells a wrong prediction.
"""

from __future__ import annotations

import copy
import time

import yaml

from compiler import certs
from compiler.build import BuildOptions, build
from compiler.policy.gateway import Gateway

from .agreement import serve_identity
from .edge_mesh import Signer
from .gateway import https_many, start_gateway, tls_context
from .policy import policy_yaml, write_policy

TRUST_DOMAIN = "agree.test"
ISSUER, AUDIENCE = "https://auth.agree.test", "reviews"
GW, SHOP = "ingress", "shop.example"
WEATHER = "weather.example"
API = "api.example"


def reviews_route() -> dict:
    return {
        "kind": "Route",
        "service": "reviews",
        "rules": [
            # Rules for some callers only (match.callers): the first is on the gateway's routes alone, the second
            # on frontend's sidecar alone; the other caller's requests with the same header go on down the list.
            {"match": {"callers": [GW], "headers": [{"name": "x-edge", "exact": "1"}]}, "to": {"v3": 100}},
            {"match": {"callers": ["frontend"], "headers": [{"name": "x-inside", "present": True}]}, "to": {"v2": 100}},
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
                "cors": {"allow_origins": ["https://shop.example"], "allow_methods": ["GET", "POST"]},
            },
            {"match": {"cookies": [{"name": "ab", "exact": "b"}]}, "to": {"v2": 100}},
            {"match": {"methods": ["POST", "PUT"]}, "to": {"v1": 100}},
            {"match": {"query": [{"name": "page", "prefix": "1"}]}, "to": {"v3": 100}},
            {"match": {"query": [{"name": "sort", "regex": "(asc|desc)"}]}, "to": {"v2": 100}},
            {"match": {"query": [{"name": "trace", "present": True}]}, "to": {"v3": 100}},
            {"to": {"v1": 50, "v2": 50}},
        ],
    }


def reviews_security(signer: Signer, frontend_address: str) -> list[dict]:
    """reviews' RequestAuthentication and AuthorizationPolicy; `frontend_address`: frontend's sidecar's own
    address, where its calls come from (an IP block names it)."""
    provider = {
        "name": "agree-issuer",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": signer.jwks(),
        "from_params": ["access_token"],
    }
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
                {"not_ip_blocks": [f"{frontend_address}/32"], "methods": ["PATCH"]},  # PATCH only from frontend
                {"from": [GW], "methods": ["POST"], "not_paths": [{"prefix": "/public"}]},
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
                {"namespaces": ["default"], "not_namespaces": ["ops"], "not_from": [GW], "not_paths": [{"prefix": "/admin"}],
                 "not_methods": ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]},
                {"ip_blocks": [f"{frontend_address}/32"], "methods": ["PATCH"]},
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
        "routes": [
            {"hosts": [SHOP], "path": "/ratings", "to": "ratings"},
            {"hosts": [SHOP], "to": "reviews"},
            {"hosts": [f"*.{API}"], "to": "ratings"},
        ],
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
        *reviews_security(signer, live_mesh.placement("frontend").address),
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
    host, port = gw.edge("secure")
    context = tls_context(root / "ca.pem")

    def https(case, timeout: float):  # an outside client over TLS, SNI shop.example, the development CA trusted
        return https_many(host, port, 1, case.path, sni=SHOP, context=context, method=case.method,
                          headers=dict(case.headers), host_header=case.host_header, timeout=timeout)[0]

    entries = {
        "frontend": live_mesh["frontend"].outbound,
        GW: gw.edge("web"),
        f"{GW}/tohttps": gw.edge("tohttps"),
        f"{GW}/secure": https,
    }
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
        "jason to v2": edit("Route", lambda d: d["rules"][5].update(to={"v2": 100}), "reviews"),
        "abort never": edit("Route", lambda d: d["rules"][7]["fault"]["abort"].update(percent=0), "reviews"),
        "x-edge to v3 from every caller": edit("Route", lambda d: d["rules"][0]["match"].pop("callers"), "reviews"),
        "no deny of /admin": edit("AuthorizationPolicy", lambda d: d["deny"].pop(0), "reviews"),
        "PATCH denied from every address": edit(
            "AuthorizationPolicy", lambda d: d["deny"][3].pop("not_ip_blocks"), "reviews"
        ),
        # (Not "no not_paths on the gateway's POST deny": no allow rule lets the gateway POST, so nothing could
        # tell; its requests were only ever caught through a redirect-scheme difference, since fixed.)
        "the namespace rule lets the gateway in": edit(
            "AuthorizationPolicy", lambda d: d["allow"][5].pop("not_from"), "reviews"
        ),
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
