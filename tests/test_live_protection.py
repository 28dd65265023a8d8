"""Protection, live: TrafficPolicy connection-pool limits (circuit breaker) and outlier detection in real Envoy sidecars.

Mesh model: a TrafficPolicy for a service applies to that service's clusters on
every caller's sidecar (one endpoint: the callee's sidecar) *and* to the
callee's inbound clusters (where its app instances are). So

- the circuit breaker trips on the *caller's* sidecar: it is the first place that
  sees the burst, and it lets at most the limit through to the callee;
- outlier detection ejects a bad *instance* on the *callee's* sidecar (its inbound
  cluster has one endpoint per instance); the caller's cluster has one endpoint
  (the callee's sidecar) which `max_ejection_percent` < 100 keeps from ejection.

The test process plays the caller's app (calls its outbound listener with
`Host: <callee>`); the callee's instances are `Upstream`s.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import Reply, report, send_many, wait_until

pytestmark = pytest.mark.envoy


# --------------------------------------------------------------------------
# 1. circuit breaker: connection_pool limits
# --------------------------------------------------------------------------

CB_CALLER, CB_CALLEE = "shop", "inventory"
DELAY = 0.5  # seconds the slow app takes per request
BURST = 10


def test_connection_pool_limits_fail_fast_with_503_overloaded(live_mesh):
    """max_connections/max_pending_requests/max_requests 1, slow app, 10 requests at once through the caller:
    the surplus fails fast (503 + x-envoy-overloaded), the app never has more than 1 request in flight, and
    upstream_rq_pending_overflow rises on the caller's sidecar (the one that overflowed)."""
    app = live_mesh.upstream(CB_CALLEE)
    lock = threading.Lock()
    inflight = {"now": 0, "max": 0}
    slow = threading.Event()  # never set: waiting on it is the app's own 0.5 s of work

    def handler(req):
        with lock:
            inflight["now"] += 1
            inflight["max"] = max(inflight["max"], inflight["now"])
        try:
            slow.wait(DELAY)
        finally:
            with lock:
                inflight["now"] -= 1
        return Reply(status=200)

    app.handler = handler
    limits = {"max_connections": 1, "max_pending_requests": 1, "max_requests": 1}
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(CB_CALLER, calls=[CB_CALLEE]),
            live_mesh.service(CB_CALLEE, versions={"default": app}),
            {"kind": "TrafficPolicy", "service": CB_CALLEE, "connection_pool": limits},
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(CB_CALLER)
    back = live_mesh.start(CB_CALLEE)
    out_cluster, in_cluster = f"outbound|{CB_CALLEE}|default", f"inbound|{CB_CALLEE}|default"

    # The limits arrived on both sides.
    for sidecar, name in ((front, out_cluster), (back, in_cluster)):
        thresholds = sidecar.dynamic_clusters()[name]["cluster"]["circuit_breakers"]["thresholds"]
        assert {k: thresholds[0][k] for k in limits} == limits, (sidecar.service, thresholds)

    # Warm-up: one request alone goes through (and opens the one allowed connection on each side).
    assert live_mesh.call_one(CB_CALLER, CB_CALLEE, "/warm").status == 200
    app.reset()
    before = {"caller": front.cluster_stats(out_cluster), "callee": back.cluster_stats(in_cluster)}

    host, port = front.outbound
    gate = threading.Barrier(BURST, timeout=10)

    def one(i):
        gate.wait()
        t0 = time.monotonic()
        r = send_many(host, port, 1, f"/burst/{i}", host_header=CB_CALLEE, max_seconds=10)[0]
        return r, time.monotonic() - t0

    t0 = time.monotonic()
    with ThreadPoolExecutor(BURST) as pool:
        got = list(pool.map(one, range(BURST)))
    took = time.monotonic() - t0

    ok = [t for r, t in got if r.status == 200]
    shed = [(r, t) for r, t in got if r.status == 503]
    assert len(ok) + len(shed) == BURST, [(r.status, r.text) for r, _ in got]
    assert shed, "no request was shed"
    assert ok, "no request got through"
    for r, t in shed:
        assert r.headers.get("x-envoy-overloaded") == "true", (r.headers, r.text)
        assert t < DELAY / 2, t  # fast: no waiting for the slow app
    # Everything that got through was served by the app one at a time: at most 1 + 1 pending -> ~2 * DELAY.
    assert inflight["max"] == 1, inflight
    assert app.count == len(ok)

    after = {"caller": front.cluster_stats(out_cluster), "callee": back.cluster_stats(in_cluster)}
    delta = {
        side: {k: after[side].get(k, 0) - before[side].get(k, 0) for k in ("upstream_rq_pending_overflow", "upstream_rq_overflow", "upstream_cx_overflow")}
        for side in after
    }
    # The caller's sidecar overflowed; the callee's never saw more than the limit, so it did not.
    assert delta["caller"]["upstream_rq_pending_overflow"] >= 1, delta
    assert delta["caller"]["upstream_rq_pending_overflow"] + delta["caller"]["upstream_rq_overflow"] == len(shed), delta
    assert delta["callee"]["upstream_rq_pending_overflow"] == 0, delta
    assert delta["callee"]["upstream_rq_overflow"] == 0, delta
    report(
        "circuit_breaker",
        burst=BURST,
        ok=len(ok),
        shed_503=len(shed),
        shed_max_s=max(t for _, t in shed),
        ok_s=sorted(ok),
        app_max_inflight=inflight["max"],
        took=took,
        caller_overflow=delta["caller"],
        callee_overflow=delta["callee"],
    )


# --------------------------------------------------------------------------
# 2. outlier detection
# --------------------------------------------------------------------------

OD_CALLER, OD_CALLEE = "checkout", "payments"
BASE_EJECTION = 2.0
INTERVAL = 1.0


def test_outlier_detection_ejects_a_failing_instance_and_lets_it_back(live_mesh):
    """3 instances, one always 500; consecutive_5xx 3, interval 1s, base_ejection_time 2s, max 50%:
    the callee's sidecar ejects the bad instance (failed_outlier_check), traffic goes to the other two,
    GET callers (retries on 5xx) see no errors, and after ~2 s the bad instance is tried again."""
    good = [live_mesh.upstream(OD_CALLEE, "v1") for _ in range(2)]
    bad = live_mesh.upstream(OD_CALLEE, "v1")
    bad.status = 500
    apps = [*good, bad]
    live_mesh.build(
        [
            live_mesh.mesh_doc(),
            live_mesh.service(OD_CALLER, calls=[OD_CALLEE]),
            live_mesh.service(OD_CALLEE, versions={"v1": apps}),
            {
                "kind": "TrafficPolicy",
                "service": OD_CALLEE,
                "outlier_detection": {
                    "consecutive_5xx": 3,
                    "interval": "1s",
                    "base_ejection_time": "2s",
                    "max_ejection_percent": 50,
                },
            },
            {
                "kind": "Route",
                "service": OD_CALLEE,
                "rules": [
                    {"match": {"methods": ["GET"]}, "to": {"v1": 100}, "retries": {"attempts": 2, "on": ["5xx"]}},
                    {"to": {"v1": 100}},
                ],
            },
        ]
    )
    assert live_mesh.last_build.ok, [d.render() for d in live_mesh.last_build.diagnostics]
    front = live_mesh.start(OD_CALLER)
    back = live_mesh.start(OD_CALLEE)
    out_cluster, in_cluster = f"outbound|{OD_CALLEE}|v1", f"inbound|{OD_CALLEE}|v1"
    assert set(back.health_flags(in_cluster)) == {a.endpoint for a in apps}

    # Closed -> open: GETs one at a time until the callee's sidecar marks the bad instance (bounded: 60 requests).
    statuses = []
    ejected_at = None
    for i in range(60):
        statuses.append(live_mesh.call_one(OD_CALLER, OD_CALLEE, f"/pay/{i}").status)
        if "failed_outlier_check" in back.health_flags(in_cluster).get(bad.endpoint, ""):
            ejected_at = time.monotonic()
            break
    assert ejected_at is not None, (bad.count, back.health_flags(in_cluster))
    requests_to_eject, bad_tries_at_ejection = len(statuses), bad.count
    assert statuses == [200] * len(statuses)  # retries hid the 500s even before the ejection
    assert 3 <= bad_tries_at_ejection <= 4, bad_tries_at_ejection  # consecutive_5xx: 3 (+1 racing the main thread)
    flags = back.health_flags(in_cluster)
    assert all(flags[g.endpoint] == "healthy" for g in good), flags
    assert back.cluster_stats(in_cluster).get("outlier_detection.ejections_enforced_consecutive_5xx") == 1
    # The caller's single endpoint (the callee's sidecar) is not ejected.
    assert all(f == "healthy" for f in front.health_flags(out_cluster).values()), front.health_flags(out_cluster)
    assert front.cluster_stats(out_cluster).get("outlier_detection.ejections_enforced_total", 0) == 0

    # Open: traffic only to the two healthy instances; no errors for callers (GET with retries, POST without).
    counts = [a.count for a in apps]
    n = 20
    got = live_mesh.call(OD_CALLER, OD_CALLEE, "/pay/open", n) + live_mesh.call(
        OD_CALLER, OD_CALLEE, "/pay/open", n, method="POST", body=b"{}"
    )
    open_window = time.monotonic() - ejected_at
    assert open_window < BASE_EJECTION, f"open phase took {open_window:.2f}s: the ejection may have expired"
    assert [r.status for r in got] == [200] * (2 * n)
    served = [a.count - c for a, c in zip(apps, counts)]
    assert served[2] == 0, served
    assert served[0] + served[1] == 2 * n and min(served[0], served[1]) >= n // 2, served

    # Half-open: after base_ejection_time (checked every interval) the flag clears and the bad instance
    # is tried again. Poll the flag, then send GETs until the bad instance gets one (bounded).
    wait_until(
        lambda: "failed_outlier_check" not in back.health_flags(in_cluster)[bad.endpoint],
        timeout=BASE_EJECTION + 2 * INTERVAL + 1.0,
        message="the bad instance to be let back in",
    )
    unejected_after = time.monotonic() - ejected_at
    before = bad.count
    back_statuses = []
    for i in range(30):
        back_statuses.append(live_mesh.call_one(OD_CALLER, OD_CALLEE, f"/pay/half-open/{i}").status)
        if bad.count > before:
            break
    retried_after = bad.requests[before].at - ejected_at if bad.count > before else None
    assert retried_after is not None, "the bad instance got no request after its ejection expired"
    assert BASE_EJECTION - 0.1 <= retried_after <= BASE_EJECTION + 2 * INTERVAL + 1.0, retried_after
    assert back_statuses == [200] * len(back_statuses)  # its 500 is retried on another instance
    report(
        "outlier_detection",
        requests_to_eject=requests_to_eject,
        bad_tries_at_ejection=bad_tries_at_ejection,
        open_served=served,
        unejected_after_s=unejected_after,
        bad_retried_after_s=retried_after,
        half_open_requests=len(back_statuses),
    )
