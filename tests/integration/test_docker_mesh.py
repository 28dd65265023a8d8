"""The compiled mesh in Docker: one Envoy container per sidecar, traffic as users see it.

    frontend -> reviews (v1, v2) -> ratings          ratings -> reviews (refused by authorization)

The test process plays every app: it sends a service's outbound calls to that
service's sidecar container (`Host: <callee>`), and the apps behind the sidecars
are tests/harness `Upstream`s on 127.0.0.1 that record what reaches them. The
policy (conftest.py, `MeshEnv.policy`) is compiled with default BuildOptions,
mounted at /etc/meshc in each container, strict mTLS with certificates from
compiler.certs at /etc/meshc-certs. Every request loop is bounded in count and
time (send_many: `n`, 5 s per request, 20 s per burst); all traffic is on
127.0.0.0/8.

The hot-reload test rewrites the shared out/ folders and restores them; it runs last.
"""

from __future__ import annotations

import math
import socket
import ssl
import time
import urllib.request
from collections import Counter

from harness import raw_exchange, report, wait_until

DENIED_BODY = "RBAC: access denied"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def versions(responses) -> Counter:
    return Counter(r.json()["version"] if r.status == 200 else f"status {r.status}" for r in responses)


def tls_request(host: str, port: int, ctx: ssl.SSLContext, path: str = "/", timeout: float = 5.0) -> tuple[str, bytes]:
    """GET over TLS with Connection: close: ('response', bytes) or (error class: message, bytes so far)."""
    got = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname="reviews") as tls:
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n".encode())
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    got += chunk
        return ("response" if got else "closed"), got
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, socket.timeout) as exc:
        return f"{type(exc).__name__}: {exc}", got


def client_ctx(env, as_service: str | None) -> ssl.SSLContext:
    """A TLS client trusting the mesh CA, presenting `as_service`'s certificate (None: no certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the sidecar's identity is its SPIFFE URI SAN; the chain is checked
    ctx.load_verify_locations(cafile=str(env.certs / "ca.pem"))
    if as_service is not None:
        folder = env.certs / as_service
        ctx.load_cert_chain(str(folder / "cert.pem"), str(folder / "key.pem"))
    return ctx


def status_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


# --------------------------------------------------------------------------
# the deployment itself
# --------------------------------------------------------------------------


def test_containers_run_the_compiled_output_as_deployed(docker_mesh):
    """Each sidecar is a container on the host network with out/<svc>/ at /etc/meshc and its certs at /etc/meshc-certs."""
    env = docker_mesh.env
    for svc in ("frontend", "reviews", "ratings"):
        info = docker_mesh.inspect(svc)
        assert info["HostConfig"]["NetworkMode"] == "host", info["HostConfig"]["NetworkMode"]
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/etc/meshc"]["Source"] == str(env.out / svc), mounts
        assert mounts["/etc/meshc"]["RW"] is False
        assert mounts["/etc/meshc-certs"]["Source"] == str(env.certs / svc), mounts
        code, body = docker_mesh.admin_get(svc, "/server_info")
        assert code == 200 and '"state": "LIVE"' in body, body[:300]
        # the sidecar runs exactly the compiled bootstrap: node id and its admin address
        assert f'"id": "sidecar~{svc}.docker-it"' in body or f'"id":"sidecar~{svc}.docker-it"' in body, body[:600]


# --------------------------------------------------------------------------
# traffic management
# --------------------------------------------------------------------------


def test_canary_split_80_20(docker_mesh):
    """500 requests frontend -> reviews under `to: {v1: 80, v2: 20}`.

    v2's count is Binomial(500, 0.2): mean 100, sd 8.94. Accepted: 100 ± 40 (±4.5 sd,
    false-failure probability about 7e-6).
    """
    env = docker_mesh.env
    v1, v2 = env.apps["reviews-v1"], env.apps["reviews-v2"]
    v1.reset(), v2.reset()
    n, p = 500, 0.2
    responses = docker_mesh.call("frontend", "reviews", "/", n)
    seen = versions(responses)
    assert set(seen) <= {"v1", "v2"}, seen
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    tol = 4.5 * sd
    report("canary", requests=n, v1=seen["v1"], v2=seen["v2"], expected_v2=mean, tolerance=round(tol))
    assert abs(seen["v2"] - mean) <= tol, f"v2 got {seen['v2']}/{n}, expected {mean:.0f} ± {tol:.0f}"
    # the apps agree with what callers saw, and the version marker never reaches an app
    assert (v1.count, v2.count) == (seen["v1"], seen["v2"])
    assert not any("x-meshc-version" in r.headers for r in v1.requests + v2.requests)


def test_header_routing_beta_goes_to_v2(docker_mesh):
    beta = docker_mesh.call("frontend", "reviews", "/", 40, headers={"x-user-group": "beta"})
    assert versions(beta) == Counter({"v2": 40}), versions(beta)
    # another group is not beta: it gets the canary split (v1 most of the time; 40 all-v2 answers would be 0.2^40)
    other = docker_mesh.call("frontend", "reviews", "/", 40, headers={"x-user-group": "alpha"})
    assert versions(other)["v1"] > 0, versions(other)


def test_mirror_copies_reach_v2_while_callers_see_v1(docker_mesh):
    env = docker_mesh.env
    v1, v2 = env.apps["reviews-v1"], env.apps["reviews-v2"]
    v1.reset(), v2.reset()
    n = 40
    responses = docker_mesh.call("frontend", "reviews", "/mirror/item", n)
    assert versions(responses) == Counter({"v1": n}), versions(responses)
    v2.wait_for_count(n, timeout=10.0)  # copies are sent asynchronously: bounded wait
    assert v1.count == n
    assert {r.path for r in v2.requests} == {"/mirror/item"}
    assert all(r.method == "GET" for r in v2.requests)
    report("mirror", requests=n, v1=v1.count, v2_copies=v2.count)


def test_retries_hide_a_flaky_upstream(docker_mesh):
    """ratings answers 503 to every other request; callers (reviews' app) see only 200s."""
    env = docker_mesh.env
    ratings = env.apps["ratings"]
    ratings.reset()
    retry_stat = "cluster.outbound|ratings|default.upstream_rq_retry"
    before = docker_mesh.stats("reviews", retry_stat).get(retry_stat, 0)
    n = 50
    env.flaky.update(on=True, fail_next=True)
    try:
        responses = docker_mesh.call("reviews", "ratings", "/stars", n)
    finally:
        env.flaky["on"] = False
    statuses = Counter(r.status for r in responses)
    retries = docker_mesh.stats("reviews", retry_stat).get(retry_stat, 0) - before
    report("retries", requests=n, statuses=dict(statuses), app_tries=ratings.count, retries=retries)
    assert statuses == Counter({200: n}), statuses
    assert ratings.count == 2 * n  # each request: one 503, then one retried 200
    assert retries == n


# --------------------------------------------------------------------------
# security
# --------------------------------------------------------------------------


def test_mtls_required_plaintext_is_refused(docker_mesh):
    env = docker_mesh.env
    host, port = env.inbound("reviews")
    before = env.apps["reviews-v1"].count + env.apps["reviews-v2"].count
    got, how = raw_exchange(host, port, b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
    assert not got.startswith(b"HTTP/"), (how, got[:200])
    # TLS without a client certificate is refused too
    no_cert, no_cert_data = tls_request(host, port, client_ctx(env, None))
    assert not no_cert_data.startswith(b"HTTP/"), (no_cert, no_cert_data[:200])
    assert env.apps["reviews-v1"].count + env.apps["reviews-v2"].count == before  # nothing reached the apps
    # control: with frontend's certificate the same listener answers
    outcome, data = tls_request(host, port, client_ctx(env, "frontend"))
    assert outcome == "response" and status_line(data) == "HTTP/1.1 200 OK", (outcome, data[:200])
    report("mtls", plaintext=how, no_client_cert=no_cert)


def test_authorization_refuses_callers_other_than_frontend(docker_mesh):
    env = docker_mesh.env
    host, port = env.inbound("reviews")
    v1, v2 = env.apps["reviews-v1"], env.apps["reviews-v2"]
    before = v1.count + v2.count
    # a direct mTLS client with ratings' (valid, but not allowed) certificate
    outcome, data = tls_request(host, port, client_ctx(env, "ratings"))
    assert outcome == "response", (outcome, data[:200])
    assert status_line(data) == "HTTP/1.1 403 Forbidden" and data.endswith(DENIED_BODY.encode()), data[:300]
    # ratings' app calling reviews through its own sidecar
    refused = docker_mesh.call("ratings", "reviews", "/", 5)
    assert [r.status for r in refused] == [403] * 5, [(r.status, r.text) for r in refused]
    assert all(r.text == DENIED_BODY for r in refused)
    assert v1.count + v2.count == before  # refused before reaching any app
    # frontend is allowed
    allowed = docker_mesh.call("frontend", "reviews", "/", 5)
    assert [r.status for r in allowed] == [200] * 5
    rbac = docker_mesh.stats("reviews", "http.inbound_http.rbac.")
    report("authz", rbac={k[len("http.inbound_http.rbac."):]: v for k, v in rbac.items()})


# --------------------------------------------------------------------------
# observability
# --------------------------------------------------------------------------


def test_prometheus_metrics_on_the_metrics_port(docker_mesh):
    env = docker_mesh.env
    docker_mesh.call("frontend", "reviews", "/", 20)
    host, port = env.metrics("frontend")
    with urllib.request.urlopen(f"http://{host}:{port}/stats/prometheus", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("envoy_cluster_upstream_rq_total{"):
            labels, value = line.rsplit(" ", 1)
            samples[labels] = float(value)
    by_cluster = {k: v for k, v in samples.items() if 'envoy_cluster_name="outbound|reviews|' in k}
    assert by_cluster, f"no outbound|reviews|* upstream_rq_total in /stats/prometheus: {sorted(samples)[:10]}"
    assert sum(by_cluster.values()) >= 20, by_cluster
    report("metrics", series=len(text.splitlines()), outbound_reviews=by_cluster)
    # only the metrics path is served there; the admin interface is not
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/config_dump", timeout=5) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    assert code != 200


# --------------------------------------------------------------------------
# hot reload (last: it rewrites the shared output and restores it)
# --------------------------------------------------------------------------


def _rds_updates(docker_mesh, svc: str) -> int:
    return sum(v for k, v in docker_mesh.stats(svc, "http.outbound_http.rds.").items() if k.endswith(".update_success"))


def _all_pinned_to(docker_mesh, version: str, n: int = 10) -> bool:
    return versions(docker_mesh.call("frontend", "reviews", "/pinned", n)) == Counter({version: n})


def test_hot_reload_shifts_traffic_without_restart(docker_mesh):
    env = docker_mesh.env
    before = {svc: docker_mesh.inspect(svc) for svc in ("frontend", "reviews", "ratings")}
    assert _all_pinned_to(docker_mesh, "v1", 30)
    updates = _rds_updates(docker_mesh, "frontend")
    routes_file = env.out / "frontend" / "routes-outbound.yaml"
    inode = routes_file.stat().st_ino
    try:
        env.build_and_write("v2")  # the same out/ folders, mounted in the running containers
        assert routes_file.stat().st_ino != inode, "the writer should replace the routes file by a rename"
        started = time.monotonic()
        wait_until(lambda: _all_pinned_to(docker_mesh, "v2"), timeout=15.0, interval=0.2, message="/pinned to move to v2")
        shift = time.monotonic() - started
        assert _all_pinned_to(docker_mesh, "v2", 50)
        assert _rds_updates(docker_mesh, "frontend") > updates
        after = {svc: docker_mesh.inspect(svc) for svc in before}
        for svc in before:
            assert after[svc]["Id"] == before[svc]["Id"], svc
            assert after[svc]["State"]["StartedAt"] == before[svc]["State"]["StartedAt"], svc
            assert after[svc]["State"]["Running"] and after[svc]["RestartCount"] == 0, after[svc]["State"]
        # the rest of the routing is unchanged
        assert versions(docker_mesh.call("frontend", "reviews", "/", 20, headers={"x-user-group": "beta"})) == Counter({"v2": 20})
        report("hot_reload", shift_seconds=shift, started_at=before["frontend"]["State"]["StartedAt"])
    finally:
        env.build_and_write("v1")
        wait_until(lambda: _all_pinned_to(docker_mesh, "v1"), timeout=15.0, interval=0.2, message="/pinned back to v1")
