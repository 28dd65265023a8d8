"""Protocols and per-stream/per-cluster behaviour, live: tcp and grpc services, route idle_timeout, load balancers.

Mesh under test: <caller> -> <callee>; the test process plays the caller's app.

- `protocol: tcp`: the callee's sidecar has a `tcp_proxy` inbound listener to its
  default version; every caller's sidecar gets an outbound tcp listener on
  `<caller sidecar address>:<callee port>` (named `outbound|tcp|<port>`).
  The app is a threaded TCP echo server.
- `protocol: grpc`: the clusters of a grpc service speak HTTP/2 (h2c, prior
  knowledge) upstream, on the caller's side (to the callee's sidecar) and on the
  callee's inbound side (to the app). The app is a minimal h2c server (`h2`),
  the client speaks h2c too (gRPC's status is a trailer, which an HTTP/1.1
  downstream would not get).
- Route `idle_timeout`: the caller's route resets a stream that stays silent.
- TrafficPolicy `load_balancer`: decided where the instances are, i.e. on the
  callee's inbound cluster. Its `hash_on: {source_ip: true}` hashes the source
  address of the connection *the callee's sidecar* receives, which is the
  caller's sidecar's upstream connection, not the end client.

Every wait is bounded (deadlines, socket timeouts, `wait_until`); nothing sleeps a fixed time.
"""

from __future__ import annotations

import http.client
import re
import socket
import socketserver
import time
from collections import Counter

import h2.config
import h2.connection
import h2.events
import pytest

from harness.socketapp import App
from harness import HarnessError, report, wait_until

pytestmark = pytest.mark.envoy

IO_TIMEOUT = 5.0  # socket timeout of every test client/app socket


def stats_of(sidecar, prefix: str) -> dict[str, int]:
    """Stats under `prefix.` (prefix stripped)."""
    p = f"{prefix}."
    return {k[len(p):]: v for k, v in sidecar.stats(rf"^{re.escape(p)}").items()}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)}/{n} bytes")
        buf += chunk
    return buf


# --------------------------------------------------------------------------
# 1. tcp through two sidecars
# --------------------------------------------------------------------------


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        app: App = self.server.app  # type: ignore[attr-defined]
        self.request.settimeout(IO_TIMEOUT)
        app.record(self.client_address)
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)
        except OSError:
            pass


TCP_CALLER, TCP_CALLEE = "orders", "db"


def test_tcp_service_echoes_through_two_sidecars(live_mesh, apps):
    """tcp db behind its sidecar: connections to <orders sidecar>:<db port> reach the echo app via db's sidecar;
    several round trips per connection and several connections; tcp_proxy stats rise on both sidecars."""
    echo = apps(Echo)
    db = live_mesh.service(TCP_CALLEE, protocol="tcp", versions={"default": [echo.endpoint]})
    live_mesh.build([live_mesh.mesh_doc(), live_mesh.service(TCP_CALLER, calls=[TCP_CALLEE]), db])
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(TCP_CALLER)
    back = live_mesh.start(TCP_CALLEE)

    host, port = front.listener(f"outbound|tcp|{db.port}")
    assert (host, port) == (live_mesh.placement(TCP_CALLER).address, db.port)
    assert back.inbound == (live_mesh.placement(TCP_CALLEE).address, db.port)
    in_tcp, out_tcp = f"tcp.inbound_tcp_{db.port}", f"tcp.outbound_tcp_{db.port}"
    in_cluster, out_cluster = f"cluster.inbound|{TCP_CALLEE}|default", f"cluster.outbound|{TCP_CALLEE}|default"
    before = {k: stats_of(sc, p) for k, sc, p in (("in_tcp", back, in_tcp), ("in_cl", back, in_cluster),
                                                  ("out_tcp", front, out_tcp), ("out_cl", front, out_cluster))}

    conns, trips = 4, 5
    sent = 0
    rtts = []
    for c in range(conns):
        with socket.create_connection((host, port), timeout=IO_TIMEOUT) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for t in range(trips):
                msg = f"conn {c} trip {t} ".encode() + bytes(range(256)) * (t + 1)
                t0 = time.monotonic()
                s.sendall(msg)
                assert recv_exact(s, len(msg)) == msg
                rtts.append(time.monotonic() - t0)
                sent += len(msg)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""  # the app's close travels back through both sidecars
    wait_until(lambda: len(echo.records) >= conns, timeout=5, message="the echo app to see every connection")
    assert len(echo.records) == conns

    # Connection stats are counted when a connection opens; bytes when a connection closes or periodically,
    # so wait (bounded) for the totals.
    def settled():
        now = {k: stats_of(sc, p) for k, sc, p in (("in_tcp", back, in_tcp), ("in_cl", back, in_cluster),
                                                   ("out_tcp", front, out_tcp), ("out_cl", front, out_cluster))}
        d = {k: delta(now[k], before[k]) for k in now}
        ok = (
            d["in_tcp"].get("downstream_cx_total", 0) >= conns
            and d["in_cl"].get("upstream_cx_total", 0) >= conns
            and d["out_tcp"].get("downstream_cx_total", 0) >= conns
            and d["out_cl"].get("upstream_cx_total", 0) >= conns
            and d["in_cl"].get("upstream_cx_tx_bytes_total", 0) >= sent
            and d["in_cl"].get("upstream_cx_rx_bytes_total", 0) >= sent
        )
        return d if ok else None

    d = wait_until(settled, timeout=10, message="tcp stats on both sidecars")
    assert d["in_tcp"]["downstream_cx_total"] == conns, d
    assert d["in_cl"]["upstream_cx_total"] == conns, d
    assert d["out_tcp"]["downstream_cx_total"] == conns, d
    report(
        "tcp_echo",
        connections=conns,
        round_trips=conns * trips,
        bytes_each_way=sent,
        rtt_max_s=max(rtts),
        callee_inbound_tcp=d["in_tcp"],
        callee_cluster_cx_total=d["in_cl"].get("upstream_cx_total"),
        callee_cluster_tx_bytes=d["in_cl"].get("upstream_cx_tx_bytes_total"),
        caller_outbound_cx_total=d["out_tcp"].get("downstream_cx_total"),
    )


# --------------------------------------------------------------------------
# 2. grpc: HTTP/2 to the app
# --------------------------------------------------------------------------

GRPC_CALLER, GRPC_CALLEE = "web", "catalog"
GRPC_MESSAGE = b"\x00\x00\x00\x00\x03abc"  # uncompressed, 3 bytes


class H2cGrpc(socketserver.BaseRequestHandler):
    """A minimal h2c (prior knowledge) server: any request -> 200, application/grpc, one message, grpc-status 0.

    Records ("h2", request headers, body) per request, or ("not-h2", first bytes) when the peer did not speak HTTP/2.
    """

    def handle(self):
        app: App = self.server.app  # type: ignore[attr-defined]
        sock = self.request
        sock.settimeout(IO_TIMEOUT)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams: dict[int, dict] = {}
        first = True
        try:
            while not app.stopping.is_set():
                data = sock.recv(65536)
                if not data:
                    return
                if first and not data.startswith(b"PRI * HTTP/2.0"):
                    app.record(("not-h2", data[:80]))
                    return
                first = False
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = {"headers": dict(ev.headers), "body": b""}
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id]["body"] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        req = streams.pop(ev.stream_id)
                        app.record(("h2", req["headers"], req["body"]))
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        conn.send_data(ev.stream_id, GRPC_MESSAGE)
                        conn.send_headers(ev.stream_id, [("grpc-status", "0"), ("grpc-message", "")], end_stream=True)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            return


def h2c_call(
    host: str, port: int, authority: str, path: str, body: bytes | None, *, method: str = "POST", grpc: bool = True,
    timeout: float = IO_TIMEOUT,
) -> dict:
    """One request over h2c prior knowledge (gRPC-style by default); returns headers, data, trailers, reset
    (an error code) and the seconds from sending to the response headers (`t_headers`) and to the end (`t_end`)."""
    out = {"headers": {}, "data": b"", "trailers": {}, "reset": None, "t_headers": None, "t_end": None}
    with socket.create_connection((host, port), timeout=timeout) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
        if grpc:
            headers += [("content-type", "application/grpc"), ("te", "trailers")]
        conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            conn.send_data(sid, body, end_stream=True)
        t0 = time.monotonic()
        sock.sendall(conn.data_to_send())
        deadline = t0 + timeout
        done = False
        while not done:
            if time.monotonic() > deadline:
                raise HarnessError(f"h2c call: no end of stream after {timeout}s: {out}")
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    out["headers"] = dict(ev.headers)
                    out["t_headers"] = time.monotonic() - t0
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    out["trailers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    out["data"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    out["reset"] = ev.error_code
                    done = True
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)
        out["t_end"] = time.monotonic() - t0
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    return out


def test_grpc_service_speaks_http2_to_the_app(live_mesh, apps):
    """grpc catalog: an h2c call through web's sidecar arrives at the app over HTTP/2 and the caller gets
    the app's grpc-status 0 trailer; both hops are HTTP/2 (http2 stats on the clusters)."""
    app = apps(H2cGrpc)
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(GRPC_CALLER, calls=[GRPC_CALLEE]),
            live_mesh.service(GRPC_CALLEE, protocol="grpc", versions={"default": [app.endpoint]}),
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(GRPC_CALLER)
    back = live_mesh.start(GRPC_CALLEE)
    in_cluster, out_cluster = f"inbound|{GRPC_CALLEE}|default", f"outbound|{GRPC_CALLEE}|default"
    for sc, name in ((front, out_cluster), (back, in_cluster)):
        opts = sc.dynamic_clusters()[name]["cluster"].get("typed_extension_protocol_options", {})
        assert "http2_protocol_options" in str(opts), (sc.service, opts)

    host, port = front.outbound
    calls = []
    t0 = time.monotonic()
    for i in range(3):
        calls.append(h2c_call(host, port, GRPC_CALLEE, f"/meshc.test.Catalog/Get{i}", GRPC_MESSAGE))
    took = time.monotonic() - t0
    for c in calls:
        assert c["reset"] is None, c
        assert c["headers"].get(":status") == "200", c
        assert c["headers"].get("content-type") == "application/grpc", c
        assert c["trailers"].get("grpc-status") == "0", c
        assert c["data"] == GRPC_MESSAGE, c

    wait_until(lambda: len(app.records) >= 3, timeout=5, message="the app to record 3 requests")
    kinds = Counter(r[0] for r in app.records)
    assert kinds == {"h2": 3}, app.records
    for _, headers, body in app.records:
        assert headers[":method"] == "POST" and headers["content-type"] == "application/grpc", headers
        assert headers[":path"].startswith("/meshc.test.Catalog/Get"), headers
        assert "x-meshc-version" not in headers, headers
        assert body == GRPC_MESSAGE
    # Both clusters' upstream connections are HTTP/2.
    cx = {
        "caller": stats_of(front, f"cluster.{out_cluster}").get("upstream_cx_http2_total", 0),
        "callee": stats_of(back, f"cluster.{in_cluster}").get("upstream_cx_http2_total", 0),
    }
    assert cx["caller"] >= 1 and cx["callee"] >= 1, cx
    assert stats_of(back, f"cluster.{in_cluster}").get("upstream_cx_http1_total", 0) == 0

    # An HTTP/1.1 client (no h2) still reaches the app over HTTP/2; its response has no trailers (HTTP/1.1).
    h1 = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT)
    try:
        h1.request("POST", "/meshc.test.Catalog/H1", body=GRPC_MESSAGE,
                   headers={"Host": GRPC_CALLEE, "content-type": "application/grpc", "te": "trailers"})  # fmt: skip
        r1 = h1.getresponse()
        h1_body = r1.read()
        h1_status, h1_headers = r1.status, {k.lower(): v for k, v in r1.getheaders()}
    finally:
        h1.close()
    wait_until(lambda: len(app.records) >= 4, timeout=5, message="the app to record the HTTP/1.1 client's request")
    assert app.records[3][0] == "h2", app.records[3]
    assert h1_status == 200 and h1_body == GRPC_MESSAGE, (h1_status, h1_headers, h1_body)
    report(
        "grpc_h2",
        calls=len(calls),
        took_s=took,
        app_saw=dict(kinds),
        trailers=calls[0]["trailers"],
        http2_cx=cx,
        h1_client_status=h1_status,
        h1_client_grpc_status=h1_headers.get("grpc-status", "<none: trailers dropped on HTTP/1.1>"),
    )


# --------------------------------------------------------------------------
# 3. route idle_timeout
# --------------------------------------------------------------------------

IDLE_CALLER, IDLE_CALLEE = "portal", "reports"
IDLE = 0.3
STALL = 4.0  # how long the app stays silent (bounded; released at teardown)


class Stall(socketserver.StreamRequestHandler):
    """HTTP/1.1: /headers-then-silence sends headers and 5 of 100 body bytes, then nothing;
    /silence sends nothing at all; anything else answers at once. Silences end after STALL or at stop()."""

    def handle(self):
        app: App = self.server.app  # type: ignore[attr-defined]
        self.connection.settimeout(STALL + IO_TIMEOUT)
        try:
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                app.record((path, time.monotonic()))
                if path == "/headers-then-silence":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ncontent-type: text/plain\r\n\r\nhello")
                    self.wfile.flush()
                    app.stopping.wait(STALL)
                    return
                if path == "/silence":
                    app.stopping.wait(STALL)
                    return
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                self.wfile.flush()
        except OSError:
            return


def raw_get(host: str, port: int, authority: str, path: str) -> tuple[bytes, float, float | None, str]:
    """GET over a raw socket; returns (everything received, seconds to the end, seconds to the first byte, how it ended)."""
    with socket.create_connection((host, port), timeout=STALL + IO_TIMEOUT) as s:
        t0 = time.monotonic()
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        got, first = b"", None
        how = "eof"
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                how = "reset"
                break
            if not chunk:
                break
            if first is None:
                first = time.monotonic() - t0
            got += chunk
            if b"\r\n\r\n" in got:
                head, _, rest = got.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                if m and len(rest) >= int(m.group(1)):
                    how = "complete"
                    break
        return got, time.monotonic() - t0, first, how


def test_route_idle_timeout_ends_a_silent_stream(live_mesh, apps):
    """Route idle_timeout 300ms: an app that sends headers and then stays silent (4 s) -> the caller's sidecar
    resets the stream ~300ms after the last byte; an app silent from the start -> 504 'stream timeout' after ~300ms;
    downstream_rq_idle_timeout (not upstream_rq_timeout) rises on the caller's sidecar."""
    app = apps(Stall)
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(IDLE_CALLER, calls=[IDLE_CALLEE]),
            live_mesh.service(IDLE_CALLEE, versions={"default": [app.endpoint]}),
            {"kind": "Route", "service": IDLE_CALLEE,
             "rules": [{"to": {"default": 100}, "idle_timeout": f"{int(IDLE * 1000)}ms"}]},
        ]
    )  # fmt: skip
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(IDLE_CALLER)
    back = live_mesh.start(IDLE_CALLEE)
    host, port = front.outbound
    assert live_mesh.call_one(IDLE_CALLER, IDLE_CALLEE, "/fast").status == 200

    prefixes = {"caller_http": (front, "http.outbound_http"), "caller_cluster": (front, f"cluster.outbound|{IDLE_CALLEE}|default"),
                "callee_http": (back, "http.inbound_http"), "callee_cluster": (back, f"cluster.inbound|{IDLE_CALLEE}|default")}  # fmt: skip
    before = {k: stats_of(sc, p) for k, (sc, p) in prefixes.items()}

    # a) headers, 5 body bytes, then silence. Client over h2c, so the reset is visible as RST_STREAM.
    a = h2c_call(host, port, IDLE_CALLEE, "/headers-then-silence", None, method="GET", grpc=False, timeout=STALL + IO_TIMEOUT)
    assert a["headers"].get(":status") == "200", a
    assert a["data"] == b"hello", a  # 5 of 100 bytes: the stream did not complete
    assert a["reset"] is not None, a  # reset, not ended
    silent_for = a["t_end"] - a["t_headers"]  # the last byte came with (or right after) the headers
    assert IDLE * 0.9 <= silent_for <= IDLE + 0.5, a
    assert a["t_end"] <= IDLE + 0.7, a

    # b) silence from the start: no upstream headers -> the caller's sidecar answers itself. Envoy's docs for
    #    RouteAction.idle_timeout say 408; Envoy 1.40 answers 504 "stream timeout" (waiting on the upstream).
    b = h2c_call(host, port, IDLE_CALLEE, "/silence", None, method="GET", grpc=False, timeout=STALL + IO_TIMEOUT)
    assert b["headers"].get(":status") == "504" and b["data"] == b"stream timeout" and b["reset"] is None, b
    assert IDLE * 0.9 <= b["t_end"] <= IDLE + 0.7, b

    # c) the same as (a) for an HTTP/1.1 client: the stream reset closes the connection, after Envoy's
    #    delayed_close_timeout (default 1 s) that waits for the client to close first.
    got, took, first, how = raw_get(host, port, IDLE_CALLEE, "/headers-then-silence")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"hello", got
    assert how in ("eof", "reset"), how
    assert IDLE * 0.9 <= took <= IDLE + 1.0 + 0.7, took

    def settled():
        d = {k: delta(stats_of(sc, p), before[k]) for k, (sc, p) in prefixes.items()}
        return d if d["caller_http"].get("downstream_rq_idle_timeout", 0) >= 3 else None

    d = wait_until(settled, timeout=5, message="downstream_rq_idle_timeout on the caller's sidecar")
    assert d["caller_http"]["downstream_rq_idle_timeout"] == 3, d
    # The HTTP/1.1 connection closed only after the delayed-close wait ran out (the 1 s in (c)).
    assert d["caller_http"].get("downstream_cx_delayed_close_timeout", 0) == 1, d
    # Not the route timeout: that would count upstream_rq_timeout on the cluster.
    assert d["caller_cluster"].get("upstream_rq_timeout", 0) == 0, d
    assert [r[0] for r in app.records[-3:]] == ["/headers-then-silence", "/silence", "/headers-then-silence"], app.records
    interesting = re.compile(r"idle|timeout|reset|destroy.*active|delayed_close|4xx|408|rq_total")
    report(
        "route_idle_timeout",
        idle_timeout_s=IDLE,
        h2_headers_s=a["t_headers"],
        h2_reset_s=a["t_end"],
        h2_reset_code=a["reset"],
        silence_504_s=b["t_end"],
        h1_close_s=took,
        h1_ended_by=how,
        stats={k: {s: v for s, v in sorted(x.items()) if interesting.search(s)} for k, x in d.items()},
    )


# --------------------------------------------------------------------------
# 4. load balancing
# --------------------------------------------------------------------------

LB_CALLER = "frontend"


def _lb_mesh(live_mesh, callee: str, n: int, lb: dict):
    ups = [live_mesh.upstream(callee) for _ in range(n)]
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(LB_CALLER, calls=[callee]),
            live_mesh.service(callee, versions={"default": ups}),
            {"kind": "TrafficPolicy", "service": callee, "load_balancer": lb},
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(LB_CALLER)
    back = live_mesh.start(callee)
    return ups, front, back


@pytest.mark.parametrize("policy", ["least_request", "random"])
def test_least_request_and_random_spread_over_three_instances(live_mesh, policy):
    """60 requests, one at a time, 3 instances: every instance gets some (the callee's inbound cluster decides)."""
    callee = f"search-{policy.replace('_', '-')}"
    ups, front, back = _lb_mesh(live_mesh, callee, 3, {"policy": policy})
    assert back.dynamic_clusters()[f"inbound|{callee}|default"]["cluster"]["lb_policy"] == policy.upper()
    assert front.dynamic_clusters()[f"outbound|{callee}|default"]["cluster"]["lb_policy"] == policy.upper()
    rs = live_mesh.call(LB_CALLER, callee, "/q", 60)
    assert [r.status for r in rs] == [200] * 60
    counts = [u.count for u in ups]
    assert sum(counts) == 60 and min(counts) >= 1, counts
    report(f"lb_{policy}", requests=60, per_instance=counts)


def test_ring_hash_on_source_ip(live_mesh):
    """ring_hash on source_ip, 3 instances; 20 requests from each of 3 client source addresses.
    Each client's requests land on one instance. The hash is computed on the callee's inbound side, whose
    source address is the caller's sidecar (not the client): all clients behind one caller sidecar share it."""
    callee = "sessions"
    ups, front, back = _lb_mesh(live_mesh, callee, 3, {"policy": "ring_hash", "hash_on": {"source_ip": True}})
    assert back.dynamic_clusters()[f"inbound|{callee}|default"]["cluster"]["lb_policy"] == "RING_HASH"
    host, port = front.outbound
    clients = [live_mesh.loopback.address() for _ in range(3)] if live_mesh.loopback.multi else ["127.0.0.1"]
    landed: dict[str, list[int]] = {}
    peers: set[str] = set()
    for client in clients:
        before = [u.count for u in ups]
        for i in range(20):
            conn = http.client.HTTPConnection(host, port, timeout=IO_TIMEOUT, source_address=(client, 0))
            try:  # a new connection per request: stickiness must not come from connection reuse
                conn.request("GET", f"/s/{i}", headers={"Host": callee})
                r = conn.getresponse()
                r.read()
                assert r.status == 200
            finally:
                conn.close()
        landed[client] = [u.count - b for u, b in zip(ups, before)]
        assert sorted(landed[client]) == [0, 0, 20], (client, landed)
    for u in ups:
        for req in u.requests:
            peers.add(req.headers.get("x-forwarded-for", "-"))
    chosen = {c: d.index(20) for c, d in landed.items()}
    # Not asserted: across clients. What the callee's sidecar hashes is the source of the caller sidecar's
    # upstream connection, which on one host is 127.0.0.1 (the kernel's source for 127.0.0.0/8) for every
    # client and every caller sidecar; so today every client lands on the same instance.
    report(
        "ring_hash_source_ip",
        clients=clients,
        per_client=landed,
        distinct_instances_across_clients=len(set(chosen.values())),
        xff_seen_by_apps=sorted(peers),
    )
