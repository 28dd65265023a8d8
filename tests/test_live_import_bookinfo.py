"""`meshc import istio` on Bookinfo (tests/import/bookinfo/input), run in real Envoy on loopback.

The import is done in-process (`import_istio`, what `meshc import istio` calls) and checked against the committed
fixture first. Its output is written for a Kubernetes pod (every Service on port 9080 with its app moved to 19080,
the Gateway on port 8080 on every address); the test relocates it to loopback before building - it rewrites
addresses, nothing else: each Service gets its own loopback address and free ports (`LiveMesh.service`) and each
version's endpoint is a test app; the Gateway gets a loopback address, a free listener port and an admin port; the
Mesh gets a trust domain and the certificates `meshc certs` would write; the ExternalService www.googleapis.com gets
the address of an HTTPS server this test starts (a certificate for www.googleapis.com from a test CA) and that CA as
its bundle (the import chose a CA path to fill in). Routes, retries, faults, mirrors, traffic, egress, JWT and
authorization policies are the imported ones, unchanged. Then what the Istio docs say of the original:

- traffic shifting: reviews 90/10 v1/v2 (400 requests from productpage; v2 in a binomial band);
- request routing: `end-user: jason` always goes to reviews v2;
- retries: reviews' route retries a 5xx (two attempts), so one 503 from each version still answers 200;
- mirroring: every request to details is copied to reviews v3;
- fault injection: ratings aborts jason's requests with HTTP 500, others pass;
- authorization: productpage answers through the ingress gateway, and 403 when another service calls it directly
  (reviews), while reviews may call ratings (its own AuthorizationPolicy allows it);
- egress ("Consuming External Web Services"): details' app calls http://www.googleapis.com:443 in plain HTTP and
  gets the external server's answer, which saw TLS with SNI www.googleapis.com; with REGISTRY_ONLY a host without a
  ServiceEntry (and a mesh service outside details' Sidecar egress) gets 502, meshc's `x-meshc-egress: refused`;
- JWT (Istio's JWT authorization task, its sample issuer and demo token): productpage's API through the gateway
  without a token is 403, with a forged token 401, with the valid token 200.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from compiler import certs
from compiler.importer import import_istio
from compiler.lower.external import EGRESS_HEADER, REFUSED_BODY

from harness.client import send_many
from harness.gateway import start_gateway
from harness.outside import TlsApp, write_pki

CASE = Path(__file__).parent / "import" / "bookinfo"
TRUST_DOMAIN = "bookinfo.test"
GW = "bookinfo-gateway"
VERSIONS = {"productpage": ["v1"], "details": ["v1"], "reviews": ["v1", "v2", "v3"], "ratings": ["v1"]}
N = 400
GOOGLEAPIS = "www.googleapis.com"
BOOKS = "/books/v1/volumes?q=isbn:0486424618"  # what details v2 asks the Google Books API
# Istio's sample token (security/tools/jwt/samples/demo.jwt): iss and sub testing@secure.istio.io, signed by the key
# of the JWKS inlined in the fixture's RequestAuthentication, expires in 2118
DEMO_JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRIRmJwb0lVcXJZOHQyenBBMnFYZkNtcjVWTzVaRXI0UnpIVV8tZW52dlEiLCJ0eXAiOiJKV1QifQ."
    "eyJleHAiOjQ2ODU5ODk3MDAsImZvbyI6ImJhciIsImlhdCI6MTUzMjM4OTcwMCwiaXNzIjoidGVzdGluZ0BzZWN1cmUuaXN0aW8uaW8iLCJzdWIi"
    "OiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyJ9."
    "CfNnxWP2tcnR9q0vxyxweaF3ovQYHYZl82hAUsn21bwQd9zP7c-LS9qd_vpdLG4Tn1A15NxfCjp5f7QNBUo-KC9PJqYpgGbaXhaGx7bEdFWjcwv3"
    "nZzvc7M__ZpaCERdwU7igUmJqYGBYQ51vr2njU9ZimyKkfDe3axcyiBZde7G6dabliUosJvvKOPcKIWPccCgefSj_GNfwIip3-SsFdlR7BtbVUc"
    "qR-yv-XOxJ3Uc1MI0tz3uMiiZcyPV7sNCU4KRnemRIMHVOfuvHsU60_GhGbiSFzgPTAa9WTltbnarTbxudb_YEOx12JiwYToeX0DCPb43W1tzIBx"
    "gm8NxUg"
)


def _imported() -> list[dict]:
    result = import_istio(sorted((CASE / "input").glob("*.yaml")), mesh_name="bookinfo")
    for name, text in result.files.items():  # the same import the fixture test pins
        assert text == (CASE / "expected" / name).read_text(encoding="utf-8"), name
    assert not result.problems, result.problems
    return [d for text in result.files.values() for d in yaml.safe_load_all(text) if d]


def _relocate(docs: list[dict], live_mesh, outside: TlsApp, ca: Path) -> tuple[list, dict]:
    """The imported documents with loopback addresses and ports; the apps of every version. The external host's
    address is `outside` and its CA bundle `ca`."""
    apps = {s: {v: live_mesh.upstream(s, v) for v in vs} for s, vs in VERSIONS.items()}
    out: list = []
    for d in docs:
        if d["kind"] == "Mesh":
            assert d["mtls"] == {"mode": "strict"}, d
            out.append(dict(d, trust_domain=TRUST_DOMAIN, mtls={"mode": "strict", "certs_dir": "/etc/meshc/certs"}))
        elif d["kind"] == "Service":
            rest = {k: v for k, v in d.items() if k not in ("kind", "name", "port", "app_port", "versions", "calls")}
            assert sorted(d["versions"]) == VERSIONS[d["name"]], d
            out.append(live_mesh.service(d["name"], versions=apps[d["name"]], calls=d["calls"], **rest))
        elif d["kind"] == "Gateway":
            address = live_mesh.loopback.address()
            port = live_mesh.loopback.port
            listeners = [dict(listener, port=port(address)) for listener in d["listeners"]]
            out.append(dict(d, address=address, admin_port=port(address), listeners=listeners))
        elif d["kind"] == "ExternalService":
            assert d["host"] == GOOGLEAPIS and d["port"] == 443 and "endpoints" not in d, d
            out.append(dict(d, endpoints=[outside.endpoint], tls=dict(d["tls"], ca=str(ca))))
        else:
            out.append(d)
    return out, apps


def test_bookinfo_imported_runs_as_istio_says(live_mesh, tmp_path):
    ca, cert, key = write_pki(tmp_path / "pki", "googleapis", [GOOGLEAPIS])
    outside = TlsApp(live_mesh.loopback.address(), cert, key).start()
    try:
        _run(live_mesh, tmp_path, outside, ca)
    finally:
        outside.stop()


def _run(live_mesh, tmp_path, outside: TlsApp, ca: Path) -> None:
    docs, apps = _relocate(_imported(), live_mesh, outside, ca)
    root = tmp_path / "certs"
    result = live_mesh.build(docs, certs_root=str(root))
    assert result.ok and not [d for d in result.diagnostics if d.is_error], [d.render() for d in result.diagnostics]
    identities = {s.service: s.tls.identity for s in result.ir.sidecars}
    assert sorted(identities) == sorted([GW, *VERSIONS]), identities
    certs.write_service_certs(root, TRUST_DOMAIN, identities)  # what `meshc certs` writes
    live_mesh.start(*VERSIONS)
    gw = start_gateway(live_mesh, GW)

    # traffic shifting: 90/10 between reviews v1 and v2 (v3 gets nothing)
    shifted = live_mesh.call("productpage", "reviews", "/reviews/0", N)
    got = {v: sum(1 for r in shifted if r.status == 200 and r.json()["version"] == v) for v in ("v1", "v2", "v3")}
    assert got["v1"] + got["v2"] == N and got["v3"] == 0, got
    assert 15 <= got["v2"] <= 65, got  # binomial(400, 0.1): mean 40, sd 6; the band is about +-4 sd
    print(f"\nreviews split over {N}: {got}")

    # request routing: jason always sees v2
    jason = live_mesh.call("productpage", "reviews", "/reviews/0", 40, headers={"end-user": "jason"})
    assert [r.status for r in jason] == [200] * 40
    assert {r.json()["version"] for r in jason} == {"v2"}

    # retries (2 attempts on 5xx): one 503 from each of v1 and v2 still gives the caller a 200
    apps["reviews"]["v1"].script(503)
    apps["reviews"]["v2"].script(503)
    before = sum(a.count for a in apps["reviews"].values())
    retried = live_mesh.call_one("productpage", "reviews", "/reviews/0")
    assert retried.status == 200, retried
    tries = sum(a.count for a in apps["reviews"].values()) - before
    assert tries in (2, 3), tries  # the first answer was a 503, then one or two retries

    # mirroring: every request to details also reaches reviews v3 (its answer is dropped)
    v3_before = apps["reviews"]["v3"].count
    mirrored = live_mesh.call("productpage", "details", "/details/0", 10)
    assert [r.status for r in mirrored] == [200] * 10 and {r.json()["service"] for r in mirrored} == {"details"}
    apps["reviews"]["v3"].wait_for_count(v3_before + 10)
    assert {r.path for r in apps["reviews"]["v3"].requests[v3_before:]} == {"/details/0"}

    # fault injection: ratings aborts jason with HTTP 500 before the app; others reach ratings v1
    ratings_before = apps["ratings"]["v1"].count
    aborted = live_mesh.call("reviews", "ratings", "/ratings/0", 10, headers={"end-user": "jason"})
    assert [r.status for r in aborted] == [500] * 10
    assert apps["ratings"]["v1"].count == ratings_before
    fine = live_mesh.call("reviews", "ratings", "/ratings/0", 5, timeout=10.0)  # 0.1% are delayed 7s (imported)
    assert [r.status for r in fine] == [200] * 5 and {r.json()["version"] for r in fine} == {"v1"}

    # authorization: productpage through the ingress gateway, not directly from reviews
    host, port = gw.edge("http")
    page = send_many(host, port, 5, "/productpage", host_header="bookinfo.example.com")
    assert [r.status for r in page] == [200] * 5, [(r.status, r.body[:200]) for r in page]
    assert {r.json()["path"] for r in page} == {"/productpage"}
    unrouted = send_many(host, port, 1, "/admin", host_header="bookinfo.example.com")
    assert unrouted[0].status == 404
    direct = live_mesh.call("reviews", "productpage", "/productpage", 5)
    assert [r.status for r in direct] == [403] * 5
    assert apps["productpage"]["v1"].count == 5  # only the gateway's requests reached the app

    # JWT: productpage's API needs the issuer's token (require-jwt); its pages do not (productpage-viewer)
    api = "/api/v1/products/0"
    anonymous = send_many(host, port, 3, api, host_header="bookinfo.example.com")
    forged = send_many(host, port, 3, api, host_header="bookinfo.example.com",
                       headers={"Authorization": f"Bearer {DEMO_JWT[:-4]}AAAA"})  # the signature no longer holds
    valid = send_many(host, port, 3, api, host_header="bookinfo.example.com",
                      headers={"Authorization": f"Bearer {DEMO_JWT}"})
    assert [r.status for r in anonymous] == [403] * 3, [(r.status, r.text) for r in anonymous]
    assert [r.status for r in forged] == [401] * 3, [(r.status, r.text) for r in forged]
    assert [r.status for r in valid] == [200] * 3, [(r.status, r.text) for r in valid]
    assert {r.json()["path"] for r in valid} == {api}
    assert apps["productpage"]["v1"].count == 5 + 3  # only the valid token's requests reached the app
    print(f"JWT through the gateway: none {anonymous[0].status}, forged {forged[0].status}, valid {valid[0].status}")

    # egress: details' app calls the Google Books API in plain HTTP on port 443; its sidecar originates TLS
    books = live_mesh.call("details", f"{GOOGLEAPIS}:443", BOOKS, 5)
    assert [r.status for r in books] == [200] * 5, [(r.status, r.text) for r in books]
    assert {r.text for r in books} == {"external 200\n"}  # the external server's answer
    assert [r["path"] for r in outside.requests] == [BOOKS] * 5
    assert {r["host"] for r in outside.requests} == {GOOGLEAPIS} and {r["tls"] for r in outside.requests} == {"TLSv1.3"}
    assert outside.handshakes and {h["sni"] for h in outside.handshakes} == {GOOGLEAPIS}, outside.handshakes
    assert not any(h["peer_cert"] for h in outside.handshakes)  # no mesh certificate goes outside
    # REGISTRY_ONLY: a host without a ServiceEntry is refused by details' own sidecar, and so is a mesh service
    # its Sidecar's egress does not list
    undeclared = live_mesh.call("details", "www.example.com", "/", 3)
    assert [r.status for r in undeclared] == [502] * 3, [(r.status, r.text) for r in undeclared]
    assert {r.headers.get(EGRESS_HEADER) for r in undeclared} == {"refused"}
    assert undeclared[0].text == REFUSED_BODY
    reviews_before = sum(a.count for a in apps["reviews"].values())
    unlisted = live_mesh.call("details", "reviews", "/reviews/0", 3)
    assert [r.status for r in unlisted] == [502] * 3, [(r.status, r.text) for r in unlisted]
    assert {r.headers.get(EGRESS_HEADER) for r in unlisted} == {"refused"}
    assert sum(a.count for a in apps["reviews"].values()) == reviews_before
    assert len(outside.requests) == 5
    print(f"egress: {len(outside.requests)} requests over {len(outside.handshakes)} TLS handshake(s), SNI "
          f"{outside.handshakes[0]['sni']}; undeclared host {undeclared[0].status}, reviews from details "
          f"{unlisted[0].status}")
