"""explain's JWT verdicts against real Envoy, token by token: every pair of token kinds in `?access_token`
and in the Authorization header, on an optional path, a required one and one no rule covers.

jwt_authn verifies every token a request carries, the query parameter's first (it is extracted last and
verified first), and the first failure answers: 401, or 403 for a token of another audience. The broad
agreement test (tests/test_explain_agreement.py) draws tokens among many other things; this one walks
all 144 combinations so a change in that order is seen at once.
"""

from __future__ import annotations

import time

import pytest

from compiler.explain import Request, explain
from harness import report
from harness.edge_mesh import Signer

pytestmark = pytest.mark.envoy

ISSUER, AUDIENCE = "https://auth.tokens.test", "reviews"


def test_explain_and_envoy_agree_on_every_pair_of_tokens(live_mesh):
    signer, forger = Signer(kid="k1"), Signer(kid="k1")  # same key id, another key
    now = int(time.time())
    tokens = {
        "valid": signer.token(iss=ISSUER, aud=AUDIENCE),
        "valid-bob": signer.token(iss=ISSUER, aud=AUDIENCE, sub="bob"),
        "expired": signer.token(iss=ISSUER, aud=AUDIENCE, iat=now - 7200, exp=now - 3600),
        "other-aud": signer.token(iss=ISSUER, aud="ratings"),
        "bad-sig": forger.token(iss=ISSUER, aud=AUDIENCE),
        "other-iss": signer.token(iss="https://other.test", aud=AUDIENCE),
    }
    app = live_mesh.upstream("reviews")
    docs = [
        live_mesh.mesh_doc(),
        live_mesh.service("frontend", calls=["reviews"]),
        live_mesh.service("reviews", versions={"default": app}),
        {
            "kind": "RequestAuthentication",
            "service": "reviews",
            "providers": [{"name": "idp", "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": signer.jwks(),
                           "from_params": ["access_token"]}],
            "rules": [{"paths": ["/optional"], "allow_missing": True}, {"paths": ["/required"]}],
        },
    ]
    ir = live_mesh.build(docs).ir
    live_mesh.start("reviews", "frontend")
    labels = [None, *tokens]
    rows, statuses = [], {}
    for path in ("/optional", "/required", "/uncovered"):
        for in_query in labels:
            for in_header in labels:
                if in_query is None and in_header is None:
                    continue
                target = path + (f"?access_token={tokens[in_query]}" if in_query else "")
                headers = {"authorization": f"Bearer {tokens[in_header]}"} if in_header else {}
                seen = live_mesh.call_one("frontend", "reviews", target, headers=headers).status
                said = explain(ir, Request("frontend", "reviews", "GET", target, tuple(headers.items()))).outcome
                predicted = said.status if said.kind == "response" else 200
                statuses[seen] = statuses.get(seen, 0) + 1
                if seen != predicted:
                    rows.append(f"{path} query={in_query} header={in_header}: envoy {seen}, explain {predicted}")
    report("explain-tokens", requests=sum(statuses.values()), disagreements=len(rows), statuses=statuses)
    assert not rows, "\n".join(rows)
    assert sum(statuses.values()) == 3 * (len(labels) ** 2 - 1) == 144
    assert set(statuses) == {200, 401, 403}, statuses
