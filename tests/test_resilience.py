"""Mesh-wide resilience analysis (compiler/check/resilience.py): W601-W604 on small meshes, with their
positions, and none on the example policies."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from compiler.check import check
from compiler.load import load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(d.name for d in (ROOT / "policies").iterdir() if d.is_dir())

MESH = """\
kind: Mesh
name: m
{analysis}---
kind: Gateway
name: web
listeners: [{{name: http, port: 8080, protocol: http}}]
address: 127.0.9.100
routes: [{{to: a}}]
"""


def _service(name: str, calls: list[str], n: int) -> str:
    return (
        f"---\nkind: Service\nname: {name}\nport: 9080\napp_port: {19000 + n}\n"
        f"sidecar: {{address: 127.0.9.{n}}}\ncalls: [{', '.join(calls)}]\n"
    )


def _diags(tmp_path: Path, calls: dict[str, list[str]], routes: str = "", analysis: str = "", gateway: bool = True):
    mesh = MESH.format(analysis=analysis)
    if not gateway:
        mesh = mesh[: mesh.index("---")]
    text = mesh + "".join(_service(n, c, i + 1) for i, (n, c) in enumerate(calls.items()))
    (tmp_path / "mesh.yaml").write_text(text)
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(routes))
    loaded = load(tmp_path)
    assert not [d.render() for d in loaded.diagnostics if d.is_error]
    diags = check(loaded.policy)
    assert not [d.render() for d in diags if d.is_error]
    return diags


def _codes(diags, code: str) -> list[str]:
    return [d.render() for d in diags if d.code == code]


def _retrying(service: str, attempts: int, extra: str = "") -> str:
    return f"""\
---
kind: Route
service: {service}
rules:
  - to: {{default: 100}}
    retries: {{attempts: {attempts}{extra}}}
"""


CHAIN = {"a": ["b"], "b": ["c", "d"], "c": [], "d": []}


# ---------------------------------------------------------------- W601


def test_amplification_names_the_chain_and_the_product_at_the_outermost_worst_rule(tmp_path):
    routes = _retrying("a", 3) + _retrying("b", 3) + _retrying("c", 1) + _retrying("d", 1)
    found = _codes(_diags(tmp_path, CHAIN, routes), "W601")
    # web -> a (4 tries) -> b (4) -> c or d (2 each): 32 tries of c and of d, both chains blame Route a (one warning)
    assert found == [
        "routes.yaml:6:5: warning[W601]: Route 'a' rules[0].retries: one request to gateway 'web' can become "
        "4 × 4 × 2 = 32 tries of 'c' (web → a → b → c), above the Mesh's analysis.max_retry_amplification 10: "
        "in an outage every layer retries the one below; retry on one hop of the chain only, or fewer attempts "
        "here (4 tries on web → a)"
    ]


def test_amplification_threshold_comes_from_the_mesh(tmp_path):
    routes = _retrying("a", 3) + _retrying("b", 3)
    assert len(_codes(_diags(tmp_path, CHAIN, routes), "W601")) == 1  # 16 > 10
    assert _codes(_diags(tmp_path, CHAIN, routes, "analysis: {max_retry_amplification: 16}\n"), "W601") == []
    assert len(_codes(_diags(tmp_path, CHAIN, routes, "analysis: {max_retry_amplification: 15}\n"), "W601")) == 1


def test_rules_that_retry_nothing_do_not_amplify(tmp_path):
    """A rule for POST only, without non_idempotent, forwards without retries: 1 try."""
    post_only = """\
---
kind: Route
service: b
rules:
  - match: {methods: [POST]}
    to: {default: 100}
    retries: {attempts: 5}
  - to: {default: 100}
"""
    diags = _diags(tmp_path, CHAIN, _retrying("a", 3) + post_only, "analysis: {max_retry_amplification: 4}\n")
    assert _codes(diags, "W601") == []


def test_amplification_without_gateway_starts_at_the_first_service(tmp_path):
    routes = _retrying("b", 4) + _retrying("c", 4)
    found = _codes(_diags(tmp_path, CHAIN, routes, gateway=False), "W601")
    assert len(found) == 1 and "one request to 'a' can become 5 × 5 = 25 tries of 'c' (a → b → c)" in found[0]


def test_a_very_deep_chain_is_analysed_without_recursion_and_shown_short(tmp_path):
    depth = 1500
    calls = {f"s{i}": [f"s{i + 1}"] for i in range(depth)} | {f"s{depth}": []}
    mesh = MESH.format(analysis="")
    text = mesh[: mesh.index("---")] + "".join(
        f"---\nkind: Service\nname: {n}\nport: {1000 + i}\napp_port: {20000 + i}\ncalls: [{', '.join(c)}]\n"
        for i, (n, c) in enumerate(calls.items())
    )
    text += "".join(_retrying(f"s{i}", 1) for i in range(1, depth + 1))
    (tmp_path / "mesh.yaml").write_text(text)
    diags = check(load(tmp_path).policy)
    found = [d.message for d in diags if d.code == "W601"]
    assert len(found) == 1
    assert f"= about 10^451 tries of 's{depth}'" in found[0] and "(1493 more)" in found[0]
    assert len(found[0]) < 500


# ---------------------------------------------------------------- W602


def test_outer_timeout_shorter_than_inner_retries(tmp_path):
    routes = """\
kind: Route
service: a
rules:
  - to: {default: 100}
    timeout: 2s
---
kind: Route
service: b
rules:
  - to: {default: 100}
    timeout: 10s
    retries: {attempts: 2, per_try_timeout: 1s}
"""
    calls = {"a": ["b"], "b": []}
    found = _codes(_diags(tmp_path, calls, routes), "W602")
    assert found == [
        "routes.yaml:5:5: warning[W602]: Route 'a' rules[0].timeout: callers of 'a' give up after 2s "
        "(timeout 2s, routes.yaml:4:5), but 'a' calling 'b' may take 3.1s (3 tries × per_try_timeout 1s + up to "
        "100ms of back-off, routes.yaml:10:5): the caller gets 504 (or retries) while 'b' still works for nobody; "
        "give the outer call a longer limit than the inner one can take, or the inner call fewer tries or a "
        "shorter timeout"
    ]
    fixed = routes.replace("timeout: 2s", "timeout: 4s")
    assert _codes(_diags(tmp_path, calls, fixed), "W602") == []


def test_outer_per_try_timeout_cuts_a_try_whose_inner_call_goes_on(tmp_path):
    routes = """\
kind: Route
service: b
rules:
  - to: {default: 100}
    timeout: 10s
    retries: {attempts: 2, per_try_timeout: 1s}
---
kind: Route
service: c
rules:
  - to: {default: 100}
    timeout: 3s
"""
    found = _codes(_diags(tmp_path, {"a": ["b"], "b": ["c"], "c": []}, routes), "W602")
    assert len(found) == 1
    assert found[0].startswith("routes.yaml:6:28: warning[W602]: Route 'b' rules[0].retries.per_try_timeout: "
                               "callers of 'b' give up after 1s (per_try_timeout 1s")
    assert "'b' calling 'c' may take 3s (timeout 3s, routes.yaml:11:5)" in found[0]


def test_a_longer_plain_inner_timeout_is_not_an_inversion(tmp_path):
    """Without retries on either side the inner work is wasted once: like policies/basic, no warning."""
    routes = "kind: Route\nservice: a\nrules:\n  - to: {default: 100}\n    timeout: 1s\n"
    assert _codes(_diags(tmp_path, CHAIN, routes), "W602") == []


def test_inner_retries_without_a_route_timeout_use_the_mesh_default(tmp_path):
    """The outer limit is the Mesh default (written nowhere in a rule): the warning goes to the inner rule."""
    routes = _retrying("b", 2, ", per_try_timeout: 10s").replace("    retries:", "    timeout: 30s\n    retries:")
    found = _codes(_diags(tmp_path, CHAIN, routes, "defaults: {timeout: 5s}\n"), "W602")
    assert len(found) == 1
    assert found[0].startswith("routes.yaml:5:5: warning[W602]: Route 'b' rules[0]: callers of 'a' give up after 5s")
    assert "may take 30s (timeout 30s, 3 tries included, routes.yaml:5:5)" in found[0]


# ---------------------------------------------------------------- W603


POOL = """\
---
kind: TrafficPolicy
service: c
connection_pool: {max_requests: 4}
"""


def test_retries_of_all_callers_can_fill_the_pool(tmp_path):
    calls = {"a": ["c"], "b": ["c"], "c": []}
    found = _codes(_diags(tmp_path, calls, _retrying("c", 2) + POOL), "W603")
    assert found == [
        "routes.yaml:6:5: warning[W603]: Route 'c' rules[0].retries: retries to 'c' can fill its connection pool: "
        "2 callers (a, b) × up to 3 retries in flight (retry_budget: 20% of max_requests 4, at least "
        "min_concurrency 3; with a budget Envoy ignores max_retries) = 6, not less than max_requests 4 "
        "(routes.yaml:10:19): in an outage retries alone can take every slot and first tries fail with 503 "
        "(overflow); lower retry_budget.percent or min_concurrency, or raise max_requests"
    ]
    one_caller = {"a": ["c"], "b": [], "c": []}
    assert _codes(_diags(tmp_path, one_caller, _retrying("c", 2) + POOL), "W603") == []


def test_pool_warning_goes_to_a_written_retry_budget(tmp_path):
    calls = {"a": ["c"], "b": [], "c": []}
    routes = _retrying("c", 2).replace("rules:", "retry_budget: {percent: 100}\nrules:") + POOL
    found = _codes(_diags(tmp_path, calls, routes), "W603")
    assert len(found) == 1 and found[0].startswith("routes.yaml:4:1: warning[W603]: Route 'c' retry_budget:")
    assert "a: up to 4 retries in flight (retry_budget: 100% of max_requests 4" in found[0]


def test_default_pools_are_not_filled_by_default_budgets(tmp_path):
    calls = {"a": ["d"], "b": ["d"], "c": ["d"], "d": []}
    assert _codes(_diags(tmp_path, calls, _retrying("d", 2)), "W603") == []


# ---------------------------------------------------------------- W604


def test_cycle_with_retries_reports_its_product_per_turn(tmp_path):
    calls = {"a": ["b"], "b": ["c"], "c": ["a"]}
    routes = _retrying("b", 2) + _retrying("a", 1)
    diags = _diags(tmp_path, calls, routes)
    assert _codes(diags, "W604") == [
        "routes.yaml:6:5: warning[W604]: Route 'b' rules[0].retries: retries multiply around the call cycle "
        "a → b → c → a: 3 × 2 = 6 tries per turn, so a request that goes round the loop multiplies the load on "
        "every service in it at each turn; retry on no edge of the loop (or break it), starting here "
        "(3 tries on a → b)"
    ]
    assert len(_codes(diags, "W201")) == 1  # the cycle itself, as before


def test_cycle_without_retries_is_only_w201(tmp_path):
    diags = _diags(tmp_path, {"a": ["b"], "b": ["a"]})
    assert _codes(diags, "W604") == [] and len(_codes(diags, "W201")) == 1


def test_a_mirror_closes_a_cycle(tmp_path):
    """a calls b; b's Route mirrors a's requests... to a copy of c, and c calls a: a → c (copy) → a."""
    calls = {"a": ["b"], "b": [], "c": ["a"]}
    routes = _retrying("a", 2) + """\
---
kind: Route
service: b
rules:
  - to: {default: 100}
    mirror: [{service: c, to: default}]
"""
    found = _codes(_diags(tmp_path, calls, routes, gateway=False), "W604")
    assert len(found) == 1 and "a → c (mirror copy)" not in found[0] and "a → c → a: 3 tries per turn" in found[0]


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize("case", EXAMPLES)
def test_no_resilience_warning_on_the_examples(case):
    loaded = load(ROOT / "policies" / case)
    assert [d.render() for d in check(loaded.policy) if d.code.startswith("W6")] == []


def test_random_meshes_are_analysed_the_same_way_twice(tmp_path):
    """Cycles, fan-out, mirrors and retries at random (fixed seed): no crash, and the same warnings twice."""
    import random

    rng = random.Random(14)
    for round_ in range(5):
        folder = tmp_path / str(round_)
        folder.mkdir()
        names = [f"s{i}" for i in range(25)]
        calls = {n: sorted(rng.sample([m for m in names if m != n], rng.randint(0, 3))) for n in names}
        routes = ""
        for n in rng.sample(names, 12):
            mirror = f"\n    mirror: [{{service: {rng.choice(names)}, to: default}}]" if rng.random() < 0.3 else ""
            per_try = f", per_try_timeout: {rng.randint(1, 5)}s" if rng.random() < 0.5 else ""
            routes += (
                f"---\nkind: Route\nservice: {n}\nrules:\n  - to: {{default: 100}}{mirror}\n"
                f"    timeout: {rng.randint(1, 20)}s\n    retries: {{attempts: {rng.randint(1, 4)}{per_try}}}\n"
            )
        first = [d.render() for d in _diags(folder, calls, routes, gateway=False) if d.code.startswith("W6")]
        again = [d.render() for d in _diags(folder, calls, routes, gateway=False) if d.code.startswith("W6")]
        assert first == again
        assert first, "a random mesh this dense has some finding"


def test_an_inner_call_without_timeout_outlives_any_outer_limit(tmp_path):
    """`timeout: 0s` turns Envoy's route timeout off: retries without per_try_timeout may go on for ever."""
    routes = _retrying("b", 2).replace("    retries:", "    timeout: 0s\n    retries:")
    found = _codes(_diags(tmp_path, {"a": ["b"], "b": []}, routes), "W602")
    assert len(found) == 1
    assert "callers of 'a' give up after 15s (the Mesh's defaults.timeout 15s" in found[0]
    assert "'a' calling 'b' may go on without limit (no timeout, 3 tries included, routes.yaml:5:5)" in found[0]
    # and an outer call without a timeout waits as long as it takes: nothing to report
    outer = "---\nkind: Route\nservice: a\nrules:\n  - to: {default: 100}\n    timeout: 0s\n"
    assert _codes(_diags(tmp_path, {"a": ["b"], "b": []}, routes + outer), "W602") == []


def test_an_external_service_ends_a_chain_and_has_only_its_callers_pools(tmp_path):
    """ExternalServices are callees like any other (their Route retries), with no inbound side of their own:
    the pool W603 compares with is each caller's own cluster."""
    external = """\
---
kind: ExternalService
name: psp
host: api.psp.example
port: 8080
---
kind: TrafficPolicy
service: psp
connection_pool: {max_requests: 3}
"""
    routes = _retrying("a", 3) + _retrying("psp", 3) + external
    diags = _diags(tmp_path, {"a": ["b", "psp"], "b": ["psp"]}, routes)
    amplified = _codes(diags, "W601")
    assert len(amplified) == 1 and "4 × 4 = 16 tries of 'psp' (web → a → b → psp)" in amplified[0]
    pools = _codes(diags, "W603")
    assert len(pools) == 1 and "a: up to 3 retries in flight (retry_budget: 20% of max_requests 3" in pools[0]


def test_a_rule_for_some_callers_counts_only_on_their_edges(tmp_path):
    """A rule with `match.callers` is only on those callers' sidecars: its retries (and its mirror copies) count
    on their edges, not on the other callers' (web → a → b would be 3 × 4 = 12 tries of b otherwise)."""
    from compiler.check.callgraph import CallGraph
    from compiler.policy.resolved import resolve

    routes = _retrying("a", 2) + """\
---
kind: Route
service: b
rules:
  - match: {callers: [x]}
    to: {default: 100}
    retries: {attempts: 3}
    mirror: [{service: c, to: default}]
  - to: {default: 100}
"""
    calls = {"a": ["b"], "b": [], "c": [], "x": ["b"]}
    assert _codes(_diags(tmp_path, calls, routes), "W601") == []
    graph = CallGraph(resolve(load(tmp_path).policy))
    edges = {(e.caller, e.callee, e.mirror): e.tries for n in graph.out for e in graph.out[n]}
    assert edges[("web", "a", False)] == 3
    assert edges[("a", "b", False)] == 1
    assert edges[("x", "b", False)] == 4
    assert ("x", "c", True) in edges and ("a", "c", True) not in edges
    assert [i for i, _ in graph.rules_of("b", "a")] == [1] and [i for i, _ in graph.rules_of("b", "x")] == [0, 1]
    # the rule for a too: a's edge makes 4 tries and web → a → b is 3 × 4 = 12 > 10
    found = _codes(_diags(tmp_path, calls, routes.replace("callers: [x]", "callers: [x, a]")), "W601")
    assert len(found) == 1 and "3 × 4 = 12 tries of 'b' (web → a → b)" in found[0]
