"""Paths mean paths, live: security path rules against the paths attackers actually send, in real Envoy.

Model (compiler/policy/paths.py, compiler/lower/access.py, compiler/emit/listeners.py, rbac.py, jwt.py):
- every HTTP listener resolves dot segments and merges slashes (`normalize_path`, `merge_slashes`) and
  handles escaped slashes (`%2F`, `%5C`) as the Mesh's `paths.escaped_slashes` says (HCM
  `path_with_escaped_slashes_action`): `reject` (400, the default), `redirect`, `decode` or `keep`;
- a security prefix is a path prefix: AuthorizationPolicy `prefix: /admin` is RBAC exact `/admin` or prefix
  `/admin/`; RequestAuthentication `paths: [/public]` is jwt_authn `path_separated_prefix: /public`;
- `paths.case_sensitive: false` makes them case-insensitive (RBAC `ignore_case`, jwt `case_sensitive: false`).

The mesh: frontend -> shop (one app, which records every request it gets); shop denies `prefix: /admin`.
Plaintext (no mTLS needed for path rules), mesh authorization default allow. Requests are written byte for
byte on a plain socket, so no client library touches the path; most go straight to shop's inbound listener
(the sidecar that enforces), some through frontend's outbound listener (what a mesh app's call meets).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import report
from harness.util import REQUEST_TIMEOUT

pytestmark = pytest.mark.envoy

DENIED_BODY = b"RBAC: access denied"
DENY_ADMIN = {"kind": "AuthorizationPolicy", "service": "shop", "deny": [{"paths": [{"prefix": "/admin"}]}]}

# Paths that mean /admin (or something under it) to an app that decodes %2F and resolves dot segments.
ADMIN_IN_DISGUISE = [
    "/%2Fadmin", "/%2fadmin", "//admin", "/a/../admin", "/./admin", "/admin%2F..%2Fx", "/admin%5Cx",
    "/x/%2E%2E/admin", "/%61dmin", "/a\\..\\admin",
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def get(addr: tuple[str, int], path: str, host: str = "shop", headers: dict[str, str] | None = None):
    """One raw HTTP/1.1 GET with `path` exactly as written: (status, lower-case headers, body).

    Reads the response by its Content-Length rather than until the sidecar closes: after a response it
    made itself (400, 403, 307) Envoy waits up to a second (`delayed_close_timeout`) for the client to
    close first.
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = b""
    with socket.create_connection(addr, timeout=REQUEST_TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for _ in range(1000):  # bounded: each recv waits at most REQUEST_TIMEOUT
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), (path, data[:200])
    hdrs = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), hdrs, body


def shop_mesh(live_mesh, *policies, paths: dict | None = None, start=("shop",)):
    """frontend -> shop (app recorded); `policies` added; `paths` is the Mesh setting. Returns (app, build)."""
    app = live_mesh.upstream("shop")
    mesh = live_mesh.mesh_doc(**({"paths": paths} if paths is not None else {}))
    result = live_mesh.build(
        [mesh, live_mesh.service("frontend", calls=["shop"]), live_mesh.service("shop", versions={"default": app}), *policies]
    )
    live_mesh.start(*start)
    return app, result


def statuses(addr, paths: list[str], host: str = "shop") -> dict[str, int]:
    return {p: get(addr, p, host)[0] for p in paths}


# --------------------------------------------------------------------------
# 1. the safe default: a path prefix, disguises refused, case as written
# --------------------------------------------------------------------------


def test_deny_prefix_is_a_path_prefix_and_disguises_never_reach_the_app(live_mesh):
    t0 = time.monotonic()
    app, result = shop_mesh(live_mesh, DENY_ADMIN, start=("shop", "frontend"))
    assert [d.code for d in result.diagnostics] == [], [d.render() for d in result.diagnostics]
    inbound = live_mesh["shop"].inbound

    got = statuses(inbound, ["/admin", "/admin/x", "/admin/", "/administrator", "/ADMIN", *ADMIN_IN_DISGUISE])
    assert got == {
        "/admin": 403,
        "/admin/x": 403,
        "/admin/": 403,
        "/administrator": 200,  # not under /admin: a path prefix, not a string prefix
        # The default is case-sensitive (like Envoy and Istio): /ADMIN is another path and reaches the app.
        # An app that treats it as /admin needs `paths: {case_sensitive: false}` (test 2).
        "/ADMIN": 200,
        "/%2Fadmin": 400,  # escaped slashes: refused before any rule runs (escaped_slashes: reject)
        "/%2fadmin": 400,
        "//admin": 403,  # slashes merged: /admin
        "/a/../admin": 403,  # dot segments resolved: /admin
        "/./admin": 403,
        "/admin%2F..%2Fx": 400,
        "/admin%5Cx": 400,  # an escaped backslash counts as an escaped slash
        "/x/%2E%2E/admin": 403,  # escaped dots are dot segments too
        "/%61dmin": 403,  # escaped unreserved characters are decoded: /admin
        "/a\\..\\admin": 403,  # backslashes are slashes
    }, got
    assert get(inbound, "/admin")[2] == DENIED_BODY
    # The app saw exactly the two requests that are not /admin, with their paths unchanged.
    assert [q.path for q in app.requests] == ["/administrator", "/ADMIN"]

    # Not normalised by Envoy: a `;` path parameter. `/admin;x` is not under /admin and reaches the app as
    # written; an app that strips path parameters (Java servlet containers) serves it as /admin. The README
    # says so, with the rule that refuses it too.
    assert get(inbound, "/admin;x")[0] == 200 and app.requests[-1].path == "/admin;x"
    app.reset()

    # A mesh app's call: frontend's sidecar normalises (and refuses escaped slashes) too, shop's denies.
    outbound = live_mesh["frontend"].outbound
    via = statuses(outbound, ["/admin/x", "/administrator", "//admin", "/a/../admin", "/%2Fadmin"])
    assert via == {"/admin/x": 403, "/administrator": 200, "//admin": 403, "/a/../admin": 403, "/%2Fadmin": 400}, via
    assert [q.path for q in app.requests] == ["/administrator"]
    report("paths_default", total_s=time.monotonic() - t0, inbound=got, via_caller=via, app_saw=app.count)


# --------------------------------------------------------------------------
# 2. case_sensitive: false
# --------------------------------------------------------------------------


def test_case_insensitive_security_paths(live_mesh):
    app, _ = shop_mesh(live_mesh, DENY_ADMIN, paths={"case_sensitive": False})
    got = statuses(live_mesh["shop"].inbound, ["/ADMIN", "/Admin/X", "/aDmIn", "/ADMINISTRATOR", "/%2FADMIN"])
    assert got == {"/ADMIN": 403, "/Admin/X": 403, "/aDmIn": 403, "/ADMINISTRATOR": 200, "/%2FADMIN": 400}, got
    assert [q.path for q in app.requests] == ["/ADMINISTRATOR"]
    report("paths_case_insensitive", statuses=got)


# --------------------------------------------------------------------------
# 3. the other escaped-slash modes
# --------------------------------------------------------------------------


def test_decode_forwards_the_decoded_path_which_rules_see(live_mesh):
    """decode: %2F is decoded before normalisation and rules, so the app and the rules see the same path."""
    app, result = shop_mesh(live_mesh, DENY_ADMIN, paths={"escaped_slashes": "decode"})
    assert [d.code for d in result.diagnostics] == []
    got = statuses(live_mesh["shop"].inbound, ["/%2Fadmin", "/admin%5Cx", "/admin%2F..%2Fx", "/%2Fadministrator"])
    # /admin%2F..%2Fx decodes to /admin/../x, which is /x: not an /admin request at all.
    assert got == {"/%2Fadmin": 403, "/admin%5Cx": 403, "/admin%2F..%2Fx": 200, "/%2Fadministrator": 200}, got
    assert [q.path for q in app.requests] == ["/x", "/administrator"]
    report("paths_decode", statuses=got, app_paths=[q.path for q in app.requests])


def test_redirect_sends_the_client_to_the_decoded_path(live_mesh):
    app, _ = shop_mesh(live_mesh, DENY_ADMIN, paths={"escaped_slashes": "redirect"})
    inbound = live_mesh["shop"].inbound
    seen = {}
    for path in ["/%2Fadmin", "/admin%2F..%2Fx", "/%2Fadministrator"]:
        status, headers, _ = get(inbound, path)
        seen[path] = (status, headers.get("location"))
    assert seen == {
        "/%2Fadmin": (307, "/admin"),
        "/admin%2F..%2Fx": (307, "/x"),
        "/%2Fadministrator": (307, "/administrator"),
    }, seen
    assert app.count == 0  # a redirect is answered by the sidecar
    # Following the redirect meets the rules like any other request.
    assert statuses(inbound, ["/admin", "/administrator"]) == {"/admin": 403, "/administrator": 200}
    report("paths_redirect", redirects=seen)


def test_keep_lets_escaped_slashes_past_path_rules_and_warns(live_mesh):
    """keep: Envoy forwards %2F unchanged; a rule on /admin does not see /%2Fadmin, so the app gets it.
    That is what W271 warns about."""
    app, result = shop_mesh(live_mesh, DENY_ADMIN, paths={"escaped_slashes": "keep"})
    warnings = [d for d in result.diagnostics if d.code == "W271"]
    assert [(d.subject, d.path) for d in warnings] == [("AuthorizationPolicy 'shop'", "deny[0].paths[0].prefix")], [
        d.render() for d in result.diagnostics
    ]
    got = statuses(live_mesh["shop"].inbound, ["/%2Fadmin", "//admin", "/admin"])
    assert got == {"/%2Fadmin": 200, "//admin": 403, "/admin": 403}, got
    assert [q.path for q in app.requests] == ["/%2Fadmin"]
    report("paths_keep", statuses=got, warning=warnings[0].render())


# --------------------------------------------------------------------------
# 4. RequestAuthentication: an exempt prefix is a path prefix
# --------------------------------------------------------------------------


def _jwks() -> str:
    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(pub.n), "e": b64(pub.e)}]})


def _authn() -> dict:
    return {
        "kind": "RequestAuthentication",
        "service": "shop",
        "providers": [{"name": "issuer", "issuer": "https://auth.paths.test", "jwks": _jwks()}],
        "rules": [{"paths": ["/public", "/static/"], "allow_missing": True}, {"paths": ["/"]}],
    }


@pytest.mark.parametrize("case_sensitive", [True, False])
def test_exempt_jwt_prefix_is_a_path_prefix(live_mesh, case_sensitive):
    """rules: /public and /static/ allow a missing token, everything else needs one (401 without)."""
    app, _ = shop_mesh(live_mesh, _authn(), paths={"case_sensitive": case_sensitive})
    paths = ["/public", "/public/x", "/publicity", "/public-api", "/static/app.js", "/static", "/staticfiles",
             "/public/../private", "//public", "/PUBLIC/x"]
    got = statuses(live_mesh["shop"].inbound, paths)
    assert got == {
        "/public": 200,
        "/public/x": 200,
        "/publicity": 401,  # not under /public
        "/public-api": 401,
        "/static/app.js": 200,
        "/static": 401,  # /static/ is what lies under it, not /static itself
        "/staticfiles": 401,
        "/public/../private": 401,  # resolved to /private before the rules run
        "//public": 200,  # merged to /public
        # Case as the mesh says: sensitive (the default) refuses /PUBLIC/x without a token, which fails closed.
        "/PUBLIC/x": 401 if case_sensitive else 200,
    }, got
    exempt = ["/public", "/public/x", "/static/app.js", "/public"] + ([] if case_sensitive else ["/PUBLIC/x"])
    assert [q.path for q in app.requests] == exempt
    report("paths_jwt", case_sensitive=case_sensitive, statuses=got)
