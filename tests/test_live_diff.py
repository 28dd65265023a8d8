"""meshc diff, live: what it predicts for every caller -> service request is what real sidecars answer,
before and after the change, and the sidecars it says must reload are the ones the write reloads.

The mesh: productpage, reviews and ratings (each an app behind its sidecar, each calling the other two),
strict mTLS with certificates from compiler.certs. The change is tests/diff/authz-tighten's: ratings
lets reviews GET (no more HEAD) /ratings/ and refuses /ratings/internal to everybody; reviews' policy
leaves dry run. Every request the diff tries (each method and path the rules name, and the stand-ins
for the others) is sent from each caller's app before and after a hot reload of the new output.
"""

from __future__ import annotations

import pytest

from compiler import certs
from compiler.diff import diff
from compiler.diff.authz import ALLOWED, DENIED, inbound, outcome, pair_changes, requests
from compiler.diff.sides import load_side
from harness import report

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "diff.test"
SERVICES = ("productpage", "ratings", "reviews")
LDS = "listener_manager.lds.update_success"

OLD = [
    {"kind": "AuthorizationPolicy", "service": "ratings",
     "allow": [{"from": ["reviews"], "paths": [{"prefix": "/ratings/"}], "methods": ["GET", "HEAD"]}],
     "deny": [{"paths": [{"prefix": "/admin"}]}]},
    {"kind": "AuthorizationPolicy", "service": "reviews", "mode": "dry_run", "allow": [{"from": ["productpage"]}]},
]
NEW = [
    {"kind": "AuthorizationPolicy", "service": "ratings",
     "allow": [{"from": ["reviews"], "paths": [{"prefix": "/ratings/"}], "methods": ["GET"]}],
     "deny": [{"paths": [{"prefix": "/admin"}]}, {"paths": [{"prefix": "/ratings/internal"}]}]},
    {"kind": "AuthorizationPolicy", "service": "reviews", "allow": [{"from": ["productpage"]}]},
]


def _documents(live_mesh, apps, policies):
    return [
        live_mesh.mesh_doc(trust_domain=TRUST_DOMAIN, mtls={"mode": "strict"}),
        *(live_mesh.service(s, versions={"default": apps[s]}, calls=[c for c in SERVICES if c != s]) for s in SERVICES),
        *policies,
    ]


def _outcomes(live_mesh, tries) -> dict[tuple, str]:
    """(caller, service, method, path) -> allowed | denied, as the sidecars answer."""
    out = {}
    for caller, service, method, path in tries:
        r = live_mesh.call_one(caller, service, path, method=method)
        assert r.status in (200, 403), (caller, service, method, path, r.status, r.text)
        out[(caller, service, method, path)] = ALLOWED if r.status == 200 else DENIED
    return out


def test_predicted_pairs_are_what_the_sidecars_answer(live_mesh, tmp_path):
    apps = {s: live_mesh.upstream(s) for s in SERVICES}
    certs_root = str(tmp_path / "certs")
    first = live_mesh.build(_documents(live_mesh, apps, OLD), certs_root=certs_root)
    certs.write_service_certs(certs_root, TRUST_DOMAIN, {s.service: s.tls.identity for s in first.ir.sidecars})
    old = load_side(live_mesh.policy_dir, "old")
    live_mesh.start(*SERVICES)

    # The same policies without the harness's placement: what the diff compares.
    second = _documents(live_mesh, apps, NEW)
    live_mesh.write_policy(second)
    new = load_side(live_mesh.policy_dir, "new")
    assert old.ok and new.ok

    old_in, new_in = inbound(old.ir), inbound(new.ir)
    identity = {s.service: s.tls.identity for s in new.ir.sidecars}
    tries = [
        (caller, service, method, path)
        for service in SERVICES
        for _, method, _, path in requests([old_in[service].access, new_in[service].access])
        for caller in SERVICES
        if caller != service
    ]
    predicted_before = {t: outcome(old_in[t[1]], identity[t[0]], t[2], t[3]) for t in tries}
    predicted_after = {t: outcome(new_in[t[1]], identity[t[0]], t[2], t[3]) for t in tries}

    live_before = _outcomes(live_mesh, tries)
    assert live_before == predicted_before

    lds = {s: live_mesh[s].stat(LDS) for s in SERVICES}
    written = live_mesh.build(second, certs_root=certs_root)  # into the running mesh's output: a hot reload
    reloaded = sorted(c.service for c in written.rollout.sidecars if c.action == "reload" and "listeners.yaml" in c.files)
    for s in reloaded:
        live_mesh[s].wait_for_stat(LDS, lambda n, s=s: n > lds[s])
    # A changed listener applies to new connections; a caller's pooled connection to the old one answers
    # one more request and is closed (--drain-strategy immediate, compiler/emit/bootstrap.py): one request
    # per caller -> service first, on the connection that was open.
    last = {(c, s): live_mesh.call_one(c, s, "/").status for c in SERVICES for s in SERVICES if c != s}
    live_after = _outcomes(live_mesh, tries)
    assert live_after == predicted_after

    # What the diff reports is exactly what changed for real.
    changed = {t for t in tries if live_before[t] != live_after[t]}
    pairs = {(p.caller, p.service, *p.sent): (p.before, p.after) for p in pair_changes(old.ir, new.ir)}
    assert set(pairs) == changed
    assert all(pairs[t] == (live_before[t], live_after[t]) for t in changed)
    assert ("reviews", "ratings", "HEAD", "/ratings/") in changed and ("productpage", "reviews", "POST", "/meshc-diff/other") not in changed
    assert ("ratings", "reviews", "GET", "/meshc-diff/other") in changed  # dry run -> enforce

    # The sidecars it says reload are those the write reloaded, for the same files.
    rollout = {c.subject: (c.after["action"], c.after["files"]) for c in diff(old, new).changes if c.section == "rollout"}
    assert rollout == {c.service: (c.action, list(c.files)) for c in written.rollout.sidecars if c.action != "unchanged"}
    assert reloaded == ["ratings", "reviews"]
    report(
        "diff_live_pairs",
        requests=2 * len(tries),
        pairs_changed=len(changed),
        newly_denied=sum(1 for t in changed if live_after[t] == DENIED),
        newly_allowed=sum(1 for t in changed if live_after[t] == ALLOWED),
        reloaded=reloaded,
        on_open_connections=last,
    )
