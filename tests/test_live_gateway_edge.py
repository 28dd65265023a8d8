"""The ingress gateway, live (2/2): edge protections, hygiene and observability.

What the gateway does to requests from outside before anything reaches the mesh (Envoy's edge-proxy
advice): tokens verified (RequestAuthentication on the gateway), a token bucket, header, body and connection
limits, slow clients cut off, the real client address used and told to the app, request ids generated,
trace context from outside dropped, the app's `server` header replaced; and what it counts and logs. The
mesh and its certificates: tests/harness/edge_mesh.py; TLS and routing: tests/test_live_gateway.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter

import pytest

from harness import Reply, report, send_many, wait_until
from harness.edge_mesh import (
    AUDIENCE, GW, HEADER_KB, ISSUER, LIMITS, MAX_BODY, MAX_HEADERS, SHOP, SPOOFED, TRACE_ID, Signer, access_lines,
    edge_mesh, hcm_stat_prefix,
)
from harness.gateway import SniConnection, handshake

pytestmark = pytest.mark.envoy


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
