"""The call-cycle warning: one per group of services that call each other, at any depth."""

from __future__ import annotations

from compiler.check import check
from compiler.check.graph import strongly_connected
from compiler.policy import Mesh, PolicySet, Service


def _mesh(calls: dict[str, list[str]]) -> PolicySet:
    services = [Service(name=n, port=1000, app_port=2000, calls=c) for n, c in calls.items()]
    return PolicySet((Mesh(name="m"), *services))


def test_one_warning_per_cycle_group_naming_its_members():
    diags = check(_mesh({"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["f"], "f": ["e"]}))
    cycles = [d for d in diags if d.code == "W201"]
    assert [d.message for d in cycles] == [
        "call cycle among 3 services (a, b, c); retries and timeouts multiply around a loop",
        "call cycle among 2 services (e, f); retries and timeouts multiply around a loop",
    ]
    assert not any(d.is_error for d in diags)


def test_acyclic_graph_has_no_warning():
    assert not [d for d in check(_mesh({"a": ["b", "c"], "b": ["c"], "c": []})) if d.code == "W201"]


def test_deep_call_chains_do_not_exhaust_the_stack():
    """A chain far deeper than Python's recursion limit (the first version crashed at ~1,000)."""
    depth = 20_000
    chain = {f"s{i}": [f"s{i + 1}"] for i in range(depth)}
    chain[f"s{depth}"] = ["s0"]
    groups = strongly_connected(chain)
    assert len(groups) == 1 and len(groups[0]) == depth + 1
    chain[f"s{depth}"] = []
    assert strongly_connected(chain) == []
