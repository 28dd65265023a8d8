"""Connection settings, live: TrafficPolicy `connection_pool` max_requests_per_connection, idle_timeout,
tcp_keepalive and upstream_protocol, in real Envoy sidecars (`websockets`: tests/test_live_websockets.py).

Mesh under test: <caller> -> <callee>; the test process plays the caller's app. A TrafficPolicy's pool
applies to the callee's clusters on the caller's sidecar (to the callee's sidecar) and on the callee's
inbound side (to its app), so the app sees the connections of the inbound cluster.

Every wait is bounded (deadlines, socket timeouts, `wait_until`); nothing sleeps a fixed time.
"""

from __future__ import annotations

import re
import socket
import socketserver
import subprocess

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from harness.socketapp import App
from harness import report, wait_until

pytestmark = pytest.mark.envoy

IO_TIMEOUT = 5.0
CALLER, CALLEE = "web", "catalog"
IN_CLUSTER, OUT_CLUSTER = f"inbound|{CALLEE}|default", f"outbound|{CALLEE}|default"


def start_pair(live_mesh, app_endpoint: str, **policy):
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(CALLER, calls=[CALLEE]),
            live_mesh.service(CALLEE, versions={"default": [app_endpoint]}),
            {"kind": "TrafficPolicy", "service": CALLEE, **policy},
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    return live_mesh.start(CALLER), live_mesh.start(CALLEE)


# --------------------------------------------------------------------------
# 1. max_requests_per_connection
# --------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [None, 3])
def test_max_requests_per_connection_opens_a_new_connection_every_n_requests(live_mesh, limit):
    """12 requests one after the other: with max_requests_per_connection 3 the app sees 4 connections
    (new client ports) and each sidecar's cluster opens 4; without it, one connection carries all 12."""
    app = live_mesh.upstream(CALLEE)
    pool = {"max_requests_per_connection": limit} if limit else {}
    front, back = start_pair(live_mesh, app.endpoint, connection_pool=pool)
    n = 12
    rs = live_mesh.call(CALLER, CALLEE, "/items", n=n)
    assert [r.status for r in rs] == [200] * n
    ports = [req.client for req in app.requests]
    connections = len(set(ports))
    expected = n // limit if limit else 1
    assert connections == expected, ports
    if limit:
        # Each connection carried exactly `limit` requests, in order.
        runs = [ports[i : i + limit] for i in range(0, n, limit)]
        assert all(len(set(run)) == 1 for run in runs), ports
    out_stats, in_stats = front.cluster_stats(OUT_CLUSTER), back.cluster_stats(IN_CLUSTER)
    assert out_stats.get("upstream_cx_total") == expected, out_stats
    assert in_stats.get("upstream_cx_total") == expected, in_stats
    # Envoy counts the connections it closed for reaching the limit (the last one too, once it carried 3).
    closed = in_stats.get("upstream_cx_max_requests", 0)
    assert closed == (expected if limit else 0), in_stats
    report(
        "max_requests_per_connection",
        limit=limit, requests=n, app_connections=connections,
        caller_cx_total=out_stats.get("upstream_cx_total"), callee_cx_total=in_stats.get("upstream_cx_total"),
        callee_cx_max_requests=closed, caller_cx_max_requests=out_stats.get("upstream_cx_max_requests", 0),
    )


# --------------------------------------------------------------------------
# 2. idle_timeout
# --------------------------------------------------------------------------


def test_idle_timeout_closes_idle_upstream_connections(live_mesh):
    """idle_timeout 500ms: after one request both sidecars close their idle connection
    (upstream_cx_idle_timeout), and the next request comes to the app on a new connection."""
    app = live_mesh.upstream(CALLEE)
    front, back = start_pair(live_mesh, app.endpoint, connection_pool={"idle_timeout": "500ms"})
    assert live_mesh.call_one(CALLER, CALLEE, "/first").status == 200

    def idled():
        o, i = front.cluster_stats(OUT_CLUSTER), back.cluster_stats(IN_CLUSTER)
        if o.get("upstream_cx_idle_timeout", 0) >= 1 and i.get("upstream_cx_idle_timeout", 0) >= 1:
            return o, i
        return None

    o, i = wait_until(idled, timeout=10, message="upstream_cx_idle_timeout on both sidecars")
    assert o.get("upstream_cx_active", 0) == 0 and i.get("upstream_cx_active", 0) == 0, (o, i)
    assert live_mesh.call_one(CALLER, CALLEE, "/second").status == 200
    first, second = (req.client for req in app.requests)
    assert first != second, (first, second)
    report(
        "idle_timeout",
        idle_timeout="500ms", caller_cx_idle_timeout=o["upstream_cx_idle_timeout"],
        callee_cx_idle_timeout=i["upstream_cx_idle_timeout"], app_connections=len({first, second}),
    )


# --------------------------------------------------------------------------
# 3. tcp_keepalive
# --------------------------------------------------------------------------


def socket_timers(port: int) -> list[str]:
    """One entry per established TCP connection to 127.0.0.1:`port`: its `ss -o` timer (e.g. `keepalive,59sec,0`),
    or "" when it runs none."""
    out = subprocess.run(
        ["ss", "-tnoH", "state", "established", "dst", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout
    timers = []
    for line in out.splitlines():
        m = re.search(r"timer:\(([^)]*)\)", line)
        timers.append(m.group(1) if m else "")
    return timers


def _seconds(timer: str) -> float:
    m = re.match(r"keepalive,(\d+(?:\.\d+)?)(ms|sec|min)", timer)
    assert m, timer
    return float(m.group(1)) * {"ms": 0.001, "sec": 1, "min": 60}[m.group(2)]


@pytest.mark.parametrize("keepalive", [False, True])
def test_tcp_keepalive_reaches_the_socket(live_mesh, keepalive):
    """tcp_keepalive {probes: 3, time: 60s, interval: 10s}: Envoy accepted the option on both clusters (config
    dump), and the callee's sidecar's idle socket to the app runs a keepalive timer (`ss -o`) of at most 60s;
    without the option the same socket runs no timer."""
    app = live_mesh.upstream(CALLEE)
    ka = {"probes": 3, "time": "60s", "interval": "10s"}
    front, back = start_pair(live_mesh, app.endpoint, connection_pool={"tcp_keepalive": ka} if keepalive else {})
    want = {"keepalive_probes": 3, "keepalive_time": 60, "keepalive_interval": 10}
    for sc, name in ((front, OUT_CLUSTER), (back, IN_CLUSTER)):
        got = sc.dynamic_clusters()[name]["cluster"].get("upstream_connection_options", {}).get("tcp_keepalive")
        assert got == (want if keepalive else None), (sc.service, got)
        assert not sc.config_problems(), sc.config_problems()
    assert live_mesh.call_one(CALLER, CALLEE, "/").status == 200
    timers = wait_until(lambda: socket_timers(app.port) or None, timeout=5, message="the sidecar's socket in ss")
    assert len(timers) == 1, timers  # the callee's sidecar's one pooled connection to the app
    if keepalive:
        assert timers[0].startswith("keepalive,") and 0 < _seconds(timers[0]) <= 60, timers
    else:
        assert timers == [""], timers
    report("tcp_keepalive", config=want if keepalive else None, socket_timers=timers)


# --------------------------------------------------------------------------
# 4. upstream_protocol: http2
# --------------------------------------------------------------------------


class H2cOrHttp1(socketserver.BaseRequestHandler):
    """h2c (prior knowledge) or HTTP/1.1, told apart by the first bytes; records ("h2" | "http/1.1", path) and
    answers 200 with the protocol it spoke as the body."""

    def handle(self):
        app: App = self.server.app  # type: ignore[attr-defined]
        sock = self.request
        sock.settimeout(IO_TIMEOUT)
        try:
            data = sock.recv(65536)
            if data.startswith(b"PRI * HTTP/2.0"):
                self._h2(app, sock, data)
            else:
                self._h1(app, sock, data)
        except (OSError, h2.exceptions.ProtocolError):
            return

    def _h1(self, app, sock, data):
        while data:
            while b"\r\n\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    return
                data += more
            head, data = data.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1].decode()
            app.record(("http/1.1", path))
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nhttp/1.1")
            if not data:
                data = sock.recv(65536)

    def _h2(self, app, sock, data):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        paths: dict[int, str] = {}
        while data and not app.stopping.is_set():
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    paths[ev.stream_id] = dict(ev.headers)[":path"]
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    app.record(("h2", paths.pop(ev.stream_id)))
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "text/plain")])
                    conn.send_data(ev.stream_id, b"h2", end_stream=True)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    return
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            data = sock.recv(65536)


@pytest.mark.parametrize("upstream_protocol", [None, "http2"])
def test_upstream_protocol_http2_reaches_the_app_as_h2c(live_mesh, apps, upstream_protocol):
    """HTTP/1.1 requests from the caller's app: with upstream_protocol http2 the app gets them over h2c
    (and the sidecars speak HTTP/2 between them: http2 stats on the caller's cluster); without, HTTP/1.1."""
    app = apps(H2cOrHttp1)
    pool = {"upstream_protocol": upstream_protocol} if upstream_protocol else {}
    front, back = start_pair(live_mesh, app.endpoint, connection_pool=pool)
    rs = live_mesh.call(CALLER, CALLEE, "/search", n=5)
    want = "h2" if upstream_protocol else "http/1.1"
    assert [(r.status, r.text) for r in rs] == [(200, want)] * 5
    wait_until(lambda: len(app.records) >= 5, timeout=5, message="the app to record 5 requests")
    assert app.records == [(want, "/search")] * 5, app.records
    out_stats = front.cluster_stats(OUT_CLUSTER)
    h2_streams = {k: v for k, v in front.stats(rf"^cluster\.{re.escape(OUT_CLUSTER)}\.http2\.").items()}
    if upstream_protocol:
        assert out_stats.get("upstream_cx_http2_total") == 1, out_stats
    else:
        assert out_stats.get("upstream_cx_http2_total", 0) == 0 and out_stats.get("upstream_cx_http1_total") == 1
    report(
        "upstream_protocol", setting=upstream_protocol, app_saw=sorted({p for p, _ in app.records}),
        caller_cx_http2_total=out_stats.get("upstream_cx_http2_total", 0),
        caller_cx_http1_total=out_stats.get("upstream_cx_http1_total", 0), http2_stats=len(h2_streams),
    )


def h2c_get(host: str, port: int, authority: str, path: str) -> tuple[str, bytes]:
    """One GET over h2c with prior knowledge: (status, body)."""
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body = "", b""
        for _ in range(100):  # bounded: a few frames are expected
            data = sock.recv(65536)
            if not data:
                break
            ended = False
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = dict(ev.headers)[":status"]
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                    ended = True
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)
            if ended:
                break
        return status, body


def test_upstream_protocol_client_follows_the_request(live_mesh, apps):
    """upstream_protocol client: an HTTP/1.1 request from the caller's app reaches the app over HTTP/1.1, an
    h2c one over HTTP/2, through both sidecars."""
    app = apps(H2cOrHttp1)
    front, back = start_pair(live_mesh, app.endpoint, connection_pool={"upstream_protocol": "client"})
    r = live_mesh.call_one(CALLER, CALLEE, "/one")
    assert (r.status, r.text) == (200, "http/1.1")
    host, port = front.outbound
    assert h2c_get(host, port, CALLEE, "/two") == ("200", b"h2")
    wait_until(lambda: len(app.records) >= 2, timeout=5, message="the app to record 2 requests")
    assert app.records == [("http/1.1", "/one"), ("h2", "/two")], app.records
    report("upstream_protocol_client", app_saw=app.records)
