"""Kubernetes mode, live, in a cluster in a box (tests/harness/cluster.py).

Every pod is a Linux network namespace with its own IP on a bridge; its
sidecar is the real Envoy running the compiled output unchanged (bound to
0.0.0.0, reading /etc/meshc, a kubelet-style ConfigMap volume); callers resolve
each version's headless Service (`reviews-v1.default.svc.cluster.local`)
through the real dnsmasq. Traffic comes from a load client inside the caller's
pod, through its sidecar, as the caller's app would send it. Each test prints
its figures (pytest -s).
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest

from harness import report, wait_until
from harness.netns import socket_in
from harness.traffic import failures, tally, wait_steady

pytestmark = pytest.mark.envoy

PORT = 9080  # every service's sidecar inbound port (same in every pod: each pod has its own network)
APP_PORT = 9081  # where each pod's app listens, behind its sidecar
CALLER = "frontend-default-0"


def _docs(cluster, *extra, rules=None, mesh=None, port: int = PORT) -> list:
    """frontend calls reviews (v1, v2), both in pods (wildcard sidecar address: the Mesh default)."""
    return [
        cluster.mesh_doc(**(mesh or {})),
        {"kind": "Service", "name": "frontend", "port": PORT, "app_port": APP_PORT, "calls": ["reviews"]},
        {"kind": "Service", "name": "reviews", "port": port, "app_port": APP_PORT, "versions": {"v1": {}, "v2": {}}},
        {"kind": "Route", "service": "reviews", "rules": rules or [{"to": {"v1": 90, "v2": 10}}]},
        *extra,
    ]


def _up(cluster, v1: int = 3, v2: int = 2):
    """Start frontend and reviews' pods; returns the caller pod once it routes to every published pod."""
    cluster.run_pods([("frontend", "default", 1), ("reviews", "v1", v1), ("reviews", "v2", v2)])
    caller = cluster.pod(CALLER)
    cluster.wait_routable(caller, "reviews")
    return caller


def _answered_by_cluster(caller) -> dict[str, int]:
    """The caller's sidecar's count of 200s per outbound version cluster."""
    return {v: caller.envoy.stat(f"cluster.outbound|reviews|{v}.upstream_rq_200") for v in ("v1", "v2")}


def _pids(cluster) -> dict[str, int]:
    return {name: p.envoy.pid for name, p in cluster.pods.items() if p.envoy.running}


# --------------------------------------------------------------------------
# Routing per version and per pod
# --------------------------------------------------------------------------


def test_canary_90_10_split_by_version_with_several_pods_each(kube_cluster):
    c = kube_cluster
    c.build(_docs(c))
    caller = _up(c)
    before = _answered_by_cluster(caller)
    start = time.monotonic()
    samples = c.load(caller, "reviews", count=2000, seconds=60, concurrency=2).start().wait().samples()
    seconds = time.monotonic() - start
    by_version, by_pod = tally(samples, "version"), tally(samples, "pod")
    share = by_version.get("v2", 0) / len(samples)
    after = _answered_by_cluster(caller)
    chosen = {v: after[v] - before[v] for v in after}
    asked = c.dns.queries(caller.ip)  # the caller's Envoy (c-ares, the pod's resolv.conf) asked cluster DNS
    report("canary 90/10, 3 pods of v1 and 2 of v2", requests=len(samples), seconds=seconds, v2_share=share,
           by_version=by_version, by_pod=by_pod, chosen_by_caller=chosen, failed=len(failures(samples)),
           caller_asked_dns_for=sorted(asked))
    assert not failures(samples), failures(samples)[:5]
    assert abs(share - 0.10) <= 0.03, f"v2 got {share:.3f} of the traffic, want 0.10 +- 0.03"
    assert set(by_pod) == {p.name for p in c.pods_of("reviews")}, "every pod of each version gets traffic"
    # The version the caller chose is the version that answered (issue 11: the ClusterIP name lost it).
    assert chosen == by_version, (chosen, by_version)
    assert {f"reviews-{v}.default.svc.cluster.local" for v in ("v1", "v2")} <= asked, asked


def test_header_match_routes_to_v2_pods_only(kube_cluster):
    """reviews listens on port 80: its sidecar (user 101, no capabilities) binds it thanks to the pod sysctl
    the Component sets (net.ipv4.ip_unprivileged_port_start), which the box applies in the pod's namespace."""
    c = kube_cluster
    beta = {"match": {"headers": [{"name": "x-user-group", "exact": "beta"}]}, "to": {"v2": 100}}
    c.build(_docs(c, rules=[beta, {"to": {"v1": 100}}], port=80))
    caller = _up(c)
    assert c.pod("reviews-v1-0").envoy.spec.sysctls == {"net.ipv4.ip_unprivileged_port_start": "0"}
    betas = c.load(caller, "reviews", count=200, headers={"x-user-group": "beta"}).start().wait().samples()
    others = c.load(caller, "reviews", count=200).start().wait().samples()
    report("A/B on a header", beta=tally(betas, "pod"), others=tally(others, "pod"),
           failed=len(failures(betas + others)))
    assert not failures(betas + others)
    assert set(tally(betas, "pod")) == {p.name for p in c.pods_of("reviews", "v2")}, "beta users: v2's pods, both"
    assert set(tally(others, "pod")) == {p.name for p in c.pods_of("reviews", "v1")}, "everyone else: v1's pods"


# --------------------------------------------------------------------------
# Pods come and go: DNS only, no rebuild
# --------------------------------------------------------------------------


def test_a_pod_added_to_v2_gets_traffic_and_a_removed_one_stops_without_rebuild(kube_cluster):
    c = kube_cluster
    c.build(_docs(c, rules=[{"to": {"v2": 100}}]))
    caller = _up(c, v1=1, v2=2)
    pids = _pids(c)
    built = (c.out / "manifest.json").stat().st_mtime_ns
    with c.load(caller, "reviews", count=20_000, seconds=60, pause=0.005) as load:
        load.wait_for(50)
        new = c.run_pods([("reviews", "v2", 1)])[0]  # ready, then published in DNS (SIGHUP)
        published = time.monotonic()
        first = wait_until(lambda: next((s for s in load.between(published) if s.pod == new.name), None), 15,
                           message=f"traffic to {new.name}")
        joined = first.at - published
        c.unpublish(new)  # out of the Service's endpoints: DNS stops answering its IP
        removed = time.monotonic()
        wait_steady(load, lambda s: s.pod != new.name, window=1.0, message=f"no traffic to {new.name}")
        last = max((s.at for s in load.samples() if s.pod == new.name), default=removed)
        left = max(0.0, last - removed)
        new.stop()
        stopped = time.monotonic()
        load.wait_for(len(load.samples()) + 100)
    samples = load.samples()
    after_removal = [s for s in samples if s.at > stopped]
    report("a v2 pod added, then removed, by DNS only", seconds_until_new_pod_answered=joined,
           seconds_until_removed_pod_stopped_answering=left, requests=len(samples), by_pod=tally(samples, "pod"),
           failed=len(failures(samples)), dns_reloads=c.dns.reloads)
    assert not failures(samples), failures(samples)[:5]
    assert not [s for s in after_removal if s.pod == new.name]
    assert {p.name for p in c.pods_of("reviews", "v2")} == {s.pod for s in after_removal}
    assert (c.out / "manifest.json").stat().st_mtime_ns == built, "no rebuild"
    assert {k: v for k, v in _pids(c).items() if k in pids} == pids, "no sidecar restarted"


def test_a_terminating_pod_drains_without_failing_requests(kube_cluster):
    c = kube_cluster
    c.build(_docs(c, rules=[{"to": {"v1": 100}}]))
    caller = _up(c, v1=3, v2=1)
    gone = c.pod("reviews-v1-0")
    # 4 keep-alive streams answer thousands a second: the count must outlast the deletion (the seconds bound it)
    with c.load(caller, "reviews", count=200_000, seconds=60, concurrency=4, keepalive=True) as load:
        load.wait_for(200)
        # Kubernetes: out of DNS at once; the app (its own preStop: 2s) gets SIGTERM before the sidecar, whose
        # preStop sleep (the Component's: callers' dns_refresh + a margin) keeps it serving until then.
        deleting = time.monotonic()
        step = c.delete_pod(gone, app_pre_stop=2.0)
        terminated = time.monotonic()
        load.wait_for(len(load.samples()) + 300)
    samples = load.samples()
    last = max(s.at for s in samples if s.pod == gone.name)
    report("a pod going away under load (4 keep-alive streams)", requests=len(samples),
           last_answer_after_deletion_began=last - deleting, **step, by_pod=tally(samples, "pod"),
           failed=len(failures(samples)))
    assert not failures(samples), failures(samples)[:5]
    assert step["sidecar_exit"] == 0, "the sidecar stopped cleanly"
    assert last < terminated
    assert {s.pod for s in samples if s.at > terminated} == {"reviews-v1-1", "reviews-v1-2"}


# --------------------------------------------------------------------------
# Per-pod protection: outlier detection and consistent hashing
# --------------------------------------------------------------------------


def test_a_failing_pod_is_ejected_while_its_siblings_serve(kube_cluster):
    """consecutive_5xx 3 on the caller's per-pod cluster, the default max_ejection_percent (10%): one failing
    pod among three is still ejected (meshc sets always_eject_one_host). Envoy marks the host at once (admin), its
    load balancer skips it from the next batched host update (about a second later): the figures say how
    many requests that cost, and nothing fails once the ejection is in force."""
    c = kube_cluster
    outlier = {"kind": "TrafficPolicy", "service": "reviews",
               "outlier_detection": {"consecutive_5xx": 3}}
    c.build(_docs(c, outlier, rules=[{"to": {"v1": 100}}]))
    caller = _up(c, v1=3, v2=1)
    bad = c.pod("reviews-v1-0")
    bad.set_app(status=500)
    with c.load(caller, "reviews", count=20_000, seconds=60, pause=0.002) as load:
        wait_until(lambda: "failed_outlier_check" in _health(caller, bad.ip), 15, message=f"{bad.name} ejected")
        marked = time.monotonic()
        wait_steady(load, lambda s: s.status == 200, window=1.0, timeout=15, message="no more failures")
        in_force = time.monotonic()
        load.wait_for(len(load.samples()) + 300)
    samples = load.samples()
    failed = failures(samples)
    after = [s for s in samples if s.start > in_force]
    stat = caller.envoy.stat("cluster.outbound|reviews|v1.outlier_detection.ejections_enforced_consecutive_5xx")
    report("a pod answering 500 among three", failed_before_marked=len([s for s in failed if s.at <= marked]),
           failed_between_marked_and_in_force=len([s for s in failed if s.at > marked]),
           seconds_marked_to_last_failure=max(s.at for s in failed) - marked, requests_after=len(after),
           failed_after=len(failures(after)), ejections=stat, by_pod_after=tally(after, "pod"))
    assert stat == 1
    assert {s.pod for s in failed} == {bad.name}, "only the failing pod's answers failed"
    assert not failures(after), failures(after)[:5]
    assert set(tally(after, "pod")) == {"reviews-v1-1", "reviews-v1-2"}, "its siblings serve everything"


def _health(caller, ip: str) -> list[str]:
    return next((h["health"] for h in caller.envoy.hosts("outbound|reviews|v1") if h["address"] == ip), [])


def test_ring_hash_on_a_header_sticks_each_user_to_one_pod(kube_cluster):
    c = kube_cluster
    sticky = {"kind": "TrafficPolicy", "service": "reviews",
              "load_balancer": {"policy": "ring_hash", "hash_on": {"header": "x-user-id"}}}
    c.build(_docs(c, sticky, rules=[{"to": {"v1": 100}}]))
    caller = _up(c, v1=3, v2=1)
    host, port = "127.0.0.1", caller.envoy.outbound[1]
    pods_of_user: dict[str, set[str]] = {}
    for i in range(12):
        user = f"user-{i}"
        for _ in range(15):
            status, body = caller.request(host, port, "/", headers={"Host": "reviews", "x-user-id": user})
            assert status == 200, body
            pods_of_user.setdefault(user, set()).add(json.loads(body)["pod"])
    spread = sorted({p for ps in pods_of_user.values() for p in ps})
    report("ring_hash on x-user-id, 12 users x 15 requests",
           pods_per_user=sorted(len(p) for p in pods_of_user.values()), pods_used=spread)
    assert all(len(p) == 1 for p in pods_of_user.values()), pods_of_user
    assert len(spread) >= 2, "different users land on different pods"


# --------------------------------------------------------------------------
# mTLS across pods, with per-service identities
# --------------------------------------------------------------------------


def test_mtls_strict_with_per_service_identities_across_pods(kube_cluster):
    c = kube_cluster
    c.build(_docs(c, mesh={"trust_domain": "box.test", "mtls": {"mode": "strict"}}))
    c.write_certs()  # compiler.certs: one identity per service, mounted in its pods at mtls.certs_dir
    caller = _up(c)
    samples = c.load(caller, "reviews", count=300, concurrency=2).start().wait().samples()
    handshakes = {p.name: p.envoy.stat(f"listener.0.0.0.0_{PORT}.ssl.handshake") for p in c.pods_of("reviews")}
    san_failures = sum(caller.envoy.stat(f"cluster.outbound|reviews|{v}.ssl.fail_verify_san") for v in ("v1", "v2"))
    target = c.pod("reviews-v2-1")
    presented = _peer_identity(c, target, "frontend")
    plaintext = _plaintext(c, target)
    proc = target.envoy.process()
    mounts = {p: proc["mounts"].get(p) for p in ("/", "/etc/meshc", "/etc/meshc/certs", "/tmp")}
    report("mTLS strict across pods", requests=len(samples), failed=len(failures(samples)),
           inbound_handshakes=handshakes, san_failures=san_failures, reviews_presents=presented,
           plaintext_to_reviews=plaintext, sidecar_uid=proc["uid"], sidecar_mounts=mounts)
    assert not failures(samples), failures(samples)[:5]
    assert all(n > 0 for n in handshakes.values()), "every reviews pod terminated mTLS from frontend"
    assert san_failures == 0
    assert presented == "spiffe://box.test/ns/default/sa/reviews"
    assert plaintext != "200", "strict: a client without a certificate is refused"
    # The sidecar runs as the Component's securityContext and volumes say (the Secret at mtls.certs_dir).
    assert (proc["uid"], proc["gid"], proc["cap_eff"], proc["no_new_privs"]) == (101, 101, 0, 1), proc
    assert mounts == {"/": "ro", "/etc/meshc": "ro", "/etc/meshc/certs": "ro", "/tmp": "rw"}, mounts

    # Rotation: new certificates in the Secrets, projected by kubelet's ..data swap, under load.
    pids, before = _pids(c), _peer_serial(c, target, "frontend")
    with c.load(caller, "reviews", count=20_000, seconds=60, concurrency=2) as load:
        load.wait_for(200)
        c.write_certs()  # compiler.certs: same CA, new service certificates
        rotated = c.sync_volumes()
        swapped = time.monotonic()
        wait_until(lambda: _peer_serial(c, target, "frontend") != before, 15, message="the new certificate served")
        served = time.monotonic() - swapped
        load.wait_for(len(load.samples()) + 300)
    rotation = load.samples()
    report("certificate rotation by the Secret's ..data swap", pods_updated=len(rotated),
           seconds_until_new_certificate=served, requests=len(rotation), failed=len(failures(rotation)))
    assert sorted(rotated) == sorted(c.pods), "every pod's Secret changed"
    assert not failures(rotation), failures(rotation)[:5]
    assert _pids(c) == pids, "no sidecar restarted"


def _peer_identity(cluster, target, as_service: str) -> str:
    """Handshake with `target`'s sidecar from the node, with `as_service`'s certificate: the URI SAN it presents."""
    sans = _handshake(cluster, target, as_service).get("subjectAltName", ())
    return next((v for k, v in sans if k == "URI"), "")


def _handshake(cluster, target, as_service: str) -> dict:
    """The certificate `target`'s sidecar presents to a client with `as_service`'s certificate (from the node)."""
    folder = cluster.certs_root / as_service
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(folder / "ca.pem")
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    sock = socket_in(cluster.node)
    sock.settimeout(5)
    sock.connect((target.ip, PORT))
    with ctx.wrap_socket(sock) as tls:
        return tls.getpeercert()


def _peer_serial(cluster, target, as_service: str) -> int:
    return _handshake(cluster, target, as_service)["serialNumber"]


def _plaintext(cluster, target) -> str:
    """A plain HTTP request from the node (outside the mesh) to a pod's sidecar: '200' or how it ended."""
    sock = socket_in(cluster.node)
    sock.settimeout(3)
    try:
        sock.connect((target.ip, PORT))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
        data = sock.recv(4096)
    except (ConnectionResetError, socket.timeout) as exc:
        return type(exc).__name__
    finally:
        sock.close()
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


# --------------------------------------------------------------------------
# A ConfigMap update (kubelet's ..data swap) under load
# --------------------------------------------------------------------------


def test_a_configmap_update_shifts_weights_under_load_without_failures(kube_cluster):
    c = kube_cluster
    c.build(_docs(c))
    caller = _up(c)
    pids = _pids(c)
    with c.load(caller, "reviews", count=20_000, seconds=60, concurrency=2) as load:
        load.wait_for(600)
        routes = caller.envoy.dynamic_route_configs()["outbound"]["version_info"]
        start = time.monotonic()
        c.build(_docs(c, rules=[{"to": {"v1": 50, "v2": 50}}]))
        updated = c.sync_volumes()  # kubelet: new ..<timestamp> folder, ..data_tmp renamed over ..data
        swapped = time.monotonic()
        applied = wait_until(lambda: caller.envoy.dynamic_route_configs()["outbound"]["version_info"] != routes
                             and time.monotonic(), 15, message="the new routes in force")  # fmt: skip
        load.wait_for(len(load.samples()) + 800)
    samples = load.samples()
    before = [s for s in samples if s.at < start]
    after = [s for s in samples if s.start > applied]
    share = lambda xs: tally(xs, "version").get("v2", 0) / max(1, len(xs))  # noqa: E731
    report("ConfigMap update 90/10 -> 50/50 under load", volumes_updated=updated, build_seconds=swapped - start,
           seconds_swap_to_applied=applied - swapped, requests=len(samples), failed=len(failures(samples)),
           v2_share_before=share(before), v2_share_after=share(after), after=len(after))
    assert updated == [CALLER], "only the caller's ConfigMap changed (its routes)"
    assert not failures(samples), failures(samples)[:5]
    assert abs(share(before) - 0.10) <= 0.06
    assert abs(share(after) - 0.50) <= 0.08
    assert _pids(c) == pids, "no sidecar restarted"
    assert not caller.envoy.config_problems()
