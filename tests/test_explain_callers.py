"""meshc explain and route rules for some callers only (`match.callers`, compiler/policy/caller.py).

A rule naming services or gateways is simply absent from every other caller's sidecar, so explain (which reads
each caller's IR) follows the right rules without knowing about callers. A rule naming caller *versions* (in
pods) matches the calling pod's version label, which no request shows: explain follows it with
`--from-version`, and without it says that the answer depends on it, never picking one silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler import cli
from compiler.build import check_policies
from compiler.explain import ExplainError, Request, explain
from compiler.lower import lower

ROOT = Path(__file__).resolve().parent.parent


def _example(case: str):
    diags, view = check_policies(ROOT / "policies" / case)
    assert view is not None, diags
    return lower(view)


def _ir(tmp_path: Path, text: str):
    (tmp_path / "mesh.yaml").write_text(text)
    diags, view = check_policies(tmp_path)
    assert view is not None, [d.render(str(tmp_path)) for d in diags]
    return lower(view)


def _routes(e) -> list[str]:
    return [s.decision for s in e.steps if s.what == "route"]


def test_service_callers_each_caller_follows_only_its_rules():
    ir = _example("callers")
    from_productpage = explain(ir, Request("productpage", "ratings", "GET", "/ratings/1"))
    from_reviews = explain(ir, Request("reviews", "ratings", "GET", "/ratings/1"))
    assert from_productpage.outcome.versions == (("v1", 1.0),)
    assert from_reviews.outcome.versions == (("v2", 1.0),)
    # productpage's sidecar has no rules[0] at all (it is for reviews only): nothing to skip, nothing uncertain
    assert _routes(from_productpage) == ["rules[1] matched (any request)"]
    assert _routes(from_reviews) == ["rules[0] matched (any request)"]
    assert from_productpage.outcome.certain and from_reviews.outcome.certain
    assert [s.decision for s in from_reviews.steps if s.what == "timeout"] == ["2s for the whole call (504 when exceeded)"]


def test_gateway_caller_gets_its_rule_and_the_header_still_decides():
    ir = _example("callers")
    canary = explain(ir, Request("ingress", None, "GET", "/productpage", (("x-canary", "1"),)))
    plain = explain(ir, Request("ingress", None, "GET", "/productpage"))
    assert canary.outcome.versions == (("v2", 1.0),)
    assert plain.outcome.versions == (("v1", 1.0),)
    assert _routes(plain)[0].startswith("rules[0] did not match: header x-canary exact '1' not met")


def test_caller_version_not_given_depends_on_it_and_says_both_ways():
    e = explain(_example("kubernetes-callers"), Request("reviews", "ratings", "GET", "/ratings/1"))
    assert _routes(e) == [
        "rules[0] depends on the caller's version: if the caller pod is version v3 it matches and sends it to "
        "ratings: v2 100%; followed here as a caller pod of version v1 or v2 (--from-version picks one)",
        "rules[1] matched (any request)",
    ]
    assert e.steps[2].data == {"index": 0, "rule": "rules[0]", "matched": False, "caller_versions": ["v3"]}
    assert e.outcome.versions == (("v1", 1.0),)
    assert e.outcome.certain is False
    assert e.outcome.summary == ("forwarded to ratings: v1 100%; if the caller pod is version v3: rules[0] sends it "
                                 "to ratings: v2 100% instead")


def test_caller_version_given_decides():
    ir = _example("kubernetes-callers")
    v3 = explain(ir, Request("reviews", "ratings", "GET", "/ratings/1", caller_version="v3"))
    assert v3.outcome.versions == (("v2", 1.0),) and v3.outcome.certain
    assert _routes(v3) == ["rules[0] matched (caller pod version v3)"]
    assert "(a pod of version v3)" in v3.steps[0].decision
    v1 = explain(ir, Request("reviews", "ratings", "GET", "/ratings/1", caller_version="v1"))
    assert v1.outcome.versions == (("v1", 1.0),) and v1.outcome.certain
    assert _routes(v1)[0] == "rules[0] did not match: only for caller pods of version v3 (this one: v1)"
    assert v1.to_json()["request"]["caller_version"] == "v1"


def test_caller_version_refused_where_it_cannot_decide():
    with pytest.raises(ExplainError, match="reviews has no such version \\(its versions: v1, v2, v3\\)"):
        explain(_example("kubernetes-callers"), Request("reviews", "ratings", caller_version="v9"))
    with pytest.raises(ExplainError, match="productpage declares no versions whose pods carry a `version` label"):
        explain(_example("kubernetes-callers"), Request("productpage", "reviews", caller_version="default"))
    with pytest.raises(ExplainError, match="does not run in pods"):
        explain(_example("callers"), Request("reviews", "ratings", caller_version="v1"))
    with pytest.raises(ExplainError, match="is a Gateway, which has no versions"):
        explain(_example("callers"), Request("ingress", None, "GET", "/", caller_version="v1"))


PODS = """\
kind: Mesh
name: t
kubernetes: {cluster_domain: cluster.local}
---
kind: Service
name: reviews
namespace: t
port: 9080
app_port: 19081
versions: {v1: {}, v2: {}, v3: {}}
calls: [ratings]
---
kind: Service
name: ratings
namespace: t
port: 9080
app_port: 19082
versions: {v1: {}, v2: {}}
---
kind: Route
service: ratings
rules:
  - match: {callers: [{service: reviews, versions: [v3]}]}
    to: {v2: 100}
  - match:
      callers: [{service: reviews, versions: [v1, v2]}]
      headers: [{name: x-debug, exact: "1"}]
    to: {v2: 100}
  - match: {callers: [{service: reviews, versions: [v1, v2]}]}
    to: {v1: 100}
    timeout: 3s
  - to: {v1: 100}
"""


def test_several_version_rules_follow_the_versions_left(tmp_path):
    ir = _ir(tmp_path, PODS)
    e = explain(ir, Request("reviews", "ratings"))
    routes = _routes(e)
    assert routes[0].startswith("rules[0] depends on the caller's version: if the caller pod is version v3")
    assert routes[0].endswith("followed here as a caller pod of version v1 or v2 (--from-version picks one)")
    assert routes[1] == "rules[1] did not match: header x-debug exact '1' not met (request: none)"
    # v3 was followed past: what is left (v1, v2) is all rules[2] asks, so it matches, for certain on that path
    assert routes[2] == "rules[2] matched (caller pod version v1 or v2)"
    assert e.outcome.versions == (("v1", 1.0),) and e.outcome.certain is False
    e = explain(ir, Request("reviews", "ratings", headers=(("x-debug", "1"),)))
    assert _routes(e)[1] == "rules[1] matched (caller pod version v1 or v2, x-debug: 1)"
    assert e.outcome.versions == (("v2", 1.0),)
    e = explain(ir, Request("reviews", "ratings", caller_version="v2"))
    assert _routes(e) == ["rules[0] did not match: only for caller pods of version v3 (this one: v2)",
                          "rules[1] did not match: header x-debug exact '1' not met (request: none)",
                          "rules[2] matched (caller pod version v2)"]


def test_command_from_version(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["explain", "policies/kubernetes-callers", "--from", "reviews", "--to", "ratings", "GET", "/ratings/1"]
    assert cli.main([*args, "--from-version", "v3", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"]["versions"] == [{"version": "v2", "probability": 1.0}]
    assert out["request"]["caller_version"] == "v3"
    assert cli.main(args) == 0
    assert "if the caller pod is version v3" in capsys.readouterr().out
    assert cli.main([*args, "--from-version", "v7"]) == 1
    err = capsys.readouterr().err
    assert "--from-version 'v7': reviews has no such version" in err and "Traceback" not in err
