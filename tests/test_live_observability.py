"""Observability, live: Prometheus metrics, Zipkin tracing, JSON access logs and request ids from real Envoy sidecars.

Mesh: frontend -> checkout, plus a `zipkin` Service whose app is a fake Zipkin
collector (`FakeZipkin`: POST /api/v2/spans with Zipkin JSON v2, spans recorded).
The test process plays frontend's app (calls its outbound listener with
`Host: checkout`); checkout's app is an `Upstream`.

Each test switches on only the part it is about, so one broken part does not
hide the others. No fixed sleeps:

- Zipkin spans are buffered (runtime `tracing.zipkin.min_flush_spans`, default 5);
  the tests set it to 1 through the admin runtime layer the bootstrap declares,
  so every finished span is sent at once.
- Access logs are buffered by Envoy (flushed every 10 s by default);
  admin `POST /reopen_logs` wakes the flush thread, polled until the line is there.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid

import pytest

from harness import Reply, report, wait_until

pytestmark = pytest.mark.envoy

CALLER, CALLEE, COLLECTOR = "frontend", "checkout", "zipkin"
TAGS = {"mesh": "observability-live"}
LOG_FIELDS = {
    "start_time", "method", "path", "status", "response_flags", "duration_ms",
    "upstream_host", "request_id", "trace_id", "source", "destination",
}  # fmt: skip


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class FakeZipkin:
    """The `zipkin` Service's app: a Zipkin v2 HTTP collector that records the spans it is sent."""

    def __init__(self, live_mesh):
        self.app = live_mesh.upstream(COLLECTOR)
        self.app.handler = self._handle
        self._lock = threading.Lock()
        self._spans: list[dict] = []
        self.posts = 0
        self.rejected: list[str] = []

    def _handle(self, req):
        if req.method != "POST" or req.path.split("?")[0] != "/api/v2/spans":
            self.rejected.append(f"{req.method} {req.path}")
            return Reply(404, body=b"")
        try:
            spans = json.loads(req.body)
            assert isinstance(spans, list) and all(isinstance(s, dict) and "traceId" in s for s in spans)
        except (ValueError, AssertionError):
            self.rejected.append(f"bad body {req.body[:200]!r}")
            return Reply(400, body=b"")
        with self._lock:
            self._spans.extend(spans)
            self.posts += 1
        return Reply(202, body=b"")

    @property
    def spans(self) -> list[dict]:
        with self._lock:
            return list(self._spans)

    def spans_of(self, trace_id: str) -> list[dict]:
        return [s for s in self.spans if s.get("traceId") == trace_id]


def http_get(host: str, port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def prometheus_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the series `name{labels}` (exactly these labels, any order) in a Prometheus text page."""
    want = {(k, v) for k, v in labels.items()}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name + "{"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)\{(.*)\} (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = set(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        if got == want:
            return float(m.group(3))
    return None


def access_lines(text: str) -> list[dict]:
    """Every line of `text` that is a JSON object (access log lines among Envoy's own log lines)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))  # a line that starts like JSON must parse
    return out


def flushed_lines(sidecar, read, predicate, timeout: float = 5.0) -> list[dict]:
    """Poll (admin /reopen_logs flushes Envoy's access log buffers) until `predicate(lines)`; returns the lines."""
    holder: list[list[dict]] = [[]]

    def check():
        sidecar.admin_post("/reopen_logs")
        holder[0] = access_lines(read())
        return predicate(holder[0])

    wait_until(check, timeout, message=lambda: f"access log lines on '{sidecar.service}' (have {holder[0]})")
    return holder[0]


def fast_zipkin(*sidecars) -> None:
    """Send every finished span at once (runtime `tracing.zipkin.min_flush_spans` 1, admin runtime layer)."""
    for sc in sidecars:
        status, body = sc.admin_post("/runtime_modify?tracing.zipkin.min_flush_spans=1")
        assert status == 200, (sc.service, status, body)


def build(live_mesh, checkout_app, collector=None, *, mesh_obs=None, caller_obs=None, callee_obs=None, static=False):
    """frontend -> checkout, plus the zipkin collector service (tracing and access logs off for itself)."""
    zipkin_app = collector.app if collector is not None else live_mesh.upstream(COLLECTOR)
    docs = [
        live_mesh.mesh_doc(observability=mesh_obs or {}),
        live_mesh.service(CALLER, calls=[CALLEE], **({"observability": caller_obs} if caller_obs else {})),
        live_mesh.service(CALLEE, versions={"default": checkout_app}, **({"observability": callee_obs} if callee_obs else {})),
        live_mesh.service(
            COLLECTOR,
            versions={"default": zipkin_app},
            observability={"metrics": False, "tracing": False, "access_log": False},
        ),
    ]
    result = live_mesh.build(docs, static=static)
    assert result.ok, [d.render() for d in result.diagnostics]
    return result


# --------------------------------------------------------------------------
# 1. metrics
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_metrics_endpoint_counts_requests_and_exposes_nothing_else(live_mesh, mode):
    """GET <sidecar address>:<metrics port>/stats/prometheus on the caller's sidecar counts the requests per
    upstream cluster and response class; admin paths are 404 there; keep_prefixes drops other stats."""
    app = live_mesh.upstream(CALLEE)
    front_addr = live_mesh.placement(CALLER).address
    back_addr = live_mesh.placement(CALLEE).address
    front_port, back_port = live_mesh.loopback.port(front_addr), live_mesh.loopback.port(back_addr)
    # Keep xDS health (cluster_manager.cds, http.inbound_http.rds) so the harness can see the config was accepted.
    keep = ["cluster.inbound", "http.inbound", "cluster_manager.cds"]
    build(
        live_mesh,
        app,
        caller_obs={"metrics": {"port": front_port}},
        callee_obs={"metrics": {"port": back_port, "keep_prefixes": keep}},
        static=(mode == "static"),
    )
    front = live_mesh.start(CALLER)
    back = live_mesh.start(CALLEE)

    app.script(*([200] * 3), 503)
    statuses = [r.status for r in live_mesh.call(CALLER, CALLEE, "/buy", 4)]
    assert statuses == [200, 200, 200, 503], statuses

    cluster = f"outbound|{CALLEE}|default"
    page = {}

    def scraped():
        status, page["text"] = http_get(front_addr, front_port, "/stats/prometheus")
        assert status == 200, page["text"][:300]
        return prometheus_value(page["text"], "envoy_cluster_upstream_rq_total", {"envoy_cluster_name": cluster}) == 4

    wait_until(scraped, 5, message="4 requests in envoy_cluster_upstream_rq_total on the caller's metrics port")
    text = page["text"]
    by_class = {
        c: prometheus_value(text, "envoy_cluster_upstream_rq_xx", {"envoy_response_code_class": c, "envoy_cluster_name": cluster})
        for c in ("2", "5")
    }
    by_code = {
        c: prometheus_value(text, "envoy_cluster_upstream_rq", {"envoy_response_code": c, "envoy_cluster_name": cluster})
        for c in ("200", "503")
    }
    assert by_class == {"2": 3.0, "5": 1.0}, by_class
    assert by_code == {"200": 3.0, "503": 1.0}, by_code
    # The same counters on the callee's side, on its inbound cluster.
    _, back_text = http_get(back_addr, back_port, "/stats/prometheus")
    assert prometheus_value(
        back_text, "envoy_cluster_upstream_rq_xx", {"envoy_response_code_class": "2", "envoy_cluster_name": f"inbound|{CALLEE}|default"}
    ) == 3.0

    # Only /stats/prometheus: the admin interface's other paths are not reachable through the metrics port.
    others = {}
    for method, path in [("GET", "/config_dump"), ("POST", "/quitquitquit"), ("GET", "/stats"), ("GET", "/clusters"),
                         ("POST", "/runtime_modify?x=1"), ("GET", "/ready"), ("GET", "/stats/prometheus/../config_dump")]:  # fmt: skip
        others[path] = http_get(front_addr, front_port, path, method)[0]
    assert set(others.values()) == {404}, others
    assert front.running and back.running  # /quitquitquit did not reach the admin interface

    # keep_prefixes: the callee keeps cluster.inbound*/http.inbound*/cluster_manager.cds* only.
    names = {line.split("{")[0].split(" ")[0] for line in back_text.splitlines() if line and not line.startswith("#")}
    assert "envoy_server_uptime" not in names and "envoy_listener_manager_total_listeners_active" not in names, sorted(names)
    assert not any(n.startswith(("envoy_server_", "envoy_runtime_", "envoy_listener_")) for n in names), sorted(names)
    assert "envoy_server_uptime" in text  # the caller keeps everything
    assert back.stats(r"^server\.") == {}
    report(f"metrics[{mode}]", statuses=statuses, by_class=by_class, by_code=by_code, other_paths=others,
           callee_series=len(names))  # fmt: skip


# --------------------------------------------------------------------------
# 2. tracing
# --------------------------------------------------------------------------


def _tracing_mesh(live_mesh, sampling: int):
    app = live_mesh.upstream(CALLEE)
    collector = FakeZipkin(live_mesh)
    build(
        live_mesh,
        app,
        collector,
        mesh_obs={"tracing": {"provider": "zipkin", "collector": COLLECTOR, "sampling": sampling, "tags": TAGS}},
    )
    live_mesh.start(COLLECTOR)
    front = live_mesh.start(CALLER)
    back = live_mesh.start(CALLEE)
    fast_zipkin(front, back)
    return app, collector, front, back


def _one_traced_request(live_mesh, app, collector):
    r = live_mesh.call_one(CALLER, CALLEE, "/trace-me")
    assert r.status == 200, r.text
    seen = app.requests[-1].headers
    trace_id = seen.get("x-b3-traceid")
    assert trace_id, seen  # the sidecars propagate B3
    spans = wait_until(
        lambda: (lambda got: got if {s.get("localEndpoint", {}).get("serviceName") for s in got} >= {CALLER, CALLEE} else None)(
            collector.spans_of(trace_id)
        ),
        5,
        message=lambda: f"spans of trace {trace_id} from both sidecars (collector has {collector.spans}, rejected {collector.rejected})",
    )
    return trace_id, seen, spans


def test_tracing_spans_from_both_sidecars_share_one_trace(live_mesh):
    """One request frontend -> checkout: the fake collector gets a span from each sidecar, one traceId, the custom tag."""
    app, collector, front, back = _tracing_mesh(live_mesh, sampling=100)
    t0 = time.monotonic()
    trace_id, seen, spans = _one_traced_request(live_mesh, app, collector)
    took = time.monotonic() - t0
    by_service = {s["localEndpoint"]["serviceName"]: s for s in spans}
    assert set(by_service) == {CALLER, CALLEE}, spans
    assert len(spans) == 2, spans
    for s in spans:
        assert s["traceId"] == trace_id
        assert s["tags"].get("mesh") == TAGS["mesh"], s["tags"]
        assert s["tags"].get("guid:x-request-id") == seen["x-request-id"], s["tags"]
    assert by_service[CALLER]["tags"]["upstream_cluster"] == f"outbound|{CALLEE}|default"
    assert by_service[CALLEE]["tags"]["upstream_cluster"] == f"inbound|{CALLEE}|default"
    assert collector.rejected == []
    report("tracing", trace_id=trace_id, spans=len(spans), posts=collector.posts, first_spans_s=took,
           kinds={k: s.get("kind") for k, s in by_service.items()})  # fmt: skip


def test_tracing_caller_span_is_client_callee_span_is_server(live_mesh):
    """The caller's sidecar reports the call as a CLIENT span, the callee's as the SERVER side of it
    (B3 shared span: same id); two SERVER spans would make the callee look like a second root."""
    app, collector, front, back = _tracing_mesh(live_mesh, sampling=100)
    trace_id, seen, spans = _one_traced_request(live_mesh, app, collector)
    kinds = {s["localEndpoint"]["serviceName"]: s.get("kind") for s in spans}
    assert kinds == {CALLER: "CLIENT", CALLEE: "SERVER"}, kinds


def test_tracing_sampling_zero_sends_no_spans(live_mesh):
    """sampling 0: a request that starts no trace yields no span; a request that arrives already sampled
    (x-b3-sampled: 1 from the app) is still traced, which proves the collector path works and flushed."""
    app, collector, front, back = _tracing_mesh(live_mesh, sampling=0)
    n = 5
    rs = live_mesh.call(CALLER, CALLEE, "/unsampled", n)
    assert [r.status for r in rs] == [200] * n
    unsampled = app.requests[-n:]
    assert all(q.headers.get("x-b3-sampled") == "0" for q in unsampled), [q.headers for q in unsampled]
    unsampled_ids = {q.headers["x-request-id"] for q in unsampled}

    control = uuid.uuid4().hex[:16]
    r = live_mesh.call_one(CALLER, CALLEE, "/sampled-by-app", headers={"x-b3-traceid": control, "x-b3-spanid": control, "x-b3-sampled": "1"})
    assert r.status == 200
    wait_until(lambda: len(collector.spans_of(control)) >= 2, 5, message=lambda: f"the control trace's spans (have {collector.spans})")
    others = [s for s in collector.spans if s["traceId"] != control]
    assert others == [], others
    assert not any(s["tags"].get("guid:x-request-id") in unsampled_ids for s in collector.spans)
    report("tracing_sampling_0", unsampled_requests=n, spans_total=len(collector.spans), control_spans=len(collector.spans_of(control)))


# --------------------------------------------------------------------------
# 3. access logs, 4. request ids
# --------------------------------------------------------------------------


def test_access_log_one_json_line_per_sidecar_crossed(live_mesh):
    """One request: exactly one JSON line on frontend (outbound) and one on checkout (inbound), with the documented fields."""
    app = live_mesh.upstream(CALLEE)
    build(live_mesh, app, mesh_obs={"access_log": {"to": "stdout", "format": "json"}})
    front = live_mesh.start(CALLER)
    back = live_mesh.start(CALLEE)
    r = live_mesh.call_one(CALLER, CALLEE, "/orders/42?x=1", method="POST", body=b"{}")
    assert r.status == 200
    rid = app.requests[-1].headers["x-request-id"]

    def mine(lines):
        return [l for l in lines if l.get("request_id") == rid]

    t0 = time.monotonic()
    front_lines = flushed_lines(front, front.log_text, lambda ls: mine(ls))
    back_lines = flushed_lines(back, back.log_text, lambda ls: mine(ls))
    took = time.monotonic() - t0
    assert len(front_lines) == 1 and len(back_lines) == 1, (front_lines, back_lines)
    out, inn = front_lines[0], back_lines[0]
    for line in (out, inn):
        assert LOG_FIELDS <= set(line), sorted(LOG_FIELDS - set(line))
        assert (line["method"], line["path"], line["status"], line["response_flags"]) == ("POST", "/orders/42?x=1", 200, "-"), line
        assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["start_time"]), line["start_time"]
    assert out["direction"] == "outbound" and inn["direction"] == "inbound"
    assert out["source"] == CALLER and out["destination"] == f"outbound|{CALLEE}|default"
    assert inn["destination"] == CALLEE and inn["source"] is None  # the caller's SPIFFE ID, none without mTLS
    assert out["upstream_host"] == "%s:%d" % back.inbound
    assert inn["upstream_host"] == app.endpoint
    report("access_log", wait_s=took, outbound=out, inbound=inn)


def test_access_log_only_errors_to_file(live_mesh, tmp_path):
    """checkout logs `only: errors` to a file: a 200 writes nothing there, a 503 writes its line."""
    app = live_mesh.upstream(CALLEE)
    log_file = tmp_path / "checkout-errors.log"
    build(
        live_mesh,
        app,
        mesh_obs={"access_log": {"to": "stdout"}},
        callee_obs={"access_log": {"to": "file", "path": str(log_file), "only": "errors"}},
    )
    front = live_mesh.start(CALLER)
    back = live_mesh.start(CALLEE)
    app.script(200, 503)
    ok, bad = live_mesh.call(CALLER, CALLEE, "/pay", 2)
    assert (ok.status, bad.status) == (200, 503)
    ok_id, bad_id = (q.headers["x-request-id"] for q in app.requests[-2:])

    read = lambda: log_file.read_text() if log_file.exists() else ""  # noqa: E731
    lines = flushed_lines(back, read, lambda ls: any(l.get("request_id") == bad_id for l in ls))
    # The 200 came first on the same sidecar, so its line (if any) would be in the file before the 503's.
    assert [(l["request_id"], l["status"]) for l in lines] == [(bad_id, 503)], lines
    assert "request_id" not in back.log_text()  # the file sink replaces stdout
    # frontend logs everything (only: all) to stdout
    front_lines = flushed_lines(front, front.log_text, lambda ls: {ok_id, bad_id} <= {l.get("request_id") for l in ls})
    assert sorted(l["status"] for l in front_lines) == [200, 503], front_lines
    report("access_log_errors", file_lines=len(lines), front_lines=len(front_lines))


def test_request_id_is_the_same_in_the_app_and_both_access_logs(live_mesh):
    """The x-request-id the checkout app receives is the request_id of both sidecars' lines (generated once, kept)."""
    app = live_mesh.upstream(CALLEE)
    build(live_mesh, app, mesh_obs={"access_log": {"to": "stdout", "format": "json"}})
    front = live_mesh.start(CALLER)
    back = live_mesh.start(CALLEE)
    n = 3
    assert [r.status for r in live_mesh.call(CALLER, CALLEE, "/rid", n)] == [200] * n
    app_ids = [q.headers.get("x-request-id") for q in app.requests[-n:]]
    assert all(app_ids) and len(set(app_ids)) == n, app_ids
    front_lines = flushed_lines(front, front.log_text, lambda ls: len([l for l in ls if l.get("path") == "/rid"]) >= n)
    back_lines = flushed_lines(back, back.log_text, lambda ls: len([l for l in ls if l.get("path") == "/rid"]) >= n)
    front_ids = [l["request_id"] for l in front_lines if l["path"] == "/rid"]
    back_ids = [l["request_id"] for l in back_lines if l["path"] == "/rid"]
    assert front_ids == app_ids, (front_ids, app_ids)
    assert back_ids == app_ids, (back_ids, app_ids)

    # An id the app already carries is kept all the way, too.
    given = str(uuid.uuid4())
    assert live_mesh.call_one(CALLER, CALLEE, "/rid-given", headers={"x-request-id": given}).status == 200
    assert app.requests[-1].headers["x-request-id"] == given
    for sc in (front, back):
        got = flushed_lines(sc, sc.log_text, lambda ls: any(l.get("path") == "/rid-given" for l in ls))
        assert [l["request_id"] for l in got if l["path"] == "/rid-given"] == [given], sc.service
    report("request_id", app=app_ids, given=given)
