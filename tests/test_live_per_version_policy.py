"""Per-version traffic policies, live: a TrafficPolicy's `versions` in real Envoy sidecars.

`versions: {v2: {...}}` gives one version its own connection pool, outlier
detection, balancer or health check (Istio: a DestinationRule subset's
`trafficPolicy`); a field it gives replaces the service-level one as a whole
for that version's clusters, on every caller's sidecar and on the callee's
inbound side. Two behaviours, each against the same service's other version:

- v2's pool of 1 connection and 1 pending request overflows under a burst on
  the caller's sidecar (503 + x-envoy-overloaded, `upstream_rq_pending_overflow`
  of `outbound|<svc>|v2`), while v1 (the service's pool) serves the same burst;
- v2's aggressive outlier detection ejects its failing instance on the callee's
  inbound v2 cluster, while v1's failing instance (the service's lenient policy)
  keeps getting its share.

The test process plays the caller's app; the callee's instances are `Upstream`s.
A Route sends paths under /v2/ to v2 and the rest to v1.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import Reply, report, send_many

pytestmark = pytest.mark.envoy

CALLER = "shop"
BURST = 10
DELAY = 0.5  # seconds the slow apps take per request
OVERFLOW = ("upstream_rq_pending_overflow", "upstream_rq_overflow", "upstream_cx_overflow")


def split_route(service: str) -> dict:
    return {
        "kind": "Route",
        "service": service,
        "rules": [{"match": {"path": {"prefix": "/v2/"}}, "to": {"v2": 100}}, {"to": {"v1": 100}}],
    }


def test_a_version_pool_of_one_overflows_while_the_other_version_serves_the_burst(live_mesh):
    """v2: max_connections / max_pending_requests / max_requests 1; v1: the service's pool of 100. Ten requests
    at once to each version through the caller's sidecar: v2 sheds the surplus with 503 + x-envoy-overloaded and
    counts it in outbound|reviews|v2's upstream_rq_pending_overflow; v1 answers all ten, no overflow counted."""
    callee = "reviews"
    lock = threading.Lock()
    inflight = {"v1": [0, 0], "v2": [0, 0]}  # now, max
    slow = threading.Event()  # never set: waiting on it is the app's own work

    def slow_app(version):
        def handler(req):
            with lock:
                inflight[version][0] += 1
                inflight[version][1] = max(inflight[version][1], inflight[version][0])
            try:
                slow.wait(DELAY)
            finally:
                with lock:
                    inflight[version][0] -= 1
            return Reply(status=200)

        return handler

    v1, v2 = live_mesh.upstream(callee, "v1"), live_mesh.upstream(callee, "v2")
    v1.handler, v2.handler = slow_app("v1"), slow_app("v2")
    tight = {"max_connections": 1, "max_pending_requests": 1, "max_requests": 1}
    wide = {"max_connections": 100, "max_pending_requests": 100, "max_requests": 100}
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(CALLER, calls=[callee]),
            live_mesh.service(callee, versions={"v1": v1, "v2": v2}),
            {"kind": "TrafficPolicy", "service": callee, "connection_pool": wide,
             "versions": {"v2": {"connection_pool": tight}}},
            split_route(callee),
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(CALLER)
    back = live_mesh.start(callee)

    # Each version's limits arrived in its own clusters, on the caller and on the callee.
    for sidecar, direction in ((front, "outbound"), (back, "inbound")):
        clusters = sidecar.dynamic_clusters()
        for version, limits in (("v1", wide), ("v2", tight)):
            thresholds = clusters[f"{direction}|{callee}|{version}"]["cluster"]["circuit_breakers"]["thresholds"][0]
            assert {k: thresholds[k] for k in limits} == limits, (sidecar.service, version, thresholds)

    for version in ("v1", "v2"):  # warm-up: one request alone goes through to each version
        assert live_mesh.call_one(CALLER, callee, f"/{version}/warm").status == 200
    v1.reset()
    v2.reset()
    before = {v: front.cluster_stats(f"outbound|{callee}|{v}") for v in ("v1", "v2")}

    host, port = front.outbound

    def burst(version: str) -> list[int]:
        gate = threading.Barrier(BURST, timeout=10)

        def one(i):
            gate.wait()
            r = send_many(host, port, 1, f"/{version}/burst/{i}", host_header=callee, max_seconds=10)[0]
            return r.status, r.headers.get("x-envoy-overloaded")

        with ThreadPoolExecutor(BURST) as pool:
            return list(pool.map(one, range(BURST)))

    got = {v: burst(v) for v in ("v1", "v2")}
    after = {v: front.cluster_stats(f"outbound|{callee}|{v}") for v in ("v1", "v2")}
    delta = {v: {k: after[v].get(k, 0) - before[v].get(k, 0) for k in OVERFLOW} for v in after}

    # v1: the service's pool of 100 takes the whole burst.
    assert [s for s, _ in got["v1"]] == [200] * BURST, got["v1"]
    assert v1.count == BURST
    assert delta["v1"] == dict.fromkeys(OVERFLOW, 0), delta
    # v2: its own pool of 1 sheds the surplus on the caller's sidecar.
    ok = [s for s, _ in got["v2"] if s == 200]
    shed = [(s, h) for s, h in got["v2"] if s != 200]
    assert ok and shed, got["v2"]
    assert all(s == 503 and h == "true" for s, h in shed), shed
    assert v2.count == len(ok)
    assert inflight["v2"][1] == 1, inflight
    assert delta["v2"]["upstream_rq_pending_overflow"] >= 1, delta
    assert delta["v2"]["upstream_rq_pending_overflow"] + delta["v2"]["upstream_rq_overflow"] == len(shed), delta
    report(
        "per_version_pool",
        burst=BURST,
        v1_ok=v1.count,
        v1_overflow=delta["v1"],
        v1_max_inflight=inflight["v1"][1],
        v2_ok=len(ok),
        v2_shed_503=len(shed),
        v2_overflow=delta["v2"],
        v2_max_inflight=inflight["v2"][1],
    )


def test_a_version_outlier_detection_ejects_its_failing_instance_while_the_other_version_keeps_its(live_mesh):
    """Each version has two instances, one always 500. Service level: consecutive_5xx 50 (lenient); v2:
    consecutive_5xx 2, base_ejection_time 30s, max_ejection_percent 50. Requests one at a time, no retries:
    the callee's inbound v2 cluster ejects the bad v2 instance after 2 failures and every later v2 request
    is 200; v1's bad instance stays in and keeps failing its share."""
    callee = "ratings"
    good1, bad1 = live_mesh.upstream(callee, "v1"), live_mesh.upstream(callee, "v1")
    good2, bad2 = live_mesh.upstream(callee, "v2"), live_mesh.upstream(callee, "v2")
    bad1.status = bad2.status = 500
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(CALLER, calls=[callee]),
            live_mesh.service(callee, versions={"v1": [good1, bad1], "v2": [good2, bad2]}),
            {
                "kind": "TrafficPolicy",
                "service": callee,
                "outlier_detection": {"consecutive_5xx": 50, "max_ejection_percent": 50},
                "versions": {
                    "v2": {
                        "outlier_detection": {
                            "consecutive_5xx": 2,
                            "interval": "1s",
                            "base_ejection_time": "30s",
                            "max_ejection_percent": 50,
                        }
                    }
                },
            },
            split_route(callee),
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(CALLER)
    back = live_mesh.start(callee)
    in_v1, in_v2 = f"inbound|{callee}|v1", f"inbound|{callee}|v2"
    clusters = back.dynamic_clusters()
    assert clusters[in_v1]["cluster"]["outlier_detection"]["consecutive_5xx"] == 50
    assert clusters[in_v2]["cluster"]["outlier_detection"]["consecutive_5xx"] == 2

    # v2: one at a time until the callee's sidecar ejects the bad instance (bounded: 30 requests).
    v2_statuses = []
    for i in range(30):
        v2_statuses.append(live_mesh.call_one(CALLER, callee, f"/v2/rate/{i}").status)
        if "failed_outlier_check" in back.health_flags(in_v2).get(bad2.endpoint, ""):
            break
    assert "failed_outlier_check" in back.health_flags(in_v2)[bad2.endpoint], (bad2.count, back.health_flags(in_v2))
    assert bad2.count == 2, bad2.count  # consecutive_5xx: 2
    assert back.health_flags(in_v2)[good2.endpoint] == "healthy"
    assert back.cluster_stats(in_v2).get("outlier_detection.ejections_enforced_consecutive_5xx") == 1
    # After the ejection (30 s) every v2 request lands on the good instance.
    n = 20
    after_ejection = [r.status for r in live_mesh.call(CALLER, callee, "/v2/rate/after", n)]
    assert after_ejection == [200] * n, after_ejection
    assert bad2.count == 2

    # v1: the same traffic and more; its bad instance is never ejected and keeps failing its share.
    v1_statuses = [r.status for r in live_mesh.call(CALLER, callee, "/v1/rate", 2 * n)]
    assert set(v1_statuses) == {200, 500}, v1_statuses
    assert bad1.count == v1_statuses.count(500) >= n // 2, (bad1.count, v1_statuses.count(500))
    assert "failed_outlier_check" not in back.health_flags(in_v1)[bad1.endpoint]
    assert back.cluster_stats(in_v1).get("outlier_detection.ejections_enforced_total", 0) == 0
    report(
        "per_version_outlier",
        v2_requests_to_eject=len(v2_statuses),
        v2_bad_tries=bad2.count,
        v2_after_ejection_ok=after_ejection.count(200),
        v1_requests=len(v1_statuses),
        v1_500s=v1_statuses.count(500),
        v1_ejections=back.cluster_stats(in_v1).get("outlier_detection.ejections_enforced_total", 0),
    )
