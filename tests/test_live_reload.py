"""What ships, applies: policy changes reach running sidecars without a restart, live.

Every listener comes from listeners.yaml (file-based LDS in a watched
directory), so authorization, JWT, faults and TLS settings reload like
clusters and routes. One running mesh (frontend and other call reviews,
mTLS permissive, then strict) goes through a series of builds while steady
traffic flows from both callers; after each build the test waits (bounded)
until the new policy is in force and checks:

- the Envoy processes are the same (same PIDs, no restart);
- the seconds from the end of the build to the new behaviour (reported);
- no request failed during the switch except those the new policy refuses
  (a caller allowed before and after never sees anything but 200).
"""

from __future__ import annotations

import time

import pytest

from compiler import certs
from harness import SteadyLoad, Stream, raw_exchange, report, wait_until

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "reload.test"
IN_FORCE_WITHIN = 15.0  # bound of each wait; the figure reported is what it really took


def _mesh(live_mesh, app, *extra, mtls: str = "permissive") -> list:
    return [
        live_mesh.mesh_doc(trust_domain=TRUST_DOMAIN, mtls={"mode": mtls}),
        live_mesh.service("frontend", calls=["reviews"]),
        live_mesh.service("other", calls=["reviews"]),
        live_mesh.service("reviews", versions={"default": app}),
        *extra,
    ]


def _allow(*callers: str) -> dict:
    return {"kind": "AuthorizationPolicy", "service": "reviews", "allow": [{"from": list(callers)}]}


def _fault(status: int) -> dict:
    chaos = {"headers": [{"name": "x-chaos", "exact": "on"}]}
    return {
        "kind": "Route",
        "service": "reviews",
        "rules": [{"match": chaos, "to": {"default": 100}, "fault": {"abort": {"status": status}}}, {"to": {"default": 100}}],
    }


JWKS = certs.throwaway_jwks()


def _jwt(path: str) -> dict:
    return {
        "kind": "RequestAuthentication",
        "service": "reviews",
        "providers": [{"name": "corp", "issuer": "https://issuer.reload.test", "jwks": JWKS}],
        "rules": [{"paths": [path]}],
    }


def _status(live_mesh, caller: str, path: str = "/", headers: dict | None = None) -> int:
    return live_mesh.call_one(caller, "reviews", path, headers=headers or {}).status


def _plaintext_status(live_mesh) -> str:
    """A client without a certificate straight to reviews' inbound port: '200' or how the connection ended."""
    host, port = live_mesh["reviews"].inbound
    data, how = raw_exchange(host, port, b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n", timeout=3.0)
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else how


def test_policy_changes_apply_to_running_sidecars_without_restart(live_mesh, tmp_path):
    app = live_mesh.upstream("reviews")
    certs_root = tmp_path / "certs"
    result = live_mesh.build(_mesh(live_mesh, app), certs_root=str(certs_root))
    assert result.ok, [d.render() for d in result.diagnostics]
    certs.write_service_certs(certs_root, TRUST_DOMAIN, {s.service: s.tls.identity for s in result.ir.sidecars})
    live_mesh.start("frontend", "other", "reviews")
    pids = {name: sc.pid for name, sc in live_mesh.sidecars.items()}

    streams = [Stream(c, *live_mesh[c].outbound, "reviews") for c in ("frontend", "other")]
    steps = [
        # (what, extra documents, mtls mode, {caller: status its steady traffic must get from now on}, probe)
        ("authorization added (allow frontend)", [_allow("frontend")], "permissive", {"frontend": 200, "other": 403}, None),
        ("authorization changed (allow other)", [_allow("other")], "permissive", {"frontend": 403, "other": 200}, None),
        ("authorization removed", [], "permissive", {"frontend": 200, "other": 200}, None),
        ("first fault added", [_fault(418)], "permissive", {"frontend": 200, "other": 200},
         lambda: _status(live_mesh, "frontend", headers={"x-chaos": "on"}) == 418),
        ("fault changed (418 -> 429)", [_fault(429)], "permissive", {"frontend": 200, "other": 200},
         lambda: _status(live_mesh, "frontend", headers={"x-chaos": "on"}) == 429),
        ("fault removed", [], "permissive", {"frontend": 200, "other": 200},
         lambda: _status(live_mesh, "frontend", headers={"x-chaos": "on"}) == 200),
        ("JWT provider added", [_jwt("/secure")], "permissive", {"frontend": 200, "other": 200},
         lambda: _status(live_mesh, "frontend", "/secure") == 401),
        ("JWT rule changed (/secure -> /private)", [_jwt("/private")], "permissive", {"frontend": 200, "other": 200},
         lambda: _status(live_mesh, "frontend", "/private") == 401 and _status(live_mesh, "frontend", "/secure") == 200),
        ("JWT provider removed", [], "permissive", {"frontend": 200, "other": 200},
         lambda: _status(live_mesh, "frontend", "/secure") == 200),
        ("mTLS permissive -> strict", [], "strict", {"frontend": 200, "other": 200},
         lambda: _plaintext_status(live_mesh) != "200"),
    ]
    figures = []
    with SteadyLoad(streams) as load:
        wait_until(lambda: len(load.between(0.0)) >= 20, 10, message="steady traffic before the first build")
        before: dict[str, int] = {"frontend": 200, "other": 200}
        assert _plaintext_status(live_mesh) == "200", "permissive: plaintext is still accepted"
        for what, extra, mode, expect, probe in steps:
            start = time.monotonic()
            result = live_mesh.build(_mesh(live_mesh, app, *extra, mtls=mode), certs_root=str(certs_root))
            assert result.ok, [d.render() for d in result.diagnostics]
            built = time.monotonic()

            def in_force() -> bool:
                recent = load.between(time.monotonic() - 0.3)
                steady = all(
                    any(s.caller == c for s in recent) and all(s.status == want for s in recent if s.caller == c)
                    for c, want in expect.items()
                )
                return steady and (probe is None or probe())

            wait_until(in_force, IN_FORCE_WITHIN, interval=0.05, message=f"'{what}' in force")
            effect = time.monotonic() - built
            time.sleep(0.5)  # a little steady state after the switch belongs to it
            seen = load.between(start)
            # Before the new policy is in force a request may get the old answer; nothing else is allowed.
            bad = [s for s in seen if s.status not in {before[s.caller], expect[s.caller]}]
            refused = sum(1 for s in seen if s.status != 200)
            figures.append(f"{what}: build+write {built - start:.2f}s, in force {effect:.2f}s after it "
                           f"(0.3s of steady answers included); {len(seen)} requests, "
                           f"{refused} refused by policy, {len(bad)} failed")
            assert not bad, f"{what}: requests failed during the switch: {bad[:5]}"
            for c, want in expect.items():
                tail = [s for s in load.between(time.monotonic() - 0.4) if s.caller == c]
                assert tail and all(s.status == want for s in tail), (what, c, tail[-3:])
            before = expect
    assert _plaintext_status(live_mesh) != "200", "strict: plaintext refused"
    assert {name: sc.pid for name, sc in live_mesh.sidecars.items()} == pids, "no sidecar restarted"
    assert all(sc.running for sc in live_mesh.sidecars.values())
    for sc in live_mesh.sidecars.values():
        assert not sc.config_problems(), (sc.service, sc.config_problems())
    report("policy changes on a running mesh, same Envoy PIDs throughout", steps=figures)


# --------------------------------------------------------------------------
# Write order across sidecars: a version added, then removed, under steady load
# --------------------------------------------------------------------------


def _versions_mesh(live_mesh, apps: dict, *, with_v2: bool) -> list:
    chosen = lambda v: {"set": {"x-chosen": v}}  # noqa: E731 - the app sees which version the caller picked
    rules = [{"to": {"v1": 100}, "request_headers": chosen("v1")}]
    if with_v2:
        rules.insert(0, {"match": {"headers": [{"name": "x-want", "exact": "v2"}]}, "to": {"v2": 100},
                         "request_headers": chosen("v2")})
    versions = {"v1": apps["v1"], **({"v2": apps["v2"]} if with_v2 else {})}
    return [
        live_mesh.mesh_doc(),
        live_mesh.service("frontend", calls=["reviews"]),
        live_mesh.service("reviews", versions=versions),
        {"kind": "Route", "service": "reviews", "rules": rules},
    ]


def test_adding_and_removing_a_version_under_load_fails_and_misroutes_nothing(live_mesh):
    apps = {v: live_mesh.upstream("reviews", v) for v in ("v1", "v2")}
    live_mesh.build(_versions_mesh(live_mesh, apps, with_v2=False))
    live_mesh.start("frontend", "reviews")
    pids = {name: sc.pid for name, sc in live_mesh.sidecars.items()}
    out = live_mesh["frontend"].outbound
    streams = [Stream("wants-v2", *out, "reviews", headers={"x-want": "v2"}), Stream("plain", *out, "reviews")]
    figures = {}
    with SteadyLoad(streams) as load:
        wait_until(lambda: load.count() >= 20, 10, message="steady traffic")
        for what, with_v2 in (("v2 added", True), ("v2 removed", False)):
            start = time.monotonic()
            result = live_mesh.build(_versions_mesh(live_mesh, apps, with_v2=with_v2))
            actions = {c.service: c for c in result.rollout.sidecars}
            assert {s: c.action for s, c in actions.items()} == {"frontend": "reload", "reviews": "reload"}, actions
            want = "v2" if with_v2 else "v1"
            wait_until(lambda: (lambda tail: tail and all(s.version == want for s in tail))(
                load.between(time.monotonic() - 0.3, caller="wants-v2")), IN_FORCE_WITHIN, message=f"{what} in force")
            time.sleep(0.5)
            seen = load.between(start)
            failed = [s for s in seen if s.status != 200]
            misrouted = [s for s in seen if s.status == 200 and s.version != s.chosen]
            figures[what] = f"{len(seen)} requests, {len(failed)} failed, {len(misrouted)} misrouted"
            assert not failed, f"{what}: {failed[:5]}"
            assert not misrouted, f"{what}: answered by another version than the caller chose: {misrouted[:5]}"
    assert {name: sc.pid for name, sc in live_mesh.sidecars.items()} == pids
    report("a version added then removed under steady load", **figures)
