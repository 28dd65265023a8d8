"""The ingress gateway, live (1/2): TLS, routing into the mesh, identity, certificates.

Model (compiler/policy/gateway.py, compiler/lower/gateway.py, compiler/emit/edge.py): a Gateway is an Envoy
of its own (`out/<gateway>/`, started like a sidecar). Its `https` listener terminates TLS with certificates
read from files through file SDS and picked by SNI; its `http` listener redirects to HTTPS; its routes send
requests by host and path into the mesh, where the destination's own Route applies (productpage: 90/10
between v1 and v2, `end-user: jason` always v2). It calls productpage with mTLS as
`spiffe://gateway.test/ns/default/sa/ingress`, which productpage's AuthorizationPolicy allows (`from:
[ingress]`) and nobody else. The mesh and its certificates: tests/harness/edge_mesh.py. Edge protections,
hygiene and observability: tests/test_live_gateway_edge.py.
"""

from __future__ import annotations

import json
import ssl
import time
from collections import Counter

import pytest
from cryptography import x509

from compiler import certs
from harness import report, send_many, wait_until
from harness.edge_mesh import API, GW, SHOP, WILD_API, edge_mesh, hcm_stat_prefix, san_dns, versions
from harness.gateway import SniConnection, handshake, start_gateway, tls_context

pytestmark = pytest.mark.envoy


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
