"""Route warnings that do not fail the build: W301 (tries cannot fit the timeout), W302 (non-idempotent retries), W203."""

from __future__ import annotations

from compiler.check import check
from compiler.policy import Mesh, PolicySet, Route, RouteRule, Service


def _codes(*rules, timeout="5s", skip=("W203",)):
    policy = PolicySet(
        (
            Mesh(name="m", defaults={"timeout": timeout}),
            Service(name="a", port=1000, app_port=2000, calls=["b"]),
            Service(name="b", port=1001, app_port=2001),
            Route(service="b", rules=list(rules)),
        )
    )
    return [(d.code, d.path, d.message) for d in check(policy) if d.code not in skip]


def _rule(**kw):
    return RouteRule(to={"default": 100}, **kw)


def test_w301_when_per_try_timeouts_cannot_fit_the_route_timeout():
    diags = _codes(_rule(match={"methods": ["GET"]}, timeout="1s", retries={"attempts": 2, "per_try_timeout": "400ms"}))
    assert diags == [
        (
            "W301",
            "rules[0].retries",
            "per_try_timeout 400ms × 3 tries = 1.2s exceeds the route timeout 1s: the last tries are cut off",
        )
    ]
    # fits: 300ms × 3 = 0.9 s < 1 s; the mesh default timeout counts when the rule has none
    assert _codes(_rule(match={"methods": ["GET"]}, timeout="1s", retries={"attempts": 2, "per_try_timeout": "300ms"})) == []
    assert [c for c, *_ in _codes(_rule(match={"methods": ["GET"]}, retries={"attempts": 4, "per_try_timeout": "2s"}), timeout="5s")] == ["W301"]


def test_w302_only_when_non_idempotent_methods_can_be_retried():
    assert [c for c, *_ in _codes(_rule(retries={"attempts": 1}))] == ["W302"]
    assert [c for c, *_ in _codes(_rule(match={"methods": ["GET", "POST"]}, retries={"attempts": 1}))] == ["W302"]
    assert _codes(_rule(match={"methods": ["GET", "PUT"]}, retries={"attempts": 1})) == []
    assert _codes(_rule(retries={"attempts": 1, "non_idempotent": True})) == []


def test_w203_when_no_rule_catches_everything():
    diags = _codes(RouteRule(match={"path": {"prefix": "/api"}}, to={"default": 100}), skip=())
    assert [c for c, *_ in diags] == ["W203"]


def test_w203_when_every_rule_is_for_some_callers():
    """Other callers' sidecars have none of the rules: their requests get 404."""
    diags = _codes(RouteRule(match={"callers": ["a"]}, to={"default": 100}), skip=())
    assert [c for c, *_ in diags] == ["W203"]


def test_callers_must_call_and_have_the_versions_named():
    """E255-E258 on policies built in memory (the error cases under tests/errors/caller* show the YAML positions)."""
    assert _codes(_rule(match={"callers": ["a"]}), _rule()) == []
    found = _codes(
        _rule(match={"callers": ["c", "b", {"service": "a", "versions": ["v1"]}]}),
        _rule(),
    )
    assert [(c, p) for c, p, _ in found] == [
        ("E255", "rules[0].match.callers[0]"),
        ("E256", "rules[0].match.callers[1]"),
        ("E257", "rules[0].match.callers[2].versions"),
    ]
    assert "unknown caller 'c'" in found[0][2] and "this Route's own service" in found[1][2]
