"""The way out of the mesh, live: ExternalService and Mesh egress.undeclared in real Envoy sidecars.

The test process plays the caller's app: it sends plaintext HTTP to its sidecar's
outbound listener with `Host: payments` (the ExternalService's name) or its host.
The "API outside the mesh" is an HTTPS server in this process on a loopback
address (`TlsApp`), with a certificate for api.payments.example issued by a test
CA made here with `cryptography`; the ExternalService lists that address as its
fixed endpoint and names the CA bundle file. The server records what each TLS
handshake carried (SNI, protocol version, a client certificate if any) and every
request (Host, headers), and answers a script of statuses.

What is proved, by what the server saw and by the caller's /stats:
- TLS origination: the app's plaintext call arrives over TLS 1.3 with SNI
  api.payments.example, Host rewritten to the external host, no mesh headers, and
  the sidecar (which holds a mesh certificate: strict mTLS) presents no certificate;
- verification: a server whose certificate comes from another CA, or names
  another host, gets no request (503 at the caller, ssl.fail_verify_* counted);
- per-destination protections: a 503 then 200 succeeds after one retry
  (upstream_rq_retry); consecutive 5xx eject the endpoint; the pool limits are the
  cluster's circuit breakers;
- the host resolved by DNS (logical DNS), and a tcp external;
- egress refuse: an undeclared host gets 502 with the body and `x-meshc-egress:
  refused`; egress allow: `Host: 127.a.b.c:<port>` of a local plain server reaches it,
  from a service that calls nothing.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from compiler import certs
from compiler.lower.external import EGRESS_HEADER, REFUSED_BODY
from harness import report, send_many
from harness.outside import EchoServer, TlsApp, write_pki
from harness.util import wait_until

pytestmark = pytest.mark.envoy

HOST = "api.payments.example"
CALLER = "checkout"
TRUST_DOMAIN = "egress.test"
CLUSTER = "outbound|payments|default"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@pytest.fixture
def servers():
    started: list = []
    yield started
    for s in started:
        s.stop()


def tls_app(servers, live_mesh, cert: Path, key: Path, **kwargs) -> TlsApp:
    app = TlsApp(live_mesh.loopback.address(), cert, key, **kwargs).start()
    servers.append(app)
    return app


def external(name: str, app, ca: Path | None, *, host: str = HOST, port: int = 443, **fields) -> dict:
    doc = {"kind": "ExternalService", "name": name, "host": host, "port": port}
    if app is not None:
        doc["endpoints"] = [app.endpoint]
    if ca is not None:
        doc["tls"] = {"ca": str(ca)}
    doc.update(fields)
    return doc


def call(live_mesh, host: str, path: str = "/", n: int = 1, caller: str = CALLER, **kwargs):
    h, p = live_mesh.sidecars[caller].outbound
    return send_many(h, p, n, path, host_header=host, **kwargs)


# --------------------------------------------------------------------------
# TLS origination and verification
# --------------------------------------------------------------------------


def test_plaintext_call_leaves_over_verified_tls_with_sni_and_no_mesh_certificate(live_mesh, servers, tmp_path):
    """The app speaks plaintext to its sidecar; the API gets TLS 1.3 with SNI api.payments.example, Host
    rewritten to the host, no mesh headers, and no client certificate although the caller holds one."""
    ca, cert, key = write_pki(tmp_path / "pki", "payments", [HOST])
    certs_root = tmp_path / "certs"
    mesh_ca_key, mesh_ca = certs.load_or_make_ca(certs_root, TRUST_DOMAIN)
    app = tls_app(servers, live_mesh, cert, key, client_ca=certs_root / "ca.pem")
    docs = [
        live_mesh.mesh_doc(trust_domain=TRUST_DOMAIN, mtls={"mode": "strict"}),
        live_mesh.service(CALLER, calls=["payments"]),
        external("payments", app, ca, tls={"ca": str(ca), "min_version": "1.3"}),
    ]
    result = live_mesh.build(docs, certs_root=str(certs_root))
    certs.write_service_certs(certs_root, TRUST_DOMAIN, {s.service: s.tls.identity for s in result.ir.sidecars})
    front = live_mesh.start(CALLER)

    by_name = call(live_mesh, "payments", "/v1/charges", n=3)
    by_host = call(live_mesh, f"{HOST}:443", "/v1/balance")
    assert [r.status for r in by_name + by_host] == [200] * 4, [(r.status, r.text) for r in by_name + by_host]
    assert by_name[0].text == "external 200\n"

    assert app.requests and all(r["tls"] == "TLSv1.3" for r in app.requests), app.requests
    assert {r["host"] for r in app.requests} == {HOST}  # port 443 is the scheme's default: not written
    assert all("x-meshc-version" not in r["headers"] for r in app.requests)
    assert app.handshakes and all(h["sni"] == HOST for h in app.handshakes), app.handshakes
    assert all(h["version"] == "TLSv1.3" for h in app.handshakes)
    assert all(not h["peer_cert"] for h in app.handshakes), "the sidecar presented a certificate to an external host"
    stats = front.cluster_stats(CLUSTER)
    assert stats["upstream_rq_200"] == 4
    assert stats.get("ssl.handshake", 0) == len(app.handshakes) >= 1
    report(
        "tls_origination",
        requests=len(app.requests),
        handshakes=len(app.handshakes),
        sni=app.handshakes[0]["sni"],
        tls=app.handshakes[0]["version"],
        host=app.requests[0]["host"],
    )


def test_a_server_the_ca_does_not_vouch_for_gets_no_request(live_mesh, servers, tmp_path):
    """A certificate from another CA, or from the right CA for another host: the handshake fails in the
    sidecar, the app gets 503 and the server sees no request."""
    ca, cert, key = write_pki(tmp_path / "pki", "payments", [HOST])
    _, rogue_cert, rogue_key = write_pki(tmp_path / "pki", "rogue", [HOST])
    good = tls_app(servers, live_mesh, cert, key)
    rogue = tls_app(servers, live_mesh, rogue_cert, rogue_key)
    # The right CA (its own), a certificate for another name.
    other_ca, other_cert, other_key = write_pki(tmp_path / "pki", "other-name", ["www.elsewhere.example"])
    misnamed = tls_app(servers, live_mesh, other_cert, other_key)
    docs = [
        live_mesh.mesh_doc(),
        live_mesh.service(CALLER, calls=["payments", "impostor", "misnamed"]),
        external("payments", good, ca),
        external("impostor", rogue, ca, host="impostor.payments.example", tls={"ca": str(ca), "sni": HOST}),
        external("misnamed", misnamed, other_ca, host="misnamed.payments.example", tls={"ca": str(other_ca), "sni": HOST}),
    ]
    live_mesh.build(docs)
    front = live_mesh.start(CALLER)

    ok = call(live_mesh, "payments")
    refused = call(live_mesh, "impostor", n=3)
    wrong_name = call(live_mesh, "misnamed", n=3)
    assert ok[0].status == 200
    assert [r.status for r in refused] == [503] * 3, [(r.status, r.text) for r in refused]
    assert [r.status for r in wrong_name] == [503] * 3, [(r.status, r.text) for r in wrong_name]
    assert rogue.requests == [] and misnamed.requests == []
    ca_failures = front.cluster_stats("outbound|impostor|default").get("ssl.fail_verify_error", 0)
    san_failures = front.cluster_stats("outbound|misnamed|default").get("ssl.fail_verify_san", 0)
    assert ca_failures >= 3, front.cluster_stats("outbound|impostor|default")
    assert san_failures >= 3, front.cluster_stats("outbound|misnamed|default")
    assert rogue.failed_handshakes >= 3 and misnamed.failed_handshakes >= 3
    report(
        "verification",
        refused=len(refused) + len(wrong_name),
        fail_verify_error=ca_failures,
        fail_verify_san=san_failures,
        rogue_handshakes_failed=rogue.failed_handshakes,
    )


def test_a_rotated_ca_bundle_applies_without_restart(live_mesh, servers, tmp_path):
    """The bundle is read through file SDS watching its folder: a bundle moved into place (as a Kubernetes
    Secret update or cert-manager does) that now holds the server's CA makes the same sidecar process accept
    the server it refused a moment before."""
    old_ca, _, _ = write_pki(tmp_path / "pki", "old", [HOST])
    new_ca, cert, key = write_pki(tmp_path / "pki", "new", [HOST])
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    bundle = bundle_dir / "ca.pem"
    bundle.write_bytes(old_ca.read_bytes())
    app = tls_app(servers, live_mesh, cert, key)
    live_mesh.build([live_mesh.mesh_doc(), live_mesh.service(CALLER, calls=["payments"]), external("payments", app, bundle)])
    front = live_mesh.start(CALLER)
    pid = front.pid

    before = call(live_mesh, "payments")[0]
    assert before.status == 503 and app.requests == []
    assert front.cluster_stats(CLUSTER).get("ssl.fail_verify_error", 0) >= 1  # refused for its CA, not for want of one
    staged = bundle_dir / ".ca.pem.new"
    staged.write_bytes(old_ca.read_bytes() + new_ca.read_bytes())
    staged.replace(bundle)  # one rename: the watched folder sees the new bundle whole
    statuses: list[int] = []

    def accepted() -> bool:
        statuses.append(call(live_mesh, "payments")[0].status)
        return statuses[-1] == 200

    wait_until(accepted, 10, message=lambda: f"the rotated bundle was not used (statuses {statuses})")
    assert front.pid == pid and len(app.requests) == 1
    report("ca_rotation", before=before.status, polls=len(statuses), after=statuses[-1], same_process=front.pid == pid)


# --------------------------------------------------------------------------
# per-destination protections
# --------------------------------------------------------------------------


def test_retry_on_503_outlier_ejection_and_pool_limits(live_mesh, servers, tmp_path):
    """A 503 then 200 is one successful call after a retry; five 503s in a row eject the endpoint; the
    TrafficPolicy's pool is the cluster's circuit breakers."""
    ca, cert, key = write_pki(tmp_path / "pki", "payments", [HOST])
    app = tls_app(servers, live_mesh, cert, key)
    docs = [
        live_mesh.mesh_doc(),
        live_mesh.service(CALLER, calls=["payments"]),
        external("payments", app, ca),
        {
            "kind": "Route",
            "service": "payments",
            "rules": [
                {
                    "match": {"path": {"prefix": "/retried"}, "methods": ["GET"]},
                    "to": {"default": 100},
                    "timeout": "3s",
                    "retries": {"attempts": 2, "on": [{"retriable-status-codes": [503]}]},
                },
                {"to": {"default": 100}, "timeout": "3s"},
            ],
        },
        {
            "kind": "TrafficPolicy",
            "service": "payments",
            "connection_pool": {"max_connections": 7, "max_pending_requests": 5, "max_requests": 9},
            "outlier_detection": {"consecutive_5xx": 3, "interval": "10s", "base_ejection_time": "30s"},
        },
    ]
    live_mesh.build(docs)
    front = live_mesh.start(CALLER)

    app.script = [503]
    r = call(live_mesh, "payments", "/retried")[0]
    assert r.status == 200, (r.status, r.text)
    assert len(app.requests) == 2  # the 503 and the retry
    retries = front.cluster_stats(CLUSTER)["upstream_rq_retry"]
    assert retries >= 1

    # Three 503s in a row (no retries on this path): the endpoint is ejected.
    app.script = [503, 503, 503]
    failing = call(live_mesh, "payments", "/plain", n=3)
    assert [x.status for x in failing] == [503] * 3
    ejected = front.wait_for_stat(
        f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_consecutive_5xx", lambda v: v >= 1, timeout=5
    )
    # The pool: Envoy's circuit breakers for this cluster are the TrafficPolicy's numbers.
    status, clusters = front.admin_get("/clusters")
    assert status == 200
    for limit, value in (("max_connections", 7), ("max_pending_requests", 5), ("max_requests", 9)):
        assert f"{CLUSTER}::default_priority::{limit}::{value}" in clusters, limit
    report("protections", retries=retries, app_requests=len(app.requests), ejections=ejected)


def test_the_pool_limit_refuses_what_does_not_fit(live_mesh, servers, tmp_path):
    """One connection, one pending request: of 6 simultaneous calls to a slow API, the ones that fit
    neither are answered 503 at once by the caller's sidecar (x-envoy-overloaded), and never reach the API."""
    from concurrent.futures import ThreadPoolExecutor

    ca, cert, key = write_pki(tmp_path / "pki", "payments", [HOST])
    app = tls_app(servers, live_mesh, cert, key)
    app.delay = 1.0
    pool = {"max_connections": 1, "max_pending_requests": 1, "max_requests": 1}
    docs = [
        live_mesh.mesh_doc(),
        live_mesh.service(CALLER, calls=["payments"]),
        external("payments", app, ca),
        {"kind": "TrafficPolicy", "service": "payments", "connection_pool": pool},
    ]
    live_mesh.build(docs)
    front = live_mesh.start(CALLER)

    with ThreadPoolExecutor(6) as ex:
        responses = [f.result() for f in [ex.submit(call, live_mesh, "payments") for _ in range(6)]]
    statuses = sorted(r[0].status for r in responses)
    overloaded = [r[0] for r in responses if r[0].headers.get("x-envoy-overloaded") == "true"]
    stats = front.cluster_stats(CLUSTER)
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    assert len(overloaded) == statuses.count(503)
    assert stats.get("upstream_rq_pending_overflow", 0) == len(overloaded)
    assert len(app.requests) == statuses.count(200)
    report("pool", statuses=statuses, pending_overflow=stats.get("upstream_rq_pending_overflow", 0),
           reached=len(app.requests))


# --------------------------------------------------------------------------
# DNS and tcp
# --------------------------------------------------------------------------


def test_host_resolved_by_dns_and_a_tcp_external(live_mesh, servers):
    """An external without endpoints is its host resolved by Envoy (localhost: 127.0.0.1, logical DNS);
    a tcp external is an outbound listener on its port that carries bytes both ways."""
    plain = TlsApp("127.0.0.1", None, None, tls=False).start()
    servers.append(plain)
    db = EchoServer(live_mesh.loopback.address()).start()
    servers.append(db)
    caller_address = live_mesh.placement(CALLER).address
    db_port = live_mesh.loopback.port(caller_address)
    docs = [
        live_mesh.mesh_doc(),
        live_mesh.service(CALLER, calls=["local-api", "orders-db"]),
        external("local-api", None, None, host="localhost", port=plain.port),
        external("orders-db", None, None, host="orders-db.internal.example", port=db_port, protocol="tcp",
                 endpoints=[f"{db.host}:{db.port}"]),
    ]
    live_mesh.build(docs)
    front = live_mesh.start(CALLER)
    clusters = front.dynamic_clusters()
    assert clusters["outbound|local-api|default"]["cluster"]["cluster_type"]["typed_config"]["all_addresses_in_single_endpoint"]

    responses = call(live_mesh, "local-api", n=2)
    assert [r.status for r in responses] == [200, 200], [(r.status, r.text) for r in responses]
    assert {r["host"] for r in plain.requests} == {f"localhost:{plain.port}"}

    with socket.create_connection((caller_address, db_port), timeout=5) as s:
        s.sendall(b"SELECT 1")
        got = b""
        while not got.endswith(b"SELECT 1"):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got == b"echo:SELECT 1"
    assert db.connections == 1
    report("dns_and_tcp", dns_requests=len(plain.requests), tcp_reply=got.decode())


# --------------------------------------------------------------------------
# Mesh egress.undeclared
# --------------------------------------------------------------------------


def test_refuse_answers_502_for_an_undeclared_host(live_mesh):
    """`refuse`: any Host that no dependency answers to gets 502 from the caller's own sidecar, with the
    body saying what to declare; a declared one still works."""
    local = live_mesh.upstream("ratings")
    docs = [
        live_mesh.mesh_doc(egress={"undeclared": "refuse"}),
        live_mesh.service(CALLER, calls=["ratings"]),
        live_mesh.service("ratings", versions={"default": local}),
    ]
    live_mesh.build(docs)
    front = live_mesh.start(CALLER)
    live_mesh.start("ratings")

    refused = call(live_mesh, "api.undeclared.example", "/v1/anything", n=3)
    assert [r.status for r in refused] == [502] * 3
    assert refused[0].text == REFUSED_BODY
    assert refused[0].headers.get(EGRESS_HEADER) == "refused"
    assert call(live_mesh, "ratings")[0].status == 200
    rq_5xx = front.stat("http.outbound_http.downstream_rq_5xx")
    assert rq_5xx == 3
    report("egress_refuse", refused=len(refused), status=refused[0].status, downstream_rq_5xx=rq_5xx)


def test_allow_forwards_an_undeclared_host_even_from_a_service_that_calls_nothing(live_mesh):
    """`allow`: the sidecar's dynamic forward proxy sends `Host: 127.a.b.c:<port>` to that address."""
    outside = live_mesh.upstream("outside", host=live_mesh.loopback.address())
    docs = [live_mesh.mesh_doc(egress={"undeclared": "allow"}), live_mesh.service("legacy")]
    live_mesh.build(docs)
    legacy = live_mesh.start("legacy")

    responses = call(live_mesh, outside.endpoint, "/hello", n=3, caller="legacy")
    assert [r.status for r in responses] == [200] * 3, [(r.status, r.text) for r in responses]
    assert responses[0].json()["service"] == "outside"
    assert outside.count == 3
    forwarded = legacy.cluster_stats("outbound|undeclared_hosts|any").get("upstream_rq_200", 0)
    assert forwarded == 3
    report("egress_allow", forwarded=forwarded, reached=outside.count)
