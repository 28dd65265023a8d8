"""The resilience analysis against real Envoy: W601's product is what a failing service really receives.

Mesh: front -> middle -> back. The test process plays front's app; middle's app
answers each request by calling back through middle's own sidecar and passing
back's status on; back's app always answers 503. middle's and back's Routes
retry 5xx three times each (4 tries), so W601 predicts 4 × 4 = 16 tries of back
for one request of front: counted at back's app and in both sidecars' stats.
Outlier detection is off (it would eject back's only host after 5 failures and
stop the count early). Retrying on one hop only brings it down to 4.

W602 the same way: front gives up on middle after 1s while middle's call to a
slow back (3 tries of 500ms) goes on; back still gets all 3 tries.
"""

from __future__ import annotations

import pytest

from compiler.check import check
from compiler.load import load
from harness import Reply, wait_until

pytestmark = pytest.mark.envoy


def _rule(attempts: int | None) -> list[dict]:
    rule: dict = {"to": {"default": 100}}
    if attempts:
        rule["retries"] = {"attempts": attempts, "on": ["5xx"]}
    return [rule]


def _run(mesh, middle_attempts: int | None):
    back = mesh.upstream("back")
    back.status = 503
    middle = mesh.upstream("middle")
    middle.handler = lambda req: Reply(status=mesh.call_one("middle", "back", "/stock").status, body="middle")
    docs = [
        mesh.mesh_doc(defaults={"outlier_detection": {"consecutive_5xx": 0}}),
        mesh.service("front", calls=["middle"]),
        mesh.service("middle", versions={"default": middle}, calls=["back"]),
        mesh.service("back", versions={"default": back}),
        {"kind": "Route", "service": "middle", "rules": _rule(middle_attempts)},
        {"kind": "Route", "service": "back", "rules": _rule(3)},
    ]
    mesh.build(docs)
    warnings = [d.message for d in check(load(mesh.policy_dir).policy) if d.code == "W601"]
    mesh.start("back", "middle", "front")
    response = mesh.call_one("front", "middle", "/page")
    retries = {
        name: mesh[name].stats(rf"^cluster\.outbound\|{callee}\|default\.upstream_rq_retry$")
        for name, callee in (("front", "middle"), ("middle", "back"))
    }
    return response, middle.count, back.count, retries, warnings


def test_retries_multiply_along_the_chain_as_w601_predicts(live_mesh):
    response, middle_tries, back_tries, retries, warnings = _run(live_mesh, 3)
    assert len(warnings) == 1 and "4 × 4 = 16 tries of 'back' (front → middle → back)" in warnings[0], warnings
    assert response.status == 503
    assert middle_tries == 4
    assert back_tries == 16  # one request of front
    assert retries["front"] == {"cluster.outbound|middle|default.upstream_rq_retry": 3}
    assert retries["middle"] == {"cluster.outbound|back|default.upstream_rq_retry": 12}


def test_retrying_on_one_hop_only_keeps_the_load_at_its_tries(live_mesh):
    response, middle_tries, back_tries, retries, warnings = _run(live_mesh, None)
    assert warnings == []
    assert response.status == 503
    assert (middle_tries, back_tries) == (1, 4)
    assert retries["middle"] == {"cluster.outbound|back|default.upstream_rq_retry": 3}


def test_the_outer_call_gives_up_while_the_inner_tries_go_on_as_w602_predicts(live_mesh):
    mesh = live_mesh
    back = mesh.upstream("back")
    back.delay = 1.2  # every try of middle's sidecar (per_try_timeout 500ms) times out
    middle = mesh.upstream("middle")
    middle.handler = lambda req: Reply(status=mesh.call_one("middle", "back", "/stock").status, body="middle")
    docs = [
        mesh.mesh_doc(defaults={"outlier_detection": {"consecutive_5xx": 0}}),
        mesh.service("front", calls=["middle"]),
        mesh.service("middle", versions={"default": middle}, calls=["back"]),
        mesh.service("back", versions={"default": back}),
        {"kind": "Route", "service": "middle", "rules": [{"to": {"default": 100}, "timeout": "1s"}]},
        {
            "kind": "Route",
            "service": "back",
            "rules": [{"to": {"default": 100}, "retries": {"attempts": 2, "per_try_timeout": "500ms"}}],
        },
    ]
    mesh.build(docs)
    warnings = [d.message for d in check(load(mesh.policy_dir).policy) if d.code == "W602"]
    assert len(warnings) == 1, warnings
    assert "callers of 'middle' give up after 1s (timeout 1s" in warnings[0]
    assert "'middle' calling 'back' may take 1.6s (3 tries × per_try_timeout 500ms + up to 100ms" in warnings[0]
    mesh.start("back", "middle", "front")

    response = mesh.call_one("front", "middle", "/page")
    assert response.status == 504  # front's sidecar gave up on middle
    # ... while middle's sidecar went on trying back: all 3 tries arrive, each cut by its per-try timeout
    wait_until(lambda: back.count == 3 and middle.count == 1, timeout=10, message="back's 3 tries")
    per_try = wait_until(
        lambda: mesh["middle"].stats(r"^cluster\.outbound\|back\|default\.upstream_rq_per_try_timeout$").get(
            "cluster.outbound|back|default.upstream_rq_per_try_timeout"
        )
        == 3,
        timeout=10,
        message="3 per-try timeouts on middle's cluster for back",
    )
    assert per_try
    timeouts = mesh["front"].stats(r"^cluster\.outbound\|middle\|default\.upstream_rq_timeout$")
    assert timeouts == {"cluster.outbound|middle|default.upstream_rq_timeout": 1}
