"""`meshc import istio` on Istio's circuit-breaking and request-timeouts tasks (tests/import/istio-tasks/input), run
in real Envoy on loopback.

The import is done in-process (`import_istio`, what `meshc import istio` calls) and checked against the committed
fixture first, then relocated to loopback as test_live_import_bookinfo.py does: addresses and ports change, each
version's pods are test apps (httpbin's one version has two pods, its Deployment's `replicas: 2`); the pool
limits, outlier detection, timeout and fault are the imported ones, unchanged. The test process plays the callers'
apps (fortio, productpage). Then what the Istio docs say of the original:

- circuit breaking (DestinationRule httpbin: 1 connection, 1 pending request, 1 request per connection): calls
  from fortio, several at once, partly fail fast with 503 (`x-envoy-overloaded`), and fortio's sidecar counts
  them in `upstream_rq_pending_overflow` of its httpbin cluster;
- outlier detection (consecutive5xxErrors 1, interval 1s, baseEjectionTime 3m, maxEjectionPercent 100): one 500
  from one httpbin pod ejects that pod (`failed_outlier_check`, `ejections_enforced_total`) and the following
  requests all go to the other pod;
- request timeouts (reviews `timeout: 0.5s` while every call to ratings is delayed 2s): productpage gets 504 from
  reviews while reviews' own call to ratings still answers 200 after the delay; imported without the timeout,
  productpage gets that 200.

meshc puts a TrafficPolicy on the caller's cluster *and* on the callee's inbound cluster (see
test_live_protection.py): the overflow happens on fortio's sidecar (as in Istio), the ejection of a pod on
httpbin's sidecar, whose inbound cluster lists the pods (Istio: on fortio's, whose cluster lists them). One test
shows where that differs: on httpbin's side the pool bounds all callers together (Istio: each caller alone).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from compiler import certs
from compiler.importer import import_istio

from harness import Reply, report, send_many, wait_until

pytestmark = pytest.mark.envoy

CASE = Path(__file__).parent / "import" / "istio-tasks"
TRUST_DOMAIN = "tasks.test"
PODS = {"httpbin": {"v1": 2}, "productpage": {"v1": 1}, "reviews": {"v1": 1, "v2": 1}, "ratings": {"v1": 1},
        "fortio": {}}
OVERFLOW = ("upstream_rq_pending_overflow", "upstream_rq_overflow", "upstream_cx_overflow")


def _imported(inputs: list[Path] | None = None) -> list[dict]:
    """The import's documents; without `inputs`, the case's own, checked against the committed fixture."""
    result = import_istio(inputs or sorted((CASE / "input").glob("*.yaml")), mesh_name="istio-tasks")
    if inputs is None:
        for name, text in result.files.items():
            assert text == (CASE / "expected" / name).read_text(encoding="utf-8"), name
    assert not result.problems, result.problems
    return [d for text in result.files.values() for d in yaml.safe_load_all(text) if d]


def _relocate(docs: list[dict], live_mesh) -> tuple[list, dict]:
    """The imported documents with loopback addresses and ports; the apps (pods) of every version."""
    apps = {s: {v: [live_mesh.upstream(s, v) for _ in range(n)] for v, n in vs.items()} for s, vs in PODS.items()}
    out: list = []
    for d in docs:
        if d["kind"] == "Mesh":
            assert d["mtls"] == {"mode": "permissive"}, d  # Istio's default: no PeerAuthentication in the input
            out.append(dict(d, trust_domain=TRUST_DOMAIN, mtls={"mode": "permissive", "certs_dir": "/etc/meshc/certs"}))
        elif d["kind"] == "Service":
            rest = {k: v for k, v in d.items() if k not in ("kind", "name", "port", "app_port", "versions", "calls")}
            assert sorted(d.get("versions", {})) == sorted(PODS[d["name"]]), d
            out.append(live_mesh.service(d["name"], versions=apps[d["name"]] or None, calls=d["calls"], **rest))
        else:
            out.append(d)
    return out, apps


def _build(live_mesh, tmp_path, docs: list[dict]) -> dict:
    docs, apps = _relocate(docs, live_mesh)
    root = tmp_path / "certs"
    result = live_mesh.build(docs, certs_root=str(root))
    assert result.ok and not [d for d in result.diagnostics if d.is_error], [d.render() for d in result.diagnostics]
    certs.write_service_certs(root, TRUST_DOMAIN, {s.service: s.tls.identity for s in result.ir.sidecars})
    return apps


def _hold(app, seconds: float) -> None:
    """The app takes `seconds` per request (waits on an event nobody sets)."""
    never = threading.Event()

    def handler(req):
        never.wait(seconds)
        return None  # then the default answer (200, JSON echo)

    app.handler = handler


def test_circuit_breaker_overflows_with_503(live_mesh, tmp_path):
    apps = _build(live_mesh, tmp_path, _imported())
    pods = apps["httpbin"]["v1"]
    for pod in pods:
        _hold(pod, 0.2)
    fortio = live_mesh.start("fortio")
    live_mesh.start("httpbin")
    cluster = "outbound|httpbin|v1"
    thresholds = fortio.dynamic_clusters()[cluster]["cluster"]["circuit_breakers"]["thresholds"][0]
    assert (thresholds["max_connections"], thresholds["max_pending_requests"]) == (1, 1), thresholds

    assert live_mesh.call_one("fortio", "httpbin", "/get").status == 200  # one at a time always passes
    before = fortio.cluster_stats(cluster)
    host, port = fortio.outbound
    n, at_once = 20, 4

    def one(i):
        return send_many(host, port, 1, f"/get?i={i}", host_header="httpbin", max_seconds=10)[0]

    with ThreadPoolExecutor(at_once) as pool:
        got = list(pool.map(one, range(n)))
    after = fortio.cluster_stats(cluster)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in OVERFLOW}
    statuses = [r.status for r in got]
    ok, shed = statuses.count(200), [r for r in got if r.status == 503]
    report("istio_circuit_breaking", requests=n, at_once=at_once, ok=ok, overflow_503=len(shed), caller=delta,
           httpbin_overflow={k: live_mesh["httpbin"].cluster_stats("inbound|httpbin|v1").get(k, 0) for k in OVERFLOW})
    assert ok + len(shed) == n, statuses
    assert ok >= 1 and shed, statuses  # Istio's task: some pass, the rest are 503 from the circuit breaker
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in shed), [r.headers for r in shed]
    assert delta["upstream_rq_pending_overflow"] >= 1, delta
    assert delta["upstream_rq_pending_overflow"] + delta["upstream_rq_overflow"] == len(shed), delta
    assert sum(p.count for p in pods) == 1 + ok  # what was shed never reached a pod



def test_the_pool_also_bounds_all_callers_together_on_httpbins_side(live_mesh, tmp_path):
    """Where meshc differs from Istio: Istio enforces a DestinationRule's pool in each caller's sidecar only, so
    three callers with one request each stay within their own limits and all pass. meshc applies the
    TrafficPolicy on httpbin's inbound cluster too (README, TrafficPolicy): there the three are one pool of 1
    connection and 1 pending request, and httpbin's sidecar sheds one or two of them. Bursts of three (at most
    5) until one is shed: the three do not always arrive within one app's hold of each other."""
    apps = _build(live_mesh, tmp_path, _imported())
    for pod in apps["httpbin"]["v1"]:
        _hold(pod, 0.5)
    callers = ["fortio", "productpage", "reviews"]
    live_mesh.start(*callers, "httpbin")
    for caller in callers:
        assert live_mesh.call_one(caller, "httpbin", "/get").status == 200

    def shed_by_httpbin() -> int:
        stats = live_mesh["httpbin"].cluster_stats("inbound|httpbin|v1")
        return stats.get("upstream_rq_pending_overflow", 0) + stats.get("upstream_rq_overflow", 0)

    def burst() -> list[int]:
        gate = threading.Barrier(len(callers), timeout=10)

        def one(caller):
            host, port = live_mesh[caller].outbound
            gate.wait()
            return send_many(host, port, 1, "/get", host_header="httpbin", max_seconds=10)[0].status

        before = shed_by_httpbin()
        with ThreadPoolExecutor(len(callers)) as pool:
            statuses = list(pool.map(one, callers))
        assert set(statuses) <= {200, 503} and 200 in statuses, statuses
        assert shed_by_httpbin() - before == statuses.count(503), statuses  # every 503 is httpbin's sidecar's
        return statuses

    bursts = [burst()]
    while 503 not in bursts[-1] and len(bursts) < 5:
        bursts.append(burst())
    own = {c: sum(live_mesh[c].cluster_stats("outbound|httpbin|v1").get(k, 0) for k in OVERFLOW) for c in callers}
    report("istio_pool_per_caller", bursts=bursts, callers_overflow=own, shed_by_httpbin=shed_by_httpbin())
    assert 503 in bursts[-1], bursts
    assert own == {c: 0 for c in callers}, own  # no caller went past its own limit


def test_one_5xx_ejects_the_pod(live_mesh, tmp_path):
    apps = _build(live_mesh, tmp_path, _imported())
    bad, good = apps["httpbin"]["v1"]
    fortio = live_mesh.start("fortio")
    httpbin = live_mesh.start("httpbin")
    pods = "inbound|httpbin|v1"
    assert set(httpbin.health_flags(pods)) == {bad.endpoint, good.endpoint}
    od = httpbin.dynamic_clusters()[pods]["cluster"]["outlier_detection"]
    assert (od["consecutive_5xx"], od["base_ejection_time"], od["max_ejection_percent"]) == (1, "180s", 100), od

    bad.script(500)  # its next answer is a 500, then 200s again
    first = [live_mesh.call_one("fortio", "httpbin", f"/status/{i}").status for i in range(2)]  # round robin
    assert bad.count == 1 and sorted(first) == [200, 500], (first, bad.count)
    wait_until(lambda: "failed_outlier_check" in httpbin.health_flags(pods).get(bad.endpoint, ""), 5.0,
               message=lambda: f"ejection of {bad.endpoint}: {httpbin.health_flags(pods)}")
    flags = httpbin.health_flags(pods)
    stats = httpbin.cluster_stats(pods)
    assert flags[good.endpoint] == "healthy", flags
    assert stats.get("outlier_detection.ejections_enforced_total") == 1, stats
    assert stats.get("outlier_detection.ejections_enforced_consecutive_5xx") == 1, stats

    caller = "outbound|httpbin|v1"
    panic_before = fortio.cluster_stats(caller).get("lb_healthy_panic", 0)
    good_before = good.count
    after = live_mesh.call("fortio", "httpbin", "/get", 20)
    assert [r.status for r in after] == [200] * 20
    assert {r.json()["instance"] for r in after} == {good.endpoint}
    assert bad.count == 1 and good.count == good_before + 20
    # The 500 also passed fortio's cluster, whose one endpoint is httpbin's sidecar: with maxEjectionPercent 100
    # fortio's sidecar ejects it too and, with no healthy host left, balances in Envoy's panic mode (over every
    # host): the requests still reach httpbin's sidecar, which keeps the bad pod out.
    caller_stats = fortio.cluster_stats(caller)
    panic = caller_stats.get("lb_healthy_panic", 0) - panic_before
    if caller_stats.get("outlier_detection.ejections_enforced_total", 0):
        assert panic == 20, caller_stats
    report("istio_outlier_detection", first=first, ejected=bad.endpoint, flags=flags,
           ejections_enforced_total=stats.get("outlier_detection.ejections_enforced_total"), after_ok=20,
           bad_pod_requests=bad.count,
           caller_ejections=caller_stats.get("outlier_detection.ejections_enforced_total", 0),
           caller_flags=fortio.health_flags(caller), caller_panic=panic)


@pytest.mark.parametrize("imported_timeout", [True, False], ids=["timeout-0.5s", "timeout-removed"])
def test_reviews_timeout_answers_504_before_the_delayed_ratings(live_mesh, tmp_path, imported_timeout):
    if imported_timeout:
        docs = _imported()
    else:  # the same input without the VirtualService's `timeout: 0.5s`
        inputs = []
        for path in sorted((CASE / "input").glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            inputs.append(tmp_path / "input" / path.name)
            inputs[-1].parent.mkdir(exist_ok=True)
            inputs[-1].write_text(text.replace("      timeout: 0.5s\n", ""), encoding="utf-8")
        docs = _imported(inputs)
    route = next(d for d in docs if d["kind"] == "Route" and d["service"] == "reviews")
    assert route["rules"][0].get("timeout") == ("500ms" if imported_timeout else None), route
    apps = _build(live_mesh, tmp_path, docs)
    got_from_ratings: list[int] = []

    def reviews_v2(req):  # reviews v2 calls ratings through its own sidecar, as Bookinfo's does
        got_from_ratings.append(live_mesh.call_one("reviews", "ratings", "/ratings/0", timeout=10.0).status)
        return Reply(status=200, body={"reviews": "v2", "ratings": got_from_ratings[-1]})

    apps["reviews"]["v2"][0].handler = reviews_v2
    live_mesh.start("productpage", "reviews", "ratings")

    n = 3
    got = live_mesh.call("productpage", "reviews", "/reviews/0", n, timeout=10.0)
    wait_until(lambda: len(got_from_ratings) == n, 10.0, message=lambda: f"ratings answers {got_from_ratings}")
    statuses = [r.status for r in got]
    report("istio_request_timeouts", imported_timeout=imported_timeout, productpage_got=statuses,
           reviews_got_from_ratings=got_from_ratings)
    assert got_from_ratings == [200] * n  # the delayed answer is a 200 (the fault delays, it does not abort)
    assert apps["ratings"]["v1"][0].count == n and apps["reviews"]["v2"][0].count == n  # no retries
    assert apps["reviews"]["v1"][0].count == 0
    if imported_timeout:
        assert statuses == [504] * n, statuses
        assert {r.text for r in got} == {"upstream request timeout"}
    else:
        assert statuses == [200] * n, statuses
        assert {r.json()["ratings"] for r in got} == {200}
