"""The ingress gateway, live: a client outside the mesh, a Gateway Envoy, and a strict-mTLS mesh behind it.

Model (compiler/policy/gateway.py, compiler/lower/gateway.py, compiler/emit/edge.py): a Gateway is an Envoy
of its own (`out/<gateway>/`, started like a sidecar). Its `https` listener terminates TLS with certificates
read from files through file SDS and picked by SNI; its `http` listener redirects to HTTPS; its routes send
requests by host and path into the mesh, where the destination's own Route applies (productpage: 90/10
between v1 and v2, `end-user: jason` always v2). It calls productpage with mTLS as
`spiffe://gateway.test/ns/default/sa/ingress`, which productpage's AuthorizationPolicy allows (`from:
[ingress]`) and nobody else. Edge protections: RequestAuthentication on the gateway, a token bucket, header
limits, use of the real remote address, a generated request id, the app's `server` header replaced.

Certificates come from compiler.certs, as `meshc certs` makes them: the development CA, the mesh
certificates of the services and the gateway, and the gateway's edge certificates in
`certs/ingress/edge/<host>/`, where the test's policy points the gateway. The test process plays the
outside client (its own loopback source address, so what the app is told about the client is known), the
apps of productpage v1 and v2, and, for the refused direct call, the app of reviews.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from compiler import certs
from harness import LiveMesh, Reply, Response, Upstream, report, send_many, wait_until
from harness.gateway import GatewayEnvoy, SniConnection, handshake, https_many, https_one, start_gateway, tls_context

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "gateway.test"
GW = "ingress"
SHOP, API, WILD_API = "shop.example.com", "api.example.com", "*.api.example.com"
INGRESS_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{GW}"
ISSUER, AUDIENCE = "https://auth.gateway.test", "shop"
SPOOFED = "203.0.113.66"
TRACE_ID = "463ac35c9f6413ad"
HEADER_KB, MAX_HEADERS, MAX_BODY = 16, 40, 65536
LIMITS = {"max_request_headers_kb": HEADER_KB, "max_headers": MAX_HEADERS, "max_request_bytes": MAX_BODY}


# --------------------------------------------------------------------------
# tokens (RS256, made here with cryptography only)
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """An RSA key pair: its JWKS, and RS256 tokens (our issuer and audience, valid 5 minutes unless told)."""

    def __init__(self, kid: str = "edge-1"):
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        pub = self.key.public_key().public_numbers()

        def uint(n: int) -> str:
            return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return json.dumps({"keys": [{"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig", "n": uint(pub.n), "e": uint(pub.e)}]})

    def token(self, **claims) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, **claims}
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        return f"{signing_input}.{b64url(self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


# --------------------------------------------------------------------------
# the mesh
# --------------------------------------------------------------------------


@dataclass
class Edge:
    """A started mesh with its gateway; `get` is a client outside the mesh."""

    mesh: LiveMesh
    certs: Path
    gw: GatewayEnvoy
    v1: Upstream
    v2: Upstream
    gateway_doc: dict
    client_address: str
    """The loopback address the outside client connects from."""
    docs: list = field(default_factory=list)
    """The policy documents it was built from (`rebuild` takes changed ones)."""
    ca: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ca = self.certs / "ca.pem"

    @property
    def https(self) -> tuple[str, int]:
        return self.gw.edge("https")

    @property
    def http(self) -> tuple[str, int]:
        return self.gw.edge("http")

    def context(self, **kwargs) -> ssl.SSLContext:
        """A browser's context: the development CA is trusted, the certificate must name the SNI host."""
        return tls_context(self.ca, **kwargs)

    def get(self, path: str = "/", n: int = 1, *, sni: str = SHOP, context: ssl.SSLContext | None = None, **kwargs) -> list[Response]:
        host, port = self.https
        return https_many(host, port, n, path, sni=sni, context=context or self.context(), source=self.client_address, **kwargs)

    def get_one(self, path: str = "/", **kwargs) -> Response:
        return self.get(path, 1, **kwargs)[0]

    @property
    def upstream_count(self) -> int:
        return self.v1.count + self.v2.count

    def last_request(self):
        reqs = sorted(self.v1.requests + self.v2.requests, key=lambda r: r.at)
        return reqs[-1] if reqs else None

    def edge_folder(self, host: str) -> Path:
        return self.certs / GW / "edge" / host

    def rebuild(self, docs: list) -> None:
        """Compile changed policy documents into the running mesh's output (what `meshc build` does)."""
        self.docs = docs
        self.mesh.build(docs, certs_root=str(self.certs))

    def rotate_edge_certificates(self) -> None:
        """What re-running `meshc certs` does: fresh edge certificates moved into place (the CA is kept)."""
        from compiler.policy.gateway import Gateway

        certs.write_edge_certs(self.certs, TRUST_DOMAIN, Gateway.model_validate(self.gateway_doc))


def edge_mesh(
    live_mesh: LiveMesh,
    tmp_path: Path,
    *,
    gateway: dict | None = None,
    tls: dict | None = None,
    authn: dict | None = None,
    with_reviews: bool | Upstream = False,
    collector: Upstream | None = None,
    routes: list[dict] | None = None,
    edge_certs: bool = True,
    static: bool = False,
) -> Edge:
    """productpage (v1, v2; 90/10, jason -> v2; only `ingress` may call it) behind the gateway `ingress`.

    `gateway`: more Gateway fields; `tls`: more fields of the https listener's `tls`; `authn`: a
    RequestAuthentication body for the gateway; `with_reviews`: also reviews, which calls productpage (its
    app: the Upstream given, else none); `routes`: the gateway's routes (default: both hosts to productpage);
    `collector`: the app of a `zipkin` service, and tracing on (100%) mesh-wide; `edge_certs` False: the
    edge certificates' folders exist but hold nothing yet (the gateway then starts with its config problems);
    `static`: `meshc build --static` (one self-contained bootstrap per Envoy).
    Certificates are issued under tmp_path/certs before anything starts.
    """
    root = tmp_path / "certs"
    v1, v2 = live_mesh.upstream("productpage", "v1"), live_mesh.upstream("productpage", "v2")
    address = live_mesh.loopback.address()
    port = live_mesh.loopback.port

    def cert(*hosts: str) -> dict:
        folder = root / GW / "edge" / hosts[0]
        return {"hosts": list(hosts), "cert": str(folder / "cert.pem"), "key": str(folder / "key.pem")}

    gw_doc = {
        "kind": "Gateway",
        "name": GW,
        "address": address,
        "admin_port": port(address),
        "listeners": [
            {"name": "http", "port": port(address), "redirect_to_https": True},
            {
                "name": "https",
                "port": port(address),
                "protocol": "https",
                "tls": {"certificates": [cert(SHOP), cert(API, WILD_API)], **(tls or {})},
            },
        ],
        "routes": routes or [{"hosts": [SHOP, API, WILD_API], "to": "productpage"}],
        "limits": LIMITS,
        "observability": {"access_log": {"to": "stdout", "format": "json"}},
        **(gateway or {}),
    }
    tracing = {"tracing": {"provider": "zipkin", "collector": "zipkin", "sampling": 100}} if collector else {}
    docs = [
        live_mesh.mesh_doc(
            trust_domain=TRUST_DOMAIN, mtls={"mode": "strict", "certs_dir": "/etc/meshc/certs"}, observability=tracing
        ),
        live_mesh.service("productpage", versions={"v1": v1, "v2": v2}),
        {
            "kind": "Route",
            "service": "productpage",
            "rules": [
                {"match": {"headers": [{"name": "end-user", "exact": "jason"}]}, "to": {"v2": 100}},
                {"to": {"v1": 90, "v2": 10}},
            ],
        },
        {"kind": "AuthorizationPolicy", "service": "productpage", "allow": [{"from": [GW]}]},
        gw_doc,
    ]
    if with_reviews:
        apps = {"versions": {"default": with_reviews}} if isinstance(with_reviews, Upstream) else {}
        docs.append(live_mesh.service("reviews", calls=["productpage"], **apps))
    if collector is not None:
        off = {"tracing": False, "access_log": False}
        docs.append(live_mesh.service("zipkin", versions={"default": collector}, observability=off))
    if authn is not None:
        docs.append({"kind": "RequestAuthentication", "service": GW, **authn})
    result = live_mesh.build(docs, certs_root=str(root), static=static)
    assert not [d for d in result.diagnostics if d.is_error], [d.render() for d in result.diagnostics]
    gateways = [s for s in result.ir.sidecars if s.gateway is not None]
    assert [s.service for s in gateways] == [GW], [s.service for s in result.ir.sidecars]
    assert gateways[0].tls is not None and gateways[0].tls.identity == INGRESS_ID, gateways[0].tls

    from compiler.policy.gateway import Gateway

    identities = {s.service: s.tls.identity for s in result.ir.sidecars}
    certs.write_service_certs(root, TRUST_DOMAIN, identities)  # what `meshc certs` writes
    if edge_certs:
        certs.write_edge_certs(root, TRUST_DOMAIN, Gateway.model_validate(gw_doc))
    else:
        for folder in certs.edge_folders(Gateway.model_validate(gw_doc)):
            (root / GW / "edge" / folder.name).mkdir(parents=True)
    live_mesh.start("productpage")
    if with_reviews:
        live_mesh.start("reviews")
    if collector is not None:
        live_mesh.start("zipkin")
    gw = start_gateway(live_mesh, GW, require_accepted=edge_certs)
    return Edge(live_mesh, root, gw, v1, v2, gw_doc, live_mesh.loopback.address(), docs)


def versions(responses: list[Response]) -> Counter:
    return Counter(r.json()["version"] if r.status == 200 else r.status for r in responses)


def san_dns(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def hcm_stat_prefix(gw: GatewayEnvoy, listener: str) -> str:
    """The HTTP connection manager's stat_prefix on the Envoy listener made for gateway listener `listener`."""
    name = gw.edge_listener_name(listener)
    resource = next(l for l in gw.listener_resources() if l["name"] == name)
    chains = resource.get("filter_chains", []) + ([resource["default_filter_chain"]] if "default_filter_chain" in resource else [])
    for chain in chains:
        for f in chain.get("filters", []):
            prefix = (f.get("typed_config") or {}).get("stat_prefix")
            if f["name"].endswith("http_connection_manager") and prefix:
                return prefix
    raise AssertionError(f"no HTTP connection manager on {name}")


def access_lines(gw: GatewayEnvoy) -> list[dict]:
    """The gateway's JSON access-log lines (its stdout, in its log file)."""
    out = []
    for line in gw.log_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_outside_client_reaches_productpage_over_https_by_sni(live_mesh, tmp_path):
    """HTTPS with the development CA and SNI: 200 from productpage; each host gets its own certificate (verified
    against the dev CA with the host name checked); a client without SNI gets the first; a Host no route names
    is 404; the http listener answers 301 to https and the app never sees it."""
    edge = edge_mesh(live_mesh, tmp_path)
    r = edge.get_one("/products/1?q=1")
    assert r.status == 200, (r.status, r.text)
    assert r.json()["service"] == "productpage" and r.json()["path"] == "/products/1?q=1", r.json()
    served = {}
    host, port = edge.https
    for sni in (SHOP, API):
        hs = handshake(host, port, sni=sni, context=edge.context())
        assert hs.ok, (sni, hs.error)
        assert san_dns(hs.peer) == ([SHOP] if sni == SHOP else [API, WILD_API]), (sni, san_dns(hs.peer))
        served[sni] = hs.peer.serial_number
        tls_version = hs.version
        assert edge.get_one("/", sni=sni).status == 200
    assert served[SHOP] != served[API]
    # A name under the wildcard: the API certificate (its SAN *.api.example.com passes the host name check).
    wild = handshake(host, port, sni="v1.api.example.com", context=edge.context())
    assert wild.ok and wild.peer.serial_number == served[API], wild.error
    assert edge.get_one("/", sni="v1.api.example.com").status == 200
    # Routes are by host: a host no route names is 404 at the gateway (nothing reaches the mesh).
    before = edge.upstream_count
    unknown = edge.get_one("/", host_header="unknown.example.com")
    assert unknown.status == 404 and edge.upstream_count == before, unknown.status
    assert edge.get_one("/", host_header=f"{SHOP}:{port}").status == 200  # the port in Host is ignored
    assert served[SHOP] == x509.load_pem_x509_certificate((edge.edge_folder(SHOP) / "cert.pem").read_bytes()).serial_number
    # No SNI (or an unknown one): the first certificate; a browser asking for another name rejects it.
    hs = handshake(host, port, sni=None, context=edge.context(check_hostname=False))
    assert hs.ok and san_dns(hs.peer) == [SHOP], (hs.error, hs.peer and san_dns(hs.peer))
    hs = handshake(host, port, sni="other.example.com", context=edge.context())
    assert not hs.ok and "certificate" in hs.error.lower(), hs.error
    # ALPN: HTTP/2 is offered to clients that ask for it.
    h2 = handshake(host, port, sni=SHOP, context=edge.context(alpn=("h2", "http/1.1")))
    assert h2.ok and h2.alpn == "h2", (h2.error, h2.alpn)
    # min_version 1.2 (the default): a TLS 1.2 client is served too.
    hs12 = handshake(host, port, sni=SHOP, context=edge.context(max_version=ssl.TLSVersion.TLSv1_2))
    assert hs12.ok and hs12.version == "TLSv1.2", (hs12.error, hs12.version)
    # Not trusting the development CA: the chain does not verify.
    hs = handshake(host, port, sni=SHOP, context=ssl.create_default_context())
    assert not hs.ok and "CERTIFICATE_VERIFY_FAILED" in hs.error, hs.error

    before = edge.upstream_count
    h, p = edge.http
    redirect = send_many(h, p, 1, "/products/1?q=1", host_header=SHOP)[0]
    assert redirect.status == 301, (redirect.status, redirect.headers)
    location = redirect.headers.get("location", "")
    assert location == f"https://{SHOP}:{port}/products/1?q=1", location
    assert edge.upstream_count == before, "a redirect never reaches the mesh"
    report("gateway_https", shop_serial=served[SHOP], api_serial=served[API], tls=tls_version, location=location)


def test_canary_and_ab_rule_hold_for_outside_traffic(live_mesh, tmp_path):
    """productpage's Route decides at the gateway: 1,000 outside requests split about 90/10 (the v2 share within
    4.5 standard deviations of 10%), and `end-user: jason` always gets v2."""
    edge = edge_mesh(live_mesh, tmp_path)
    n = 1000
    t0 = time.monotonic()
    got = versions(edge.get("/", n, max_seconds=120))
    took = time.monotonic() - t0
    assert set(got) <= {"v1", "v2"} and sum(got.values()) == n, got
    sd = (n * 0.1 * 0.9) ** 0.5  # binomial: 9.5
    assert abs(got["v2"] - 100) <= 4.5 * sd, got
    assert edge.v1.count == got["v1"] and edge.v2.count == got["v2"], "each request reached the app once"
    jason = versions(edge.get("/", 50, headers={"end-user": "jason"}))
    assert jason == Counter({"v2": 50}), jason
    report("gateway_canary", requests=n, v1=got["v1"], v2=got["v2"], v2_share=got["v2"] / n, seconds=took, jason=dict(jason))


def test_only_the_gateway_may_call_productpage(live_mesh, tmp_path):
    """`from: [ingress]`: through the gateway 200 (productpage's sidecar sees the gateway's SPIFFE ID); reviews,
    a mesh service with its own certificate, gets 403 calling productpage directly; a client without a mesh
    certificate cannot even complete the handshake on productpage's port; the app sees none of them."""
    edge = edge_mesh(live_mesh, tmp_path, with_reviews=True)
    assert edge.get_one("/").status == 200
    before = edge.upstream_count
    direct = live_mesh.call("reviews", "productpage", "/", 5)
    assert [r.status for r in direct] == [403] * 5, [(r.status, r.text) for r in direct]
    assert "RBAC" in direct[0].text, direct[0].text
    # Straight to productpage's inbound port with reviews' certificate: mTLS passes, RBAC refuses.
    pp_host, pp_port = live_mesh["productpage"].inbound
    reviews_ctx = tls_context(edge.ca, edge.certs / "reviews" / "cert.pem", edge.certs / "reviews" / "key.pem", check_hostname=False)
    hs = handshake(pp_host, pp_port, sni=None, context=reviews_ctx, request=b"GET / HTTP/1.1\r\nHost: productpage\r\nConnection: close\r\n\r\n")
    assert hs.ok and hs.response.startswith(b"HTTP/1.1 403"), (hs.error, hs.response[:100])
    # Without a certificate (an outside client skipping the gateway): refused in the handshake.
    hs = handshake(pp_host, pp_port, sni=None, context=tls_context(edge.ca, check_hostname=False), request=b"GET / HTTP/1.1\r\nHost: productpage\r\n\r\n")
    assert not hs.ok or hs.response == b"", (hs.error, hs.response[:100])
    assert edge.upstream_count == before, "no refused call reached the app"
    # productpage's RBAC counted them; what it allowed came from the gateway's identity.
    rbac = live_mesh["productpage"].stats(r"^http\.inbound_http\.rbac\..*(allowed|denied)$")
    assert sum(v for k, v in rbac.items() if k.endswith("denied")) >= 6, rbac
    assert sum(v for k, v in rbac.items() if k.endswith("allowed")) >= 1, rbac
    report("gateway_authz", direct=[r.status for r in direct], rbac=rbac, no_cert=hs.error or "closed")


def test_tokens_are_verified_at_the_edge(live_mesh, tmp_path):
    """RequestAuthentication on the gateway: /account needs a token. Missing, expired, badly signed -> 401 from the
    gateway, and the app's request count does not move; a valid token -> 200 with the subject forwarded; paths
    without a rule pass without a token."""
    signer, stranger = Signer(), Signer()  # same kid, another key: a forged signature
    edge = edge_mesh(
        live_mesh,
        tmp_path,
        authn={
            "providers": [
                {"name": "edge-issuer", "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": signer.jwks(), "forward_claims": {"sub": "x-user-id"}}
            ],
            "rules": [{"paths": ["/account"]}],
        },
    )
    before = edge.upstream_count
    now = int(time.time())
    refused = {
        "missing": {},
        "expired": {"Authorization": f"Bearer {signer.token(iat=now - 7200, exp=now - 3600)}"},
        "bad_signature": {"Authorization": f"Bearer {stranger.token()}"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
    }
    bodies = {}
    for case, headers in refused.items():
        r = edge.get_one("/account/orders", headers=headers)
        assert r.status == 401, (case, r.status, r.text)
        bodies[case] = r.text
    assert edge.upstream_count == before, "a refused token never reaches the mesh"
    r = edge.get_one("/account/orders", headers={"Authorization": f"Bearer {signer.token(sub='alice')}"})
    assert r.status == 200, (r.status, r.text)
    got = edge.last_request()
    assert got.headers.get("x-user-id") == "alice" and "authorization" not in got.headers, got.headers
    assert edge.get_one("/catalog").status == 200  # no rule: no token needed
    jwt_stats = edge.gw.stats(r"jwt_authn\.(allowed|denied)$")
    assert sum(v for k, v in jwt_stats.items() if k.endswith("denied")) == len(refused), jwt_stats
    report("gateway_jwt", refused=bodies, stats=jwt_stats)


def test_a_burst_over_the_edge_rate_limit_gets_429(live_mesh, tmp_path):
    """rate_limit 20 per hour: of 60 requests in a burst exactly 20 reach productpage, 40 get 429 from the gateway
    (the bucket is not refilled within the test), and the gateway's local rate-limit stats count them."""
    limit, burst = 20, 60
    edge = edge_mesh(live_mesh, tmp_path, gateway={"rate_limit": {"requests": limit, "per": "1h"}})
    answers = edge.get("/", burst)
    statuses = Counter(r.status for r in answers)
    assert statuses == Counter({200: limit, 429: burst - limit}), statuses
    assert all(r.headers.get("x-local-rate-limit") == "true" for r in answers if r.status == 429)
    assert edge.upstream_count == limit
    limited = edge.gw.stats(r"local_rate_limit\..*rate_limited$")
    assert sum(limited.values()) == burst - limit, limited
    report("gateway_rate_limit", limit=limit, burst=burst, statuses=dict(statuses), stats=limited)


def test_edge_hygiene(live_mesh, tmp_path):
    """What an untrusted client can and cannot do (trusted_hops 0): the app is told the real client address
    (x-envoy-external-address, the last X-Forwarded-For entry), never what the client wrote in X-Forwarded-For
    or x-envoy-* headers; trace context from outside is dropped; a request id is generated at the edge; the
    app's `server` header does not leak; too large or too many headers get 431; header names with underscores
    are refused (400); a body over max_request_bytes gets 413 and never reaches the app."""
    edge = edge_mesh(live_mesh, tmp_path)
    spoof = {"X-Forwarded-For": SPOOFED, "X-Request-Id": "client-chosen", "X-Envoy-Internal": "true",
             "X-Envoy-External-Address": SPOOFED, "X-B3-TraceId": TRACE_ID, "X-B3-SpanId": TRACE_ID,
             "traceparent": f"00-{TRACE_ID * 2}-{TRACE_ID}-01"}
    r = edge.get_one("/who", headers=spoof)
    assert r.status == 200, (r.status, r.text)
    seen = edge.last_request().headers
    xff = [a.strip() for a in seen.get("x-forwarded-for", "").split(",")]
    # The client's own entry stays in the header, but the last one is the gateway's: the peer address.
    assert xff == [SPOOFED, edge.client_address], (xff, edge.client_address)
    assert seen.get("x-envoy-external-address") == edge.client_address, seen
    assert "x-envoy-internal" not in seen, seen
    # A trace starts at the edge: trace context sent from outside is dropped.
    assert TRACE_ID not in json.dumps(seen), seen
    rid = seen.get("x-request-id", "")
    assert rid != "client-chosen" and uuid.UUID(rid), rid
    assert r.headers.get("x-request-id", rid) == rid
    r2 = edge.get_one("/who")
    rid2 = edge.last_request().headers.get("x-request-id", "")
    assert uuid.UUID(rid2) and rid2 != rid
    server = r2.headers.get("server", "")
    assert "meshc-test-upstream" not in server and "Python" not in server, server

    big = edge.get_one("/", headers={"X-Big": "x" * (HEADER_KB * 1024)})
    assert big.status == 431, big.status
    many = edge.get_one("/", headers={f"X-H{i}": "1" for i in range(MAX_HEADERS + 5)})
    assert many.status == 431, many.status
    under = edge.get_one("/", headers={"x_user": "admin"})
    assert under.status == 400, under.status
    before = edge.upstream_count
    body = edge.get_one("/upload", method="POST", body=b"x" * (MAX_BODY + 1))
    assert body.status == 413 and edge.upstream_count == before, body.status
    fits = edge.get_one("/upload", method="POST", body=b"y" * MAX_BODY)
    assert fits.status == 200 and edge.last_request().body == b"y" * MAX_BODY, fits.status
    report("gateway_hygiene", xff=seen.get("x-forwarded-for"), client=edge.client_address,
           external=seen.get("x-envoy-external-address"), internal=seen.get("x-envoy-internal"), request_id=rid, server=server,
           big=big.status, many=many.status, underscore=under.status, body_over=body.status)


def test_client_certificate_required_when_client_ca_is_set(live_mesh, tmp_path):
    """client_ca: a client without a certificate cannot complete the exchange, one with a certificate from another
    CA neither; the development client certificate (signed by the CA the policy names) gets 200."""
    root = tmp_path / "certs"
    edge = edge_mesh(live_mesh, tmp_path, tls={"client_ca": str(root / GW / "edge" / "client-ca" / "ca.pem")})
    host, port = edge.https
    request = f"GET / HTTP/1.1\r\nHost: {SHOP}\r\nConnection: close\r\n\r\n".encode()
    without = handshake(host, port, sni=SHOP, context=edge.context(), request=request)
    assert not without.ok, without.response[:100]
    other_ca_key, other_ca = certs.make_ca("stranger.test", days=1)
    key, cert = certs.issue(other_ca_key, other_ca, None, ["client.stranger.test"], 1, usages=("client",))
    (tmp_path / "stranger.pem").write_bytes(certs._pem_cert(cert))
    (tmp_path / "stranger.key").write_bytes(certs._pem_key(key))
    foreign = handshake(host, port, sni=SHOP, context=edge.context(cert=tmp_path / "stranger.pem", key=tmp_path / "stranger.key"), request=request)
    assert not foreign.ok, foreign.response[:100]
    client = edge.certs / GW / "edge" / "client"
    r = edge.get_one("/", context=edge.context(cert=client / "cert.pem", key=client / "key.pem"))
    assert r.status == 200, (r.status, r.text)
    ssl_stats = edge.gw.stats(r"^listener\..*\.ssl\.(fail_verify_no_cert|fail_verify_error|handshake|connection_error)$")
    report("gateway_client_cert", without=without.error, foreign=foreign.error, stats=ssl_stats)


def test_renewed_edge_certificate_is_served_without_a_restart(live_mesh, tmp_path):
    """Re-issuing the edge certificates on disk (moved into place in one step): new connections get the new
    certificate from the same Envoy process (admin /certs lists it), a connection opened before goes on."""
    edge = edge_mesh(live_mesh, tmp_path)
    host, port = edge.https
    pid = edge.gw.pid
    old = handshake(host, port, sni=SHOP, context=edge.context()).peer.serial_number
    kept = SniConnection(host, port, sni=SHOP, context=edge.context(), timeout=5.0, source=edge.client_address)
    kept.request("GET", "/before", headers={"Host": SHOP})
    first = kept.getresponse()
    first.read()
    assert first.status == 200
    edge.rotate_edge_certificates()
    new = x509.load_pem_x509_certificate((edge.edge_folder(SHOP) / "cert.pem").read_bytes()).serial_number
    assert new != old
    t0 = time.monotonic()
    wait_until(lambda: handshake(host, port, sni=SHOP, context=edge.context()).peer.serial_number == new, timeout=15,
               message="the renewed certificate on new connections")
    took = time.monotonic() - t0
    assert edge.gw.pid == pid and edge.gw.running
    # A connection opened before the renewal goes on (with the certificate it was given).
    kept.request("GET", "/after", headers={"Host": SHOP})
    again = kept.getresponse()
    again.read()
    assert again.status == 200 and kept.peer.serial_number == old
    kept.close()
    # The admin interface lists the certificate in use.
    loaded = json.dumps(edge.gw.admin_json("/certs"))
    assert format(new, "x") in loaded.lower() and format(old, "x") not in loaded.lower()
    api = handshake(host, port, sni=API, context=edge.context())
    assert api.ok and api.peer.serial_number != old
    assert edge.get_one("/").status == 200
    report("gateway_rotation", old_serial=old, new_serial=new, seconds_to_serve=took, pid=pid)


def test_gateway_stats_and_access_log_show_the_requests(live_mesh, tmp_path):
    """The gateway's /stats count the requests per listener (downstream_rq_2xx on https, 3xx on http) and per
    destination version (the outbound clusters of productpage); its access log has one JSON line per request
    with the request id the app received and the client's address."""
    edge = edge_mesh(live_mesh, tmp_path)
    https_prefix, http_prefix = hcm_stat_prefix(edge.gw, "https"), hcm_stat_prefix(edge.gw, "http")
    n = 40
    assert all(r.status == 200 for r in edge.get("/stats-me", n))
    h, p = edge.http
    assert [r.status for r in send_many(h, p, 3, "/", host_header=SHOP)] == [301] * 3
    https_2xx = edge.gw.wait_for_stat(f"http.{https_prefix}.downstream_rq_2xx", lambda v: v >= n)
    http_3xx = edge.gw.wait_for_stat(f"http.{http_prefix}.downstream_rq_3xx", lambda v: v >= 3)
    assert https_2xx == n and http_3xx == 3, (https_2xx, http_3xx)
    upstream = edge.gw.stats(r"^cluster\.outbound\|productpage\|v[12]\.upstream_rq_total$")
    assert sum(upstream.values()) == n, upstream
    host, port = edge.https
    cx = edge.gw.stats(rf"^listener\.{re.escape(host)}_{port}\.downstream_cx_total$")
    assert sum(cx.values()) >= 1, cx
    ids = {r.headers["x-request-id"] for r in edge.v1.requests + edge.v2.requests}

    def logged() -> list[dict] | None:
        mine = [l for l in access_lines(edge.gw) if l.get("request_id") in ids]
        return mine if len(mine) >= n else None

    lines = wait_until(logged, timeout=15, message="one access-log line per request")
    assert len(lines) == n, len(lines)
    line = lines[-1]
    assert (line["method"], line["path"], line["status"], line["direction"]) == ("GET", "/stats-me", 200, "edge"), line
    assert line["destination"] in ("outbound|productpage|v1", "outbound|productpage|v2"), line
    assert line["source_address"].rsplit(":", 1)[0] == edge.client_address, line
    report("gateway_observability", https_2xx=https_2xx, http_3xx=http_3xx, upstream=upstream, cx=cx, log_line=line)


def test_trusted_hops_take_the_client_address_from_the_proxy_in_front(live_mesh, tmp_path):
    """trusted_hops 1 (a load balancer in front that appends the client it saw): the address that load balancer
    wrote last in X-Forwarded-For is the client (x-envoy-external-address), not the balancer's own address."""
    edge = edge_mesh(live_mesh, tmp_path, gateway={"trusted_hops": 1})
    balancer_saw = "198.51.100.7"
    r = edge.get_one("/who", headers={"X-Forwarded-For": f"{SPOOFED}, {balancer_saw}"})
    assert r.status == 200, (r.status, r.text)
    seen = edge.last_request().headers
    assert seen.get("x-envoy-external-address") == balancer_saw, seen
    assert seen["x-forwarded-for"].replace(" ", "").split(",") == [SPOOFED, balancer_saw, edge.client_address], seen
    report("gateway_trusted_hops", xff=seen["x-forwarded-for"], external=seen.get("x-envoy-external-address"))


def test_min_version_refuses_older_tls(live_mesh, tmp_path):
    """min_version 1.3: a client that speaks at most TLS 1.2 fails the handshake; TLS 1.3 is served."""
    edge = edge_mesh(live_mesh, tmp_path, tls={"min_version": "1.3"})
    host, port = edge.https
    old = handshake(host, port, sni=SHOP, context=edge.context(max_version=ssl.TLSVersion.TLSv1_2))
    assert not old.ok, old.version
    new = handshake(host, port, sni=SHOP, context=edge.context())
    assert new.ok and new.version == "TLSv1.3", (new.error, new.version)
    assert edge.get_one("/").status == 200
    report("gateway_min_version", tls12=old.error, tls13=new.version)


def test_connection_limit_closes_connections_over_max_connections(live_mesh, tmp_path):
    """max_connections 2: with two client connections open on the https listener, a third is closed at once
    (listener downstream_cx_overflow counts it); once one closes, a new connection is served again."""
    edge = edge_mesh(live_mesh, tmp_path, gateway={"limits": {**LIMITS, "max_connections": 2}})
    host, port = edge.https
    ctx = edge.context()
    held = []
    try:
        for _ in range(2):
            conn = SniConnection(host, port, sni=SHOP, context=ctx, timeout=5.0, source=edge.client_address)
            conn.request("GET", "/", headers={"Host": SHOP})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            held.append(conn)
        third = handshake(host, port, sni=SHOP, context=ctx, request=f"GET / HTTP/1.1\r\nHost: {SHOP}\r\n\r\n".encode())
        assert not third.ok or third.response == b"", third.response[:100]
        overflow = edge.gw.wait_for_stat(f"listener.{host}_{port}.downstream_cx_overflow", lambda v: v >= 1)
    finally:
        for conn in held:
            conn.close()
    edge.gw.wait_for_stat(f"listener.{host}_{port}.downstream_cx_active", lambda v: v == 0)
    assert edge.get_one("/").status == 200
    report("gateway_connection_limit", overflow=overflow, third=third.error or "closed")


def test_the_trace_starts_at_the_gateway(live_mesh, tmp_path):
    """Tracing on: a request from outside that brings its own B3 headers gets a new trace; the gateway's SERVER
    span is its root, the call into the mesh its CLIENT child, and productpage's sidecar reports the SERVER
    half of that child (a shared B3 span) in the same trace."""
    collector = live_mesh.upstream("zipkin")
    spans: list[dict] = []

    def record(req):
        if req.method == "POST" and req.path.startswith("/api/v2/spans"):
            spans.extend(json.loads(req.body))
            return Reply(202, body=b"")
        return Reply(404, body=b"")

    collector.handler = record
    edge = edge_mesh(live_mesh, tmp_path, collector=collector)
    for sc in (edge.gw, live_mesh["productpage"]):  # send each finished span at once
        assert sc.admin_post("/runtime_modify?tracing.zipkin.min_flush_spans=1")[0] == 200
    r = edge.get_one("/trace-me", headers={"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": TRACE_ID, "X-B3-Sampled": "1"})
    assert r.status == 200, (r.status, r.text)
    seen = edge.last_request().headers
    trace_id = seen.get("x-b3-traceid")
    assert trace_id and trace_id != TRACE_ID, seen

    def both() -> list[dict] | None:
        mine = [s for s in list(spans) if s.get("traceId") == trace_id]
        return mine if len(mine) >= 3 else None

    mine = wait_until(both, 10, message=lambda: f"spans of {trace_id} from the gateway and productpage (have {spans})")
    roots = [s for s in mine if "parentId" not in s]
    assert [(s["localEndpoint"]["serviceName"], s.get("kind")) for s in roots] == [(GW, "SERVER")], mine
    # The gateway's call into the mesh is a CLIENT child of the root; productpage's SERVER span is its other half.
    client = [s for s in mine if s["localEndpoint"]["serviceName"] == GW and s.get("kind") == "CLIENT"]
    assert len(client) == 1 and client[0]["parentId"] == roots[0]["id"], mine
    server = [s for s in mine if s["localEndpoint"]["serviceName"] == "productpage"]
    assert [(s.get("kind"), s["id"]) for s in server] == [("SERVER", client[0]["id"])], mine
    assert not [s for s in spans if s.get("traceId") == TRACE_ID], "the client's trace id started nothing"
    report("gateway_trace", trace_id=trace_id, spans=[(s["localEndpoint"]["serviceName"], s.get("kind"), s.get("parentId")) for s in mine])


def test_routes_by_host_and_path(live_mesh, tmp_path):
    """Routes are tried in order by host and path prefix: api.example.com/reviews… goes to reviews, everything else
    of both hosts to productpage (shop.example.com/reviews too: that route names only the api host)."""
    reviews = live_mesh.upstream("reviews")
    edge = edge_mesh(
        live_mesh,
        tmp_path,
        with_reviews=reviews,
        routes=[
            {"hosts": [API, WILD_API], "path": "/reviews", "to": "reviews"},
            {"hosts": [SHOP, API, WILD_API], "to": "productpage"},
        ],
    )
    where = {}
    for sni, path in [(API, "/reviews/1"), ("eu.api.example.com", "/reviews"), (API, "/reviewsx"), (API, "/other"),
                      (SHOP, "/reviews/1"), (SHOP, "/")]:  # fmt: skip
        r = edge.get_one(path, sni=sni)
        assert r.status == 200, (sni, path, r.status, r.text)
        where[f"{sni}{path}"] = r.json()["service"]
    assert where == {
        f"{API}/reviews/1": "reviews",
        "eu.api.example.com/reviews": "reviews",
        f"{API}/reviewsx": "reviews",  # a prefix, as Envoy's: end it with / for a folder
        f"{API}/other": "productpage",
        f"{SHOP}/reviews/1": "productpage",
        f"{SHOP}/": "productpage",
    }, where
    assert reviews.count == 3 and reviews.requests[0].path == "/reviews/1"
    report("gateway_routes", where=where)


def test_slow_headers_are_cut_off(live_mesh, tmp_path):
    """request_headers_timeout 1s: a client that sends part of its headers and stalls is answered 408 and
    disconnected by the gateway (http.<listener>.downstream_rq_header_timeout), nothing reaches the app."""
    edge = edge_mesh(live_mesh, tmp_path, gateway={"limits": {**LIMITS, "request_headers_timeout": "1s"}})
    host, port = edge.https
    prefix = hcm_stat_prefix(edge.gw, "https")
    t0 = time.monotonic()
    slow = handshake(host, port, sni=SHOP, context=edge.context(), request=f"GET / HTTP/1.1\r\nHost: {SHOP}\r\n".encode(),
                     timeout=10.0)
    took = time.monotonic() - t0
    assert slow.ok and slow.response.startswith(b"HTTP/1.1 408"), (slow.error, slow.response[:200])
    assert edge.gw.stat(f"http.{prefix}.downstream_rq_header_timeout") == 1
    assert edge.upstream_count == 0
    assert edge.get_one("/").status == 200
    report("gateway_header_timeout", status=slow.response.split(b"\r\n", 1)[0].decode(), seconds=took)


def h2_get(host: str, port: int, sni: str, ctx: ssl.SSLContext, paths: list[str]) -> tuple[dict, list[tuple[int, dict]]]:
    """HTTP/2 over TLS (ALPN h2): the server's SETTINGS, and (status, JSON body) per path, streams sent at once."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    with socket.create_connection((host, port), timeout=5.0) as raw, ctx.wrap_socket(raw, server_hostname=sni) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        conn.initiate_connection()
        streams = {}
        for path in paths:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", sni)], end_stream=True)
            streams[sid] = {"status": None, "body": b"", "done": False}
        tls.sendall(conn.data_to_send())
        settings: dict = {}
        deadline = time.monotonic() + 10
        while not all(v["done"] for v in streams.values()) and time.monotonic() < deadline:
            data = tls.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RemoteSettingsChanged):
                    settings.update({int(k): v.new_value for k, v in ev.changed_settings.items()})
                elif isinstance(ev, h2.events.ResponseReceived):
                    streams[ev.stream_id]["status"] = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    streams[ev.stream_id]["body"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    streams[ev.stream_id]["done"] = True
            tls.sendall(conn.data_to_send())
    return settings, [(v["status"], json.loads(v["body"]) if v["body"] else {}) for v in streams.values()]


def test_http2_at_the_edge(live_mesh, tmp_path):
    """A client that negotiates h2 gets HTTP/2: several streams on one connection reach productpage, and the
    gateway announces the edge limits (100 concurrent streams, 64 KiB stream window)."""
    from h2.settings import SettingCodes

    edge = edge_mesh(live_mesh, tmp_path)
    host, port = edge.https
    settings, answers = h2_get(host, port, SHOP, edge.context(alpn=("h2",)), [f"/h2/{i}" for i in range(10)])
    assert [a[0] for a in answers] == [200] * 10, answers
    assert sorted(a[1]["path"] for a in answers) == sorted(f"/h2/{i}" for i in range(10))
    assert settings.get(SettingCodes.MAX_CONCURRENT_STREAMS) == 100, settings
    assert settings.get(SettingCodes.INITIAL_WINDOW_SIZE) == 65536, settings
    prefix = hcm_stat_prefix(edge.gw, "https")
    assert edge.gw.stat(f"http.{prefix}.downstream_cx_http2_total") == 1
    report("gateway_http2", streams=len(answers), settings={SettingCodes(k).name: v for k, v in settings.items() if k in set(SettingCodes)})


def test_shifting_the_canary_reaches_the_running_gateway(live_mesh, tmp_path):
    """Rebuilding with productpage's Route at 100% v2 changes what outside clients get, on the same gateway
    process: its routes file is reloaded (the gateway's RDS update_success rises), no restart, no failed request."""
    edge = edge_mesh(live_mesh, tmp_path)
    pid = edge.gw.pid
    assert edge.get_one("/").status == 200
    prefix = hcm_stat_prefix(edge.gw, "https")
    rds = f"http.{prefix}.rds.edge-https.update_success"
    before = edge.gw.stat(rds)
    docs = [
        {**d, "rules": [{"to": {"v2": 100}}]} if isinstance(d, dict) and d.get("kind") == "Route" else d for d in edge.docs
    ]
    edge.rebuild(docs)
    edge.gw.wait_for_stat(rds, lambda v: v > before)
    statuses: Counter = Counter()

    def all_v2() -> bool:
        got = versions(edge.get("/", 20))
        statuses.update(got)
        return got == Counter({"v2": 20})

    wait_until(all_v2, 10, message="20 requests in a row from v2 after the rebuild")
    assert edge.gw.pid == pid and edge.gw.running
    assert set(statuses) <= {"v1", "v2"}, statuses  # nothing failed while it switched
    assert edge.gw.config_problems() == []
    report("gateway_canary_shift", rds_updates=edge.gw.stat(rds) - before, seen=dict(statuses), pid=pid)


def test_certificates_that_arrive_after_the_gateway_started_are_served(live_mesh, tmp_path):
    """The gateway starts before its edge certificates are there (their folders exist, empty): it is LIVE but
    resets every TLS connection, and its stats say why (sds.<secret>.update_rejected); once `meshc certs` moves
    the files into place, the same process serves them (the listener's ssl_context_update_by_sds rises)."""
    edge = edge_mesh(live_mesh, tmp_path, edge_certs=False)
    host, port = edge.https
    pid = edge.gw.pid
    early = handshake(host, port, sni=SHOP, context=edge.context())
    assert not early.ok, early.version
    rejected = edge.gw.stats(r"^sds\.edge-.*\.update_rejected$")
    assert rejected and all(v >= 1 for v in rejected.values()), rejected
    updates = f"listener.{host}_{port}.server_ssl_socket_factory.ssl_context_update_by_sds"
    before = edge.gw.stat(updates)
    edge.rotate_edge_certificates()  # the first issue
    served = wait_until(lambda: handshake(host, port, sni=SHOP, context=edge.context()).ok, timeout=10,
                        message="the certificates on the https listener")
    assert served and edge.gw.pid == pid and edge.get_one("/").status == 200
    assert edge.gw.stat(updates) > before
    report("gateway_late_certificates", before=early.error, rejected=rejected, context_updates=edge.gw.stat(updates) - before, pid=pid)


def test_static_mode_gateway(live_mesh, tmp_path):
    """`meshc build --static`: the gateway's one bootstrap holds its listeners, routes, clusters and secrets; HTTPS
    by SNI, the canary's versions and the redirect work as in file mode. Like everything in static mode, the
    certificate files are read when Envoy starts: a renewed certificate is served after a restart."""
    edge = edge_mesh(live_mesh, tmp_path, static=True)
    assert edge.gw.static
    got = versions(edge.get("/", 200))
    assert set(got) == {"v1", "v2"} and sum(got.values()) == 200, got
    h, p = edge.http
    assert send_many(h, p, 1, "/x", host_header=SHOP)[0].status == 301
    host, port = edge.https
    old = handshake(host, port, sni=API, context=edge.context()).peer.serial_number
    edge.rotate_edge_certificates()
    new = x509.load_pem_x509_certificate((edge.edge_folder(API) / "cert.pem").read_bytes()).serial_number
    start_gateway(live_mesh, GW)
    served = handshake(host, port, sni=API, context=edge.context())
    assert served.ok and served.peer.serial_number == new != old, served.error
    report("gateway_static", versions=dict(got))
