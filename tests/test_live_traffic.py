"""Traffic policies, live: canary splits, A/B matching, mirroring and request shaping in real Envoys.

Every test writes a fresh policy as YAML text (Mesh and Services placed by the
harness on their own loopback addresses and free ports, the Route written out
by hand) and compiles it with `LiveMesh.build`. The test process plays the
caller's app: it sends requests to the caller's outbound listener with
`Host: <callee>`. Each request crosses two Envoys: the caller's sidecar applies
the Route (picks a version and marks it in x-meshc-version, mirrors, rewrites,
redirects, answers, changes headers, CORS) and the callee's sidecar delivers to
that version's endpoints and strips the marker. What is asserted is what a user
sees: the responses (status, headers, body) and what the upstream apps receive
(counted by the apps themselves).

Everything runs on 127.0.0.0/8; every loop is bounded in count and time, and
asynchronous effects (mirrored copies) are awaited by bounded polling.
"""

from __future__ import annotations

import math
import re
import textwrap
import time

import pytest

from compiler.lower import VERSION_HEADER
from harness import Reply, Upstream, policy_yaml, wait_until

pytestmark = pytest.mark.envoy

N = 20  # requests per deterministic case: every one of them must land right


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def policy(mesh, services: list, route: str) -> str:
    """The policy as YAML text: the Mesh, `services` (placed by the harness), then the Route YAML."""
    return policy_yaml([mesh.mesh_doc(), *services]) + "---\n" + textwrap.dedent(route).strip() + "\n"


def reviews_mesh(mesh, route: str) -> dict:
    """frontend -> reviews (v1, v2, v3, one upstream each) with `route`, both sidecars started; returns the upstreams."""
    ups = {v: mesh.upstream("reviews", v) for v in ("v1", "v2", "v3")}
    mesh.build(
        policy(
            mesh,
            [mesh.service("frontend", calls=["reviews"]), mesh.service("reviews", versions=dict(ups))],
            route,
        )
    )
    mesh.start("frontend")
    mesh.start("reviews")
    return ups


def ok(response) -> dict:
    assert response.status == 200, (response.status, response.headers, response.text[:300])
    return response.json()


def versions_of(responses) -> list[str]:
    return [ok(r)["version"] for r in responses]


def counts(ups: dict[str, Upstream]) -> dict[str, int]:
    return {v: u.count for v, u in ups.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {v: after[v] - before[v] for v in after}


def two_sided_bound(n: int, p: float, sds: float = 5.0) -> tuple[float, float, float]:
    """(sd, low, high) of Binomial(n, p) at mean ± `sds` standard deviations."""
    sd = math.sqrt(n * p * (1 - p))
    return sd, n * p - sds * sd, n * p + sds * sd


# ---------------------------------------------------------------------------
# 1. canary
# ---------------------------------------------------------------------------

CANARY_N = 2000


def test_canary_split_is_weighted(live_mesh):
    """to {v1: 90, v2: 10, v3: 0}: 2,000 requests split ~90/10 as counted by the apps; v3 gets nothing.

    Each request picks its cluster independently, so v2's count is Binomial(n=2000,
    p=0.1): mean 200, sd = sqrt(n p (1-p)) = 13.4. The assertion allows mean ± 5 sd
    (133..267 for v2; v1 is the rest), so a correct Envoy fails it with
    probability < 1e-6 (two-sided normal tail at 5 sd: 5.7e-7), while a split
    that ignores the weights (50/50, 100/0, 0/100) is far outside it. A 0-weight
    version must receive exactly nothing.
    """
    ups = reviews_mesh(
        live_mesh,
        """
        kind: Route
        service: reviews
        rules:
          - to: {v1: 90, v2: 10, v3: 0}
        """,
    )
    front = live_mesh["frontend"]

    responses = live_mesh.call("frontend", "reviews", "/reviews/1", CANARY_N, max_seconds=30)
    seen = versions_of(responses)  # all 200
    split = counts(ups)
    sd, low, high = two_sided_bound(CANARY_N, 0.10)
    print(
        f"\ncanary split over {CANARY_N} requests: v1={split['v1']} ({split['v1'] / CANARY_N:.1%}), "
        f"v2={split['v2']} ({split['v2'] / CANARY_N:.1%}), v3={split['v3']}; "
        f"v2 allowed {low:.0f}..{high:.0f} (200 ± 5 sd, sd={sd:.1f})"
    )
    assert sum(split.values()) == CANARY_N, split
    assert split["v3"] == 0, split
    assert low <= split["v2"] <= high, split
    assert split["v1"] == CANARY_N - split["v2"]
    # What the apps counted is what the callers were told.
    assert {v: seen.count(v) for v in ups} == split
    # And the caller's sidecar sent exactly that to each version's cluster (v3's cluster: nothing).
    stats = front.stats(r"^cluster\.outbound\|reviews\|v[123]\.upstream_rq_total$")
    assert {v: stats.get(f"cluster.outbound|reviews|{v}.upstream_rq_total", 0) for v in ups} == split
    for u in ups.values():
        for req in u.requests[:50]:
            assert VERSION_HEADER not in req.headers


# ---------------------------------------------------------------------------
# 2. A/B matching
# ---------------------------------------------------------------------------

AB_ROUTE = r"""
kind: Route
service: reviews
rules:
  - match:
      headers: [{name: x-user-group, exact: beta}]
    to: {v2: 100}
  - match:
      cookies: [{name: ab, exact: b}]
    to: {v2: 100}
  - match:
      path: {prefix: /reviews}
      query: [{name: variant, exact: b}]
    to: {v2: 100}
  - match:
      path: {regex: "/admin/.*"}
      methods: [POST, PUT]
      headers: [{name: x-internal, present: true}]
    to: {v2: 100}
  - match:
      headers: [{name: x-canary, exact: always}]
    to: {v3: 100}
  - to: {v1: 100}
"""


@pytest.fixture
def ab_mesh(live_mesh):
    ups = reviews_mesh(live_mesh, AB_ROUTE)

    def lands(path: str = "/reviews/1", *, method: str = "GET", headers: dict | None = None, n: int = N) -> str:
        """Send `n` requests; all must reach one version (by the responses and by the apps' counters): returns it."""
        before = counts(ups)
        responses = live_mesh.call("frontend", "reviews", path, n, method=method, headers=headers or {})
        seen = set(versions_of(responses))
        got = delta(before, counts(ups))
        assert len(seen) == 1, f"{method} {path} {headers}: split over {seen} ({got})"
        (version,) = seen
        assert got == {v: (n if v == version else 0) for v in ups}, (method, path, headers, got)
        return version

    return lands, ups


def test_ab_header(ab_mesh):
    lands, ups = ab_mesh
    assert lands(headers={"x-user-group": "beta"}) == "v2"
    assert lands() == "v1"
    for other in ("alpha", "Beta", "beta-tester", "betabeta", ""):
        assert lands(headers={"x-user-group": other}) == "v1", other
    for req in ups["v2"].requests:
        assert req.headers["x-user-group"] == "beta" and VERSION_HEADER not in req.headers


def test_ab_cookie(ab_mesh):
    lands, ups = ab_mesh
    for cookie in ("a=1; ab=b; z=2", "ab=b", "ab=b; z=2", "a=1;ab=b", "xab=b; ab=b"):
        assert lands(headers={"cookie": cookie}) == "v2", cookie
    for cookie in ("ab=bb", "xab=b", "a=1; ab=bb; z=2", "a=1; xab=b; z=2", "ab=", "ab=B", "a=ab=b"):
        assert lands(headers={"cookie": cookie}) == "v1", cookie
    # The app gets the Cookie header untouched.
    assert ups["v2"].requests[0].headers["cookie"] == "a=1; ab=b; z=2"


def test_ab_query(ab_mesh):
    lands, ups = ab_mesh
    for path in ("/reviews?variant=b", "/reviews/7?variant=b", "/reviews?x=1&variant=b&y=2"):
        assert lands(path) == "v2", path
    for path in ("/reviews?variant=bb", "/reviews?variant=a", "/reviews?xvariant=b", "/ratings?variant=b", "/reviews"):
        assert lands(path) == "v1", path
    assert {r.path for r in ups["v2"].requests} == {"/reviews?variant=b", "/reviews/7?variant=b", "/reviews?x=1&variant=b&y=2"}


def test_ab_method_regex_path_and_header_presence(ab_mesh):
    lands, _ = ab_mesh
    internal = {"x-internal": "1"}
    assert lands("/admin/users", method="POST", headers=internal) == "v2"
    assert lands("/admin/users/7", method="PUT", headers=internal) == "v2"
    # Each condition is needed: the method, the header, and a regex matching the *whole* path.
    assert lands("/admin/users", method="GET", headers=internal) == "v1"
    assert lands("/admin/users", method="DELETE", headers=internal) == "v1"
    assert lands("/admin/users", method="POST") == "v1"
    assert lands("/api/admin/users", method="POST", headers=internal) == "v1"
    assert lands("/admin", method="POST", headers=internal) == "v1"


def test_ab_first_match_wins(ab_mesh):
    lands, _ = ab_mesh
    canary = {"x-canary": "always"}
    assert lands(headers=canary) == "v3"  # the later rule works on its own...
    # ...but a request that also matches an earlier rule goes to the earlier rule's version.
    assert lands(headers={**canary, "x-user-group": "beta"}) == "v2"
    assert lands(headers={**canary, "cookie": "ab=b"}) == "v2"
    assert lands("/reviews?variant=b", headers=canary) == "v2"
    assert lands("/admin/x", method="POST", headers={**canary, "x-internal": "yes"}) == "v2"


# ---------------------------------------------------------------------------
# 3. dark launch: mirroring
# ---------------------------------------------------------------------------

MIRROR_PERCENT = 10
MIRROR_N = 1000
DARK_ROUTE = f"""
kind: Route
service: reviews
rules:
  - match:
      methods: [POST, PUT, PATCH, DELETE]
    to: {{v1: 100}}
    mirror:
      - {{to: default, service: audit, percent: 100}}
  - match:
      path: {{prefix: /sampled}}
    to: {{v1: 100}}
    mirror:
      - {{to: v3, percent: {MIRROR_PERCENT}}}
  - to: {{v1: 100}}
    mirror:
      - {{to: v3}}
"""


class Dark:
    def __init__(self, mesh):
        self.mesh = mesh
        self.v1 = mesh.upstream("reviews", "v1")
        self.v3 = mesh.upstream("reviews", "v3")
        self.audit = mesh.upstream("audit")
        mesh.build(
            policy(
                mesh,
                [
                    mesh.service("frontend", calls=["reviews"]),
                    mesh.service("reviews", versions={"v1": self.v1, "v3": self.v3}),
                    mesh.service("audit", versions={"default": self.audit}),
                ],
                DARK_ROUTE,
            )
        )
        self.front = mesh.start("frontend")
        self.reviews = mesh.start("reviews")
        self.audit_sidecar = mesh.start("audit")

    def shadows_sent(self, cluster: str = "outbound|reviews|v3") -> int:
        """Copies the caller's sidecar sent to a mirror cluster (counted when the copy is sent)."""
        return self.front.stat(f"cluster.{cluster}.upstream_rq_total")

    def wait_for_copies(self, app: Upstream, cluster: str, timeout: float = 10.0) -> int:
        """Wait (bounded) until the caller's sidecar has no copy to `cluster` pending or in flight and `app`
        has received every copy it sent; returns how many it sent."""
        names = {k: f"cluster.{cluster}.upstream_rq_{k}" for k in ("total", "active", "pending_active")}
        last: dict[str, int] = {}

        def settled() -> bool:
            stats = self.front.stats("^(" + "|".join(re.escape(n) for n in names.values()) + ")$")
            last.clear()
            last.update({k: stats.get(n, 0) for k, n in names.items()})
            return last["active"] == 0 and last["pending_active"] == 0 and app.count == last["total"]

        wait_until(settled, timeout, message=lambda: f"{app.name} to receive every copy (app has {app.count}, sidecar {last})")
        return last["total"]


@pytest.fixture
def dark(live_mesh):
    return Dark(live_mesh)


def test_mirror_every_request_to_v3(dark):
    """100% mirror: users only ever see v1; v3 receives a copy of every request, behind reviews' sidecar."""
    responses = dark.mesh.call("frontend", "reviews", "/reviews/1", N, headers={"x-user-group": "beta"})
    assert versions_of(responses) == ["v1"] * N
    dark.v3.wait_for_count(N, timeout=10)
    sent = dark.wait_for_copies(dark.v3, "outbound|reviews|v3")
    assert sent == N
    # The copy went to v3 and only there: v1 served exactly the users' requests.
    assert (dark.v1.count, dark.v3.count, dark.audit.count) == (N, N, 0)
    reviews_stats = dark.reviews.stats(r"^cluster\.inbound\|reviews\|v[13]\.upstream_rq_total$")
    assert reviews_stats.get("cluster.inbound|reviews|v1.upstream_rq_total") == N
    assert reviews_stats.get("cluster.inbound|reviews|v3.upstream_rq_total") == N
    for req in dark.v3.requests:
        assert VERSION_HEADER not in req.headers, req.headers
        assert req.path == "/reviews/1" and req.method == "GET"
        assert req.headers.get("x-user-group") == "beta"  # a faithful copy of the user's request
        assert req.headers.get("host") == "reviews-shadow"  # Envoy marks copies with a -shadow Host
    for req in dark.v1.requests:
        assert VERSION_HEADER not in req.headers and req.headers.get("host") == "reviews"


def test_mirror_percent_is_sampled(dark):
    """10% mirror on /sampled: v3 receives ~10% of 1,000 requests.

    Each request is sampled independently, so v3's count is Binomial(n=1000, p=0.1):
    mean 100, sd = sqrt(1000 * 0.1 * 0.9) = 9.5; allowed mean ± 5 sd (53..147),
    false failure probability < 1e-6. Copies are counted once the caller's
    sidecar has sent them all (its upstream_rq_total on the v3 cluster) and v3 has
    received that many.
    """
    responses = dark.mesh.call("frontend", "reviews", "/sampled/1", MIRROR_N, max_seconds=30)
    assert versions_of(responses) == ["v1"] * MIRROR_N
    sent = dark.wait_for_copies(dark.v3, "outbound|reviews|v3")
    sd, low, high = two_sided_bound(MIRROR_N, MIRROR_PERCENT / 100)
    print(f"\nmirror {MIRROR_PERCENT}%: v3 received {dark.v3.count} of {MIRROR_N} ({dark.v3.count / MIRROR_N:.1%}), "
          f"caller sent {sent}; allowed {low:.0f}..{high:.0f}")
    assert dark.v3.count == sent
    assert low <= dark.v3.count <= high
    assert dark.v1.count == MIRROR_N
    assert all(VERSION_HEADER not in r.headers for r in dark.v3.requests)


def test_failing_shadow_does_not_affect_users(dark):
    dark.v3.status = 500
    responses = dark.mesh.call("frontend", "reviews", "/reviews/1", N)
    assert versions_of(responses) == ["v1"] * N  # all 200 from v1
    dark.wait_for_copies(dark.v3, "outbound|reviews|v3")
    assert dark.v3.count == N
    # The shadow really failed (its 500s reached the caller's sidecar), and nobody retried it on v1.
    dark.front.wait_for_stat("cluster.outbound|reviews|v3.upstream_rq_500", lambda v: v == N, timeout=5)
    assert dark.v1.count == N


def test_slow_shadow_does_not_slow_users(dark):
    """The shadow takes 2 s per request; users' requests still complete well under 1 s each."""
    delay, n = 2.0, 5
    dark.v3.delay = delay
    latencies = []
    for _ in range(n):
        start = time.monotonic()
        response = dark.mesh.call_one("frontend", "reviews", "/reviews/1")
        latencies.append(time.monotonic() - start)
        assert ok(response)["version"] == "v1"
    print(f"\nslow shadow ({delay:.0f}s): user latencies {', '.join(f'{l * 1000:.0f}ms' for l in latencies)}")
    assert max(latencies) < 1.0, latencies
    # The shadow still gets every copy, and gets to answer it (the copies are not cut off
    # when the user's request is done): the caller's sidecar sees v3's 200s after ~2 s.
    dark.v3.wait_for_count(n, timeout=5)
    dark.front.wait_for_stat("cluster.outbound|reviews|v3.upstream_rq_200", lambda v: v >= n, timeout=delay + 5)
    assert dark.v1.count == n


def test_writes_are_mirrored_to_audit(dark):
    """POST/PUT/PATCH/DELETE are copied to the audit service (another service, its own sidecar); reads are not."""
    body = b'{"rating": 5}'
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        responses = dark.mesh.call(
            "frontend", "reviews", "/reviews/9", 5, method=method, body=body, headers={"content-type": "application/json"}
        )
        assert [ok(r)["method"] for r in responses] == [method] * 5
    sent = dark.wait_for_copies(dark.audit, "outbound|audit|default")
    assert sent == 20 and dark.audit.count == 20
    assert [r.method for r in dark.audit.requests].count("POST") == 5
    for req in dark.audit.requests:
        assert req.body == body, req
        assert req.path == "/reviews/9"
        assert VERSION_HEADER not in req.headers
        assert req.headers.get("host") == "reviews-shadow"
    # Writes are not copied to v3 (that rule comes later), and reads are not copied to audit.
    assert dark.v3.count == 0 and dark.v1.count == 20
    dark.mesh.call("frontend", "reviews", "/reviews/9", N)
    dark.wait_for_copies(dark.v3, "outbound|reviews|v3")
    assert dark.v3.count == N
    assert dark.audit.count == 20 and dark.shadows_sent("outbound|audit|default") == 20
    assert dark.audit_sidecar.stat("cluster.inbound|audit|default.upstream_rq_total") == 20


# ---------------------------------------------------------------------------
# 4. request shaping
# ---------------------------------------------------------------------------

SHAPING_ROUTE = r"""
kind: Route
service: catalog
rules:
  - match: {path: {exact: /healthz}}
    respond: {status: 200, body: "ok\n"}
  - match: {path: {prefix: /maintenance}}
    respond: {status: 503, body: "down for maintenance"}
  - match: {path: {prefix: /old-shop/}}
    redirect: {prefix: /shop/, code: 301}
  - match: {path: {prefix: /insecure}}
    redirect: {scheme: https, host: shop.example, port: 8443, path: /, code: 308}
  - match: {path: {prefix: /api/v1/}}
    to: {default: 100}
    rewrite: {prefix: /v1/, host: catalog.internal}
  - match: {path: {regex: "/items/[0-9]+/reviews"}}
    to: {default: 100}
    rewrite: {regex: {pattern: "^/items/([0-9]+)/reviews$", substitution: "/reviews/\\1"}}
  - to: {default: 100}
    request_headers:
      add: {x-via: meshc}
      set: {x-env: prod}
      remove: [x-debug]
    response_headers:
      set: {cache-control: no-store}
      remove: [server]
    cors:
      allow_origins: ["https://shop.example", "regex:https://.*\\.shop\\.example"]
      allow_methods: [GET, POST]
      allow_headers: [content-type, x-user-group]
      expose_headers: [x-request-id]
      max_age: 10m
      allow_credentials: true
"""


@pytest.fixture
def shaping(live_mesh):
    app = live_mesh.upstream("catalog")
    live_mesh.build(
        policy(
            live_mesh,
            [
                live_mesh.service("frontend", calls=["catalog"]),
                live_mesh.service("catalog", versions={"default": app}),
            ],
            SHAPING_ROUTE,
        )
    )
    live_mesh.start("frontend")
    live_mesh.start("catalog")

    def call(path: str, **kwargs):
        return live_mesh.call_one("frontend", "catalog", path, **kwargs)

    return call, app


def test_prefix_rewrite_and_host_rewrite(shaping):
    call, app = shaping
    echo = ok(call("/api/v1/items/3?full=1"))
    assert echo["path"] == "/v1/items/3?full=1"
    assert echo["headers"]["host"] == "catalog.internal"
    assert [(r.path, r.headers["host"]) for r in app.requests] == [("/v1/items/3?full=1", "catalog.internal")]
    assert VERSION_HEADER not in app.requests[0].headers


def test_regex_rewrite(shaping):
    call, app = shaping
    assert ok(call("/items/42/reviews"))["path"] == "/reviews/42"
    assert ok(call("/items/42/reviews?page=2"))["path"] == "/reviews/42?page=2"  # the query string is kept
    assert ok(call("/items/x/reviews"))["path"] == "/items/x/reviews"  # no match: the catch-all, unchanged
    assert [r.path for r in app.requests] == ["/reviews/42", "/reviews/42?page=2", "/items/x/reviews"]


def test_redirects_are_answered_by_the_sidecar(shaping):
    call, app = shaping
    r = call("/old-shop/items/7?x=1")
    assert r.status == 301
    assert r.headers["location"] == "http://catalog/shop/items/7?x=1"
    r = call("/insecure/login")
    assert r.status == 308
    assert r.headers["location"] == "https://shop.example:8443/"
    assert app.count == 0  # nothing was forwarded


def test_direct_responses(shaping):
    call, app = shaping
    r = call("/healthz")
    assert (r.status, r.body) == (200, b"ok\n")
    r = call("/maintenance/today", method="POST", body="x")
    assert (r.status, r.body) == (503, b"down for maintenance")
    assert app.count == 0


def test_request_header_changes(shaping):
    call, app = shaping
    ok(call("/products", headers={"x-via": "client", "x-env": "dev", "x-debug": "1", "x-keep": "yes"}))
    ok(call("/products"))
    with_headers, without = app.requests
    assert [v for k, v in with_headers.raw_headers if k.lower() == "x-via"] == ["client", "meshc"]  # add appends
    assert with_headers.headers["x-env"] == "prod"  # set replaces
    assert "x-debug" not in with_headers.headers  # remove drops
    assert with_headers.headers["x-keep"] == "yes"
    assert (without.headers.get("x-via"), without.headers.get("x-env")) == ("meshc", "prod")


def test_response_header_changes(shaping):
    call, app = shaping
    app.handler = lambda req: Reply(headers={"cache-control": "max-age=3600", "x-app": "catalog"})
    r = call("/products")
    assert r.status == 200
    assert r.headers["cache-control"] == "no-store"  # set replaces the app's value
    assert r.headers["x-app"] == "catalog"  # other headers pass
    # removed: the client sees no Server header. KNOWN FAILURE until the compiler sets the caller's
    # HttpConnectionManager `server_header_transformation: PASS_THROUGH`: with the default (OVERWRITE)
    # Envoy writes `server: envoy` into every response *after* the route's response_headers_to_remove ran.
    assert "server" not in r.headers, f"client got server: {r.headers.get('server')!r} although the route removes it"


def test_cors(shaping):
    call, app = shaping
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    for origin in ("https://shop.example", "https://eu.shop.example"):
        r = call("/products", method="OPTIONS", headers={"origin": origin, **preflight})
        assert r.status == 200, (r.status, r.headers)
        assert r.headers.get("access-control-allow-origin") == origin, r.headers
        assert r.headers.get("access-control-allow-methods") == "GET,POST"
        assert r.headers.get("access-control-allow-headers") == "content-type,x-user-group"
        assert r.headers.get("access-control-max-age") == "600"
        assert r.headers.get("access-control-allow-credentials") == "true"
    assert app.count == 0  # preflights from allowed origins are answered by the sidecar

    for origin in ("https://evil.example", "https://shop.example.evil.example", "http://shop.example"):
        r = call("/products", method="OPTIONS", headers={"origin": origin, **preflight})
        assert "access-control-allow-origin" not in r.headers, (origin, r.headers)

    # A simple (non-preflight) request from an allowed origin gets the CORS headers on the app's answer.
    r = call("/products", headers={"origin": "https://shop.example"})
    assert ok(r)["method"] == "GET"
    assert r.headers.get("access-control-allow-origin") == "https://shop.example"
    assert r.headers.get("access-control-expose-headers") == "x-request-id"
    r = call("/products", headers={"origin": "https://evil.example"})
    assert ok(r) and "access-control-allow-origin" not in r.headers

