"""Fractional percentages and tcp canaries, live in real Envoys.

1. Fractions: one Route on reviews with three rules, each with a 2.5 % share
   (0.1 % would be too rare to see in a bounded run): a split {v1: 97.5, v2: 2.5},
   an abort of 2.5 % of the requests, a 2.5 % mirror to v3. meshc gives Envoy
   these shares in millionths (`denominator: MILLION`, 25000), which the
   caller's config dump shows; 2,000 requests per rule land inside a binomial
   band of mean ± 5 sd (a correct Envoy misses it with probability < 1e-6,
   while a share read in hundredths - 2 % or 3 %... or 25000 % - is far off).
2. A tcp canary: ledger (`protocol: tcp`, two versions, each a TCP echo app
   that counts its connections) with a Route {v1: 90, v2: 10}. On one host the
   ledger's own sidecar draws a version per connection (tcp_proxy
   `weighted_clusters` over its inbound clusters): 400 connections through the
   caller's outbound tcp listener split 90/10 within mean ± 5 sd, as the echo
   apps and Envoy's per-cluster connection counters both count.
3. The same canary in pods (the cluster in a box, tests/harness/cluster.py):
   the caller's outbound tcp listener draws over the versions' headless
   Services, and the pod that answers is of the drawn version.

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import math
import socket
import socketserver
import textwrap
import threading
import time

import pytest

from harness import policy_yaml, wait_until

pytestmark = pytest.mark.envoy

N = 2000  # requests per fractional rule
SHARE = 2.5  # percent
TCP_N = 400  # connections of the tcp canary
IO_TIMEOUT = 5.0


def band(n: int, p: float, sds: float = 5.0) -> tuple[float, float]:
    """Binomial(n, p): mean ± `sds` standard deviations."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sds * sd, n * p + sds * sd


def fractions(obj) -> list[dict]:
    """Every FractionalPercent ({numerator, denominator}) in a config dump, in order."""
    out = []
    if isinstance(obj, dict):
        if "numerator" in obj and "denominator" in obj:
            out.append(obj)
        for v in obj.values():
            out += fractions(v)
    elif isinstance(obj, list):
        for v in obj:
            out += fractions(v)
    return out


ROUTE = f"""
kind: Route
service: reviews
rules:
  - match:
      path: {{prefix: /split}}
    to: {{v1: {100 - SHARE}, v2: {SHARE}}}
  - match:
      path: {{prefix: /abort}}
    to: {{v1: 100}}
    fault:
      abort: {{status: 503, percent: {SHARE}}}
  - to: {{v1: 100}}
    mirror:
      - {{to: v3, percent: {SHARE}}}
"""


@pytest.fixture
def reviews(live_mesh):
    ups = {v: live_mesh.upstream("reviews", v) for v in ("v1", "v2", "v3")}
    live_mesh.build(
        policy_yaml(
            [
                live_mesh.mesh_doc(),
                live_mesh.service("frontend", calls=["reviews"]),
                live_mesh.service("reviews", versions=dict(ups), default_version="v1"),
            ]
        )
        + "---\n"
        + textwrap.dedent(ROUTE).strip()
        + "\n"
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    live_mesh.start("reviews")
    live_mesh.start("frontend")
    return ups


def test_config_dump_has_millionths(live_mesh, reviews):
    """The caller's Envoy took the 2.5 % shares as 25000 per million, and the split as weights in millionths."""
    dump = json.dumps(live_mesh["frontend"].config_dump("dynamic_route_configs"))
    got = fractions(json.loads(dump))
    assert {"numerator": 25000, "denominator": "MILLION"} in got, got
    assert '"weight": 975000' in dump and '"weight": 25000' in dump, dump[:2000]
    assert "HUNDRED" not in dump.replace(" ", "")


def test_fractional_split(live_mesh, reviews):
    before = {v: u.count for v, u in reviews.items()}
    responses = live_mesh.call("frontend", "reviews", "/split", N, max_seconds=60)
    assert all(r.status == 200 for r in responses), {r.status for r in responses}
    seen = [r.json()["version"] for r in responses]
    v2 = seen.count("v2")
    low, high = band(N, SHARE / 100)
    print(f"\nsplit 97.5/2.5 over {N} requests: v1={seen.count('v1')} v2={v2} (allowed {low:.0f}..{high:.0f})")
    assert seen.count("v1") + v2 == N
    assert low <= v2 <= high
    assert {v: reviews[v].count - before[v] for v in ("v1", "v2")} == {"v1": N - v2, "v2": v2}


def test_fractional_abort(live_mesh, reviews):
    responses = live_mesh.call("frontend", "reviews", "/abort", N, max_seconds=60)
    statuses = [r.status for r in responses]
    aborted = statuses.count(503)
    low, high = band(N, SHARE / 100)
    print(f"\nabort 2.5% over {N} requests: 503={aborted} 200={statuses.count(200)} (allowed {low:.0f}..{high:.0f})")
    assert aborted + statuses.count(200) == N
    assert low <= aborted <= high
    # Envoy's fault filter counted exactly the aborts the caller saw.
    assert live_mesh["frontend"].stat("http.outbound_http.fault.aborts_injected") == aborted


def test_fractional_mirror(live_mesh, reviews):
    front, v3 = live_mesh["frontend"], reviews["v3"]
    responses = live_mesh.call("frontend", "reviews", "/mirror", N, max_seconds=60)
    assert [r.json()["version"] for r in responses] == ["v1"] * N
    names = {k: f"cluster.outbound|reviews|v3.upstream_rq_{k}" for k in ("total", "active", "pending_active")}
    last: dict[str, int] = {}

    def settled() -> bool:
        stats = front.stats(r"^cluster\.outbound\|reviews\|v3\.upstream_rq_(total|active|pending_active)$")
        last.update({k: stats.get(n, 0) for k, n in names.items()})
        return last["active"] == 0 and last["pending_active"] == 0 and v3.count == last["total"]

    wait_until(settled, 15, message=lambda: f"every copy received (v3 app {v3.count}, sidecar {last})")
    low, high = band(N, SHARE / 100)
    print(f"\nmirror 2.5% over {N} requests: copies={v3.count} (allowed {low:.0f}..{high:.0f})")
    assert low <= v3.count <= high


# --------------------------------------------------------------------------
# tcp canary
# --------------------------------------------------------------------------


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class Echo:
    """A TCP echo app that answers `<version>:` before echoing, and counts its connections."""

    def __init__(self, version: str):
        app = self
        self.version, self.accepted, self.lock = version, 0, threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with app.lock:
                    app.accepted += 1
                self.request.settimeout(IO_TIMEOUT)
                try:
                    data = self.request.recv(65536)
                    if data:
                        self.request.sendall(f"{app.version}:".encode() + data)
                except OSError:
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()


@pytest.fixture
def echoes():
    apps = {v: Echo(v) for v in ("v1", "v2")}
    yield apps
    for a in apps.values():
        a.stop()


def answer(host: str, port: int, msg: bytes) -> bytes:
    """One connection: send `msg`, read until the echo is complete or the peer closed (bounded)."""
    got = b""
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(msg)
        deadline = time.monotonic() + IO_TIMEOUT
        while not got.endswith(msg) and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


def test_tcp_canary(live_mesh, echoes):
    """{v1: 90, v2: 10} on a tcp service: 400 connections, v2's count within 40 ± 5 sd (sd 6): 10..70."""
    live_mesh.build(
        policy_yaml(
            [
                live_mesh.mesh_doc(),
                live_mesh.service("web", calls=["ledger"]),
                live_mesh.service(
                    "ledger", protocol="tcp", versions={v: [a.endpoint] for v, a in echoes.items()}, default_version="v1"
                ),
            ]
        )
        + "---\nkind: Route\nservice: ledger\nrules:\n  - to: {v1: 90, v2: 10}\n"
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    ledger = live_mesh.start("ledger")
    web = live_mesh.start("web")
    port = next(s for s in live_mesh.last_build.ir.sidecars if s.service == "ledger").listeners[0].port
    host, lport = web.listener(f"outbound|tcp|{port}")
    seen = {"v1": 0, "v2": 0}
    started = time.monotonic()
    for i in range(TCP_N):
        if time.monotonic() - started > 120:
            pytest.fail(f"tcp canary: only {i} of {TCP_N} connections in 120 s")
        msg = f"hello-{i}\n".encode()
        got = answer(host, lport, msg)
        version, _, rest = got.partition(b":")
        assert rest == msg, got
        seen[version.decode()] += 1
    low, high = band(TCP_N, 0.10)
    stats = ledger.stats(r"^cluster\.inbound\|ledger\|v[12]\.upstream_cx_total$")
    by_cluster = {v: stats.get(f"cluster.inbound|ledger|{v}.upstream_cx_total", 0) for v in seen}
    print(f"\ntcp canary 90/10 over {TCP_N} connections: {seen} (v2 allowed {low:.0f}..{high:.0f}); "
          f"ledger's sidecar connected {by_cluster}")
    assert seen["v1"] + seen["v2"] == TCP_N
    assert low <= seen["v2"] <= high
    assert {v: a.accepted for v, a in echoes.items()} == seen
    assert by_cluster == seen
    # The draw happens on ledger's sidecar (one host): its tcp_proxy has the weighted clusters.
    dump = json.dumps(ledger.config_dump("dynamic_listeners"))
    assert "weighted_clusters" in dump and '"weight": 90' in dump and '"weight": 10' in dump


# --------------------------------------------------------------------------
# tcp canary in pods (the cluster in a box: tests/harness/cluster.py)
# --------------------------------------------------------------------------

POD_N = 300  # connections of the tcp canary in pods


def _over_tcp(netns: str, port: int) -> dict:
    """One connection from inside `netns` to its sidecar's outbound tcp listener; an HTTP request as the
    bytes (the tcp proxy does not read them; the pod's app answers JSON naming its version and pod)."""
    from harness.netns import socket_in

    sock = socket_in(netns)
    sock.settimeout(IO_TIMEOUT)
    got = b""
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: ledger\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
            head, _, body = got.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
    finally:
        sock.close()
    return json.loads(got.partition(b"\r\n\r\n")[2])


def test_tcp_canary_in_pods_is_drawn_by_the_caller(kube_cluster):
    """{v1: 80, v2: 20} on a tcp service in pods: the caller's outbound tcp listener draws each connection's
    version over the versions' headless Services; 300 connections, v2 within 60 ± 5 sd (sd 6.9): 25..95,
    and every pod that answered is of the version the caller's sidecar connected to."""
    c = kube_cluster
    c.build([
        c.mesh_doc(),
        {"kind": "Service", "name": "frontend", "port": 9080, "app_port": 9081, "calls": ["ledger"]},
        {"kind": "Service", "name": "ledger", "protocol": "tcp", "port": 5432, "app_port": 9081,
         "versions": {"v1": {}, "v2": {}}, "default_version": "v1"},
        {"kind": "Route", "service": "ledger", "rules": [{"to": {"v1": 80, "v2": 20}}]},
    ])
    assert c.last_build.ok, [d.render() for d in c.last_build.diagnostics]
    c.run_pods([("frontend", "default", 1), ("ledger", "v1", 2), ("ledger", "v2", 1)])
    caller = c.pod("frontend-default-0")
    c.wait_routable(caller, "ledger")
    seen: dict[str, int] = {}
    pods: dict[str, int] = {}
    started = time.monotonic()
    for i in range(POD_N):
        if time.monotonic() - started > 120:
            pytest.fail(f"tcp canary in pods: only {i} of {POD_N} connections in 120 s")
        answer = _over_tcp(caller.netns, 5432)
        assert answer["service"] == "ledger", answer
        seen[answer["version"]] = seen.get(answer["version"], 0) + 1
        pods[answer["pod"]] = pods.get(answer["pod"], 0) + 1
    stats = {v: caller.envoy.stat(f"cluster.outbound|ledger|{v}.upstream_cx_total") for v in ("v1", "v2")}
    low, high = band(POD_N, 0.20)
    print(f"\ntcp canary 80/20 in pods over {POD_N} connections: {seen} by pod {pods} "
          f"(v2 allowed {low:.0f}..{high:.0f}); the caller's sidecar connected {stats}")
    assert sum(seen.values()) == POD_N and set(seen) <= {"v1", "v2"}
    assert low <= seen.get("v2", 0) <= high
    assert stats == {"v1": seen.get("v1", 0), "v2": seen.get("v2", 0)}  # the caller drew, the pods agree
    assert all(p.startswith(("ledger-v1-", "ledger-v2-")) for p in pods)
