"""Request authentication, live: RequestAuthentication (JWT) and claim-based AuthorizationPolicy in real Envoy sidecars.

Model (compiler/policy/security.py, compiler/lower/access.py, compiler/emit/jwt.py, compiler/emit/rbac.py):
a service's RequestAuthentication becomes one `envoy.filters.http.jwt_authn` filter on its *inbound*
listener, ahead of the RBAC filters. Every provider verifies signature (JWKS inline or from a file),
issuer, audience and expiry; an invalid token is refused with 401 before the app sees it. Rules are
path prefixes, first match wins; `allow_missing` lets a request without any token through, but an
invalid token is still 401. A verified payload lands in dynamic metadata (`jwt_payload`), where
AuthorizationPolicy `claims` read it (403 "RBAC: access denied" when they do not hold).
`forward_claims` copies claims into request headers for the app; `forward_token: false` (the default)
removes the token header once verified.

The mesh is plaintext (mTLS disabled): the test process plays productpage's app and calls through
productpage's outbound listener (`Host: reviews`), so every request goes caller sidecar -> callee
sidecar -> app. Keys are made here (RSA 2048) and tokens signed here (RS256), with `cryptography` only.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness import report

pytestmark = pytest.mark.envoy

CALLER, CALLEE = "productpage", "reviews"
ISSUER = "https://auth.jwt.test"
AUDIENCE = "reviews"
PROVIDER = "shop-issuer"
KID = "test-1"


# --------------------------------------------------------------------------
# keys and tokens
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


class Signer:
    """An RSA 2048 key pair: its public JWKS, and RS256 tokens signed with its private key."""

    def __init__(self, kid: str = KID):
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        pub = self.key.public_key().public_numbers()
        jwk = {"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig", "n": b64url(_uint(pub.n)), "e": b64url(_uint(pub.e))}
        return json.dumps({"keys": [jwk]})

    def token(self, kid: str | None = None, **claims) -> str:
        """A token with sensible defaults (our issuer and audience, sub alice, valid for 5 minutes); `claims` override them."""
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------
# the mesh
# --------------------------------------------------------------------------


def provider(**keys) -> dict:
    """The provider of policies/jwt/mesh.yaml, with the test's keys (`jwks=...` or `jwks_file=...`)."""
    return {
        "name": PROVIDER,
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        **keys,
        "from_params": ["access_token"],
        "forward_claims": {"sub": "x-user-id"},
    }


def jwt_mesh(live_mesh, **keys):
    """productpage -> reviews (one app); reviews needs tokens except on /public; only role=admin may DELETE.

    Returns the reviews app once both sidecars run.
    """
    app = live_mesh.upstream(CALLEE)
    result = live_mesh.build(
        [
            live_mesh.mesh_doc(),  # mtls: disable
            live_mesh.service(CALLER, calls=[CALLEE]),
            live_mesh.service(CALLEE, versions={"default": app}),
            {
                "kind": "RequestAuthentication",
                "service": CALLEE,
                "providers": [provider(**keys)],
                "rules": [{"paths": ["/public"], "allow_missing": True}, {"paths": ["/"]}],
            },
            {
                "kind": "AuthorizationPolicy",
                "service": CALLEE,
                "allow": [
                    {"methods": ["GET", "HEAD", "POST", "PUT", "PATCH"]},
                    {"methods": ["DELETE"], "claims": {"role": "admin"}},
                ],
            },
        ]
    )
    assert result.ok, [d.render() for d in result.diagnostics]
    assert not result.diagnostics, [d.render() for d in result.diagnostics]
    live_mesh.start(CALLER, CALLEE)
    return app


def send(live_mesh, app, path: str = "/", *, method: str = "GET", headers: dict[str, str] | None = None):
    """One request from productpage's app to reviews; returns (response, the request the app got or None)."""
    before = app.count
    r = live_mesh.call_one(CALLER, CALLEE, path, method=method, headers=headers or {})
    got = app.requests[before:]
    assert len(got) <= 1, got
    return r, (got[0] if got else None)


def assert_refused(r, got, status: int, body: str | None = None) -> None:
    assert r.status == status, (r.status, r.headers, r.text)
    assert got is None, f"a refused request reached the app: {got}"
    if body is not None:
        assert body in r.text, (body, r.text)


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_tokens_are_verified_on_the_callee_side(live_mesh):
    """Valid bearer token -> 200 with x-user-id = sub and no Authorization header at the app; expired, wrong
    issuer, foreign signature, wrong audience, missing -> 401 that never reaches the app; a token in the
    access_token query parameter works too."""
    signer, stranger = Signer(), Signer()
    app = jwt_mesh(live_mesh, jwks=signer.jwks())
    back = live_mesh[CALLEE]
    started = time.monotonic()

    r, got = send(live_mesh, app, "/reviews/1", headers=bearer(signer.token(sub="alice")))
    assert r.status == 200, (r.status, r.text)
    assert got is not None and got.path == "/reviews/1"
    assert got.headers.get("x-user-id") == "alice", got.headers
    assert "authorization" not in got.headers, got.headers  # forward_token: false

    now = int(time.time())
    refused = {
        "expired": (signer.token(iat=now - 7200, exp=now - 3600), "Jwt is expired"),
        "wrong_issuer": (signer.token(iss="https://evil.example"), "Jwt issuer is not configured"),
        "bad_signature": (stranger.token(), "Jwt verification fails"),  # same kid, another key
    }
    bodies = {}
    for case, (token, body) in refused.items():
        r, got = send(live_mesh, app, "/reviews/1", headers=bearer(token))
        assert_refused(r, got, 401, body)
        bodies[case] = r.text
    r, got = send(live_mesh, app, "/reviews/1")
    assert_refused(r, got, 401, "Jwt is missing")
    bodies["missing"] = r.text

    # The refusals came from the callee's sidecar (its jwt_authn filter), not from the caller's.
    denied = back.stats(r"jwt_authn").get("http.inbound_http.jwt_authn.denied")
    assert denied == len(refused) + 1, back.stats(r"jwt_authn")
    assert not live_mesh[CALLER].stats(r"jwt_authn.denied")

    # The token may also come in the access_token query parameter.
    r, got = send(live_mesh, app, f"/reviews/2?access_token={quote(signer.token(sub='bob'))}")
    assert r.status == 200, (r.status, r.text)
    assert got.headers.get("x-user-id") == "bob", got.headers
    assert got.path == "/reviews/2", got.path  # forward_token: false also removes the query parameter
    r, got = send(live_mesh, app, f"/reviews/2?access_token={quote(stranger.token())}")
    assert_refused(r, got, 401, "Jwt verification fails")
    report("jwt_tokens", refused=bodies, took=time.monotonic() - started)


def test_wrong_audience_is_refused_with_403(live_mesh):
    """A well-signed, valid token for another audience is refused and never reaches the app. Envoy's jwt_authn
    answers an audience mismatch with 403 (the token is genuine, just not for this service), unlike the 401 of
    an invalid token; the README says so."""
    signer = Signer()
    app = jwt_mesh(live_mesh, jwks=signer.jwks())
    r, got = send(live_mesh, app, "/reviews/1", headers=bearer(signer.token(aud="ratings")))
    assert_refused(r, got, 403, "Audiences in Jwt are not allowed")
    r, got = send(live_mesh, app, "/reviews/1", headers=bearer(signer.token(aud=["ratings", AUDIENCE])))
    assert r.status == 200, (r.status, r.text)  # one of the token's audiences is ours


def test_forwarded_claim_headers_cannot_be_forged(live_mesh):
    """The app trusts x-user-id as the verified sub: a caller's own x-user-id must not reach it, neither
    next to a valid token nor on /public without one."""
    signer = Signer()
    app = jwt_mesh(live_mesh, jwks=signer.jwks())
    forged = {"x-user-id": "mallory"}
    r, got = send(live_mesh, app, "/reviews/1", headers={**forged, **bearer(signer.token(sub="alice"))})
    assert r.status == 200, (r.status, r.text)
    assert got.headers.get("x-user-id") == "alice", got.raw_headers
    r, got = send(live_mesh, app, "/public/1", headers=forged)
    assert r.status == 200, (r.status, r.text)
    assert "x-user-id" not in got.headers, got.raw_headers


def test_public_path_allows_a_missing_token_but_not_an_invalid_one(live_mesh):
    """rules: /public allow_missing, / required. Without a token /public passes (the app gets no x-user-id),
    with a valid one it gets the claim, with an invalid one it is 401; everything else still needs a token."""
    signer, stranger = Signer(), Signer()
    app = jwt_mesh(live_mesh, jwks=signer.jwks())

    r, got = send(live_mesh, app, "/public/info")
    assert r.status == 200, (r.status, r.text)
    assert got is not None and "x-user-id" not in got.headers, got.headers

    r, got = send(live_mesh, app, "/public/info", headers=bearer(signer.token(sub="carol")))
    assert r.status == 200, (r.status, r.text)
    assert got.headers.get("x-user-id") == "carol", got.headers

    for token in (stranger.token(), signer.token(exp=int(time.time()) - 3600), "not.a.jwt"):
        r, got = send(live_mesh, app, "/public/info", headers=bearer(token))
        assert_refused(r, got, 401)

    r, got = send(live_mesh, app, "/private")
    assert_refused(r, got, 401, "Jwt is missing")


def test_claims_authorize_requests(live_mesh):
    """allow: GET.. for anyone with a valid token; DELETE only with claim role=admin (403 otherwise)."""
    signer = Signer()
    app = jwt_mesh(live_mesh, jwks=signer.jwks())
    admin, user = signer.token(sub="root", role="admin"), signer.token(sub="dave", role="user")

    r, got = send(live_mesh, app, "/reviews/7", method="DELETE", headers=bearer(admin))
    assert r.status == 200, (r.status, r.text)
    assert got.method == "DELETE" and got.headers.get("x-user-id") == "root", got

    r, got = send(live_mesh, app, "/reviews/7", method="DELETE", headers=bearer(user))
    assert_refused(r, got, 403, "RBAC: access denied")

    r, got = send(live_mesh, app, "/reviews/7", method="GET", headers=bearer(user))
    assert r.status == 200, (r.status, r.text)
    assert got.method == "GET" and got.headers.get("x-user-id") == "dave"

    # No token on /public passes authentication but carries no claims: DELETE is still refused.
    r, got = send(live_mesh, app, "/public/7", method="DELETE")
    assert_refused(r, got, 403, "RBAC: access denied")
    # A role claim that is not a string (a list) does not match the string claim rule.
    r, got = send(live_mesh, app, "/reviews/7", method="DELETE", headers=bearer(signer.token(role=["user"])))
    assert_refused(r, got, 403)
    stats = live_mesh[CALLEE].stats(r"rbac")
    assert stats.get("http.inbound_http.rbac.allow.denied") == 3, stats


def test_jwks_file_provider(live_mesh, tmp_path):
    """A provider whose keys are in a JWKS file (absolute path) on the sidecar's machine works like inline keys."""
    signer, stranger = Signer(kid="file-1"), Signer(kid="file-1")
    jwks_file = tmp_path / "keys" / "jwks.json"
    jwks_file.parent.mkdir()
    jwks_file.write_text(signer.jwks())
    app = jwt_mesh(live_mesh, jwks_file=str(jwks_file))

    inbound = live_mesh[CALLEE].config_dump()
    assert str(jwks_file) in json.dumps(inbound), "the sidecar does not read the JWKS file"

    r, got = send(live_mesh, app, "/reviews/1", headers=bearer(signer.token(sub="erin")))
    assert r.status == 200, (r.status, r.text)
    assert got.headers.get("x-user-id") == "erin" and "authorization" not in got.headers, got.headers
    r, got = send(live_mesh, app, "/reviews/1", headers=bearer(stranger.token()))
    assert_refused(r, got, 401, "Jwt verification fails")
    r, got = send(live_mesh, app, "/reviews/1")
    assert_refused(r, got, 401, "Jwt is missing")
