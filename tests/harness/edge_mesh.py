"""The gateway tests' mesh: productpage (v1, v2; 90/10, jason -> v2; only `ingress` may call it) behind a Gateway.

Shared by tests/test_live_gateway.py (TLS, routing, certificates) and tests/test_live_gateway_edge.py (edge
protections, hygiene, observability). `edge_mesh(live_mesh, tmp_path, ...)` builds and starts it with
certificates from compiler.certs, as `meshc certs` makes them: the development CA, the mesh certificates of
the services and the gateway, and the gateway's edge certificates in `certs/ingress/edge/<host>/`, where the
policy points the gateway. The test process plays the outside client (its own loopback source address, so
what the app is told about the client is known) and the apps. `Signer` makes RS256 tokens for the edge's
RequestAuthentication.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from compiler import certs

from .client import Response
from .gateway import GatewayEnvoy, https_many, start_gateway, tls_context
from .mesh import LiveMesh
from .upstream import Upstream

TRUST_DOMAIN = "gateway.test"
GW = "ingress"
SHOP, API, WILD_API = "shop.example.com", "api.example.com", "*.api.example.com"
INGRESS_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{GW}"
ISSUER, AUDIENCE = "https://auth.gateway.test", "shop"
SPOOFED = "203.0.113.66"
TRACE_ID = "463ac35c9f6413ad"
HEADER_KB, MAX_HEADERS, MAX_BODY = 16, 40, 65536
LIMITS = {"max_request_headers_kb": HEADER_KB, "max_headers": MAX_HEADERS, "max_request_bytes": MAX_BODY}
"""The gateway's limits in every test mesh (a test that sets other limits starts from these)."""


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
