"""Shadowed rules (E218): `covers()` case by case, and the diagnostic the check reports.

Every `False` row is a near-miss that must not be reported: the earlier rule
leaves some request of the later one to it (or coverage cannot be proven).
"""

from __future__ import annotations

import pytest

from compiler.check import check
from compiler.check.shadowing import check_shadowed_rules, covers
from compiler.policy import Mesh, PolicySet, Route, Service
from compiler.policy.route import Match


def m(**fields) -> Match:
    """A Match from plain values, written like the YAML: m(path={"prefix": "/api"}, methods=["GET"])."""
    return Match.model_validate(fields)


def h(name: str, **cond) -> dict:
    return {"name": name, **cond}


CASES = [
    # --- path ------------------------------------------------------------
    ("catch-all covers everything", m(), m(path={"exact": "/a"}, methods=["GET"], headers=[h("x", exact="1")]), True),
    ("catch-all covers a regex", m(path={"prefix": "/"}), m(path={"regex": "/a/.*"}), True),
    ("catch-all covers a catch-all", m(), m(), True),
    ("prefix covers a longer prefix", m(path={"prefix": "/api"}), m(path={"prefix": "/api/v1"}), True),
    ("prefix has no segment boundary", m(path={"prefix": "/api"}), m(path={"prefix": "/apis"}), True),
    ("prefix covers the same prefix", m(path={"prefix": "/api/"}), m(path={"prefix": "/api/"}), True),
    ("prefix covers an exact path under it", m(path={"prefix": "/api"}), m(path={"exact": "/api/x"}), True),
    ("prefix covers the exact path it spells", m(path={"prefix": "/api"}), m(path={"exact": "/api"}), True),
    ("exact covers the same exact", m(path={"exact": "/a"}), m(path={"exact": "/a"}), True),
    ("regex covers the identical regex", m(path={"regex": "/a/[0-9]+"}), m(path={"regex": "/a/[0-9]+"}), True),
    ("prefix is case-sensitive", m(path={"prefix": "/api"}), m(path={"prefix": "/API"}), False),
    ("shorter prefix later", m(path={"prefix": "/api/v1"}), m(path={"prefix": "/api"}), False),
    ("prefix vs exact outside it", m(path={"prefix": "/api"}), m(path={"exact": "/ap"}), False),
    ("exact does not cover a prefix", m(path={"exact": "/a"}), m(path={"prefix": "/a"}), False),
    ("exact vs another exact", m(path={"exact": "/a"}), m(path={"exact": "/a/"}), False),
    ("exact is case-sensitive", m(path={"exact": "/a"}), m(path={"exact": "/A"}), False),
    ("non-root prefix vs regex", m(path={"prefix": "/a"}), m(path={"regex": "/a/.*"}), False),
    ("different regex (even if wider)", m(path={"regex": "/a/.*"}), m(path={"regex": "/a/b"}), False),
    ("regex vs exact it matches", m(path={"regex": "/a/.*"}), m(path={"exact": "/a/b"}), False),
    ("regex vs prefix", m(path={"regex": "/.*"}), m(path={"prefix": "/a"}), False),
    ("exact vs regex", m(path={"exact": "/a"}), m(path={"regex": "/a"}), False),
    # --- methods ---------------------------------------------------------
    ("no methods covers some", m(), m(methods=["POST"]), True),
    ("methods superset", m(methods=["GET", "POST"]), m(methods=["POST"]), True),
    ("same methods, other order", m(methods=["GET", "HEAD"]), m(methods=["HEAD", "GET"]), True),
    ("methods subset later is wider", m(methods=["GET"]), m(methods=["GET", "POST"]), False),
    ("methods vs any method", m(methods=["GET"]), m(), False),
    ("disjoint methods", m(methods=["GET"]), m(methods=["PUT"]), False),
    # --- headers ---------------------------------------------------------
    ("present covers exact", m(headers=[h("x", present=True)]), m(headers=[h("x", exact="1")]), True),
    ("present covers prefix", m(headers=[h("x", present=True)]), m(headers=[h("x", prefix="a")]), True),
    ("present covers regex", m(headers=[h("x", present=True)]), m(headers=[h("x", regex="a.*")]), True),
    ("present covers present", m(headers=[h("x", present=True)]), m(headers=[h("x", present=True)]), True),
    ("exact covers exact", m(headers=[h("x", exact="1")]), m(headers=[h("x", exact="1")]), True),
    ("prefix covers exact under it", m(headers=[h("x", prefix="be")]), m(headers=[h("x", exact="beta")]), True),
    ("prefix covers longer prefix", m(headers=[h("x", prefix="be")]), m(headers=[h("x", prefix="bet")]), True),
    ("regex covers identical regex", m(headers=[h("x", regex="b.*")]), m(headers=[h("x", regex="b.*")]), True),
    ("absent covers absent", m(headers=[h("x", present=False)]), m(headers=[h("x", present=False)]), True),
    (
        "later rule has more conditions",
        m(headers=[h("x", exact="1")]),
        m(path={"prefix": "/a"}, methods=["GET"], headers=[h("y", present=True), h("x", exact="1")]),
        True,
    ),
    (
        "every earlier condition implied",
        m(headers=[h("x", present=True), h("y", prefix="a")]),
        m(headers=[h("y", exact="abc"), h("x", regex=".+")]),
        True,
    ),
    ("header exact vs prefix on another header", m(headers=[h("x", exact="1")]), m(headers=[h("y", prefix="1")]), False),
    ("header exact vs same value on another header", m(headers=[h("x", exact="1")]), m(headers=[h("y", exact="1")]), False),
    ("header exact vs no header condition", m(headers=[h("x", exact="1")]), m(), False),
    ("header exact vs prefix", m(headers=[h("x", exact="beta")]), m(headers=[h("x", prefix="beta")]), False),
    ("header exact vs other value", m(headers=[h("x", exact="beta")]), m(headers=[h("x", exact="Beta")]), False),
    ("header exact vs present", m(headers=[h("x", exact="1")]), m(headers=[h("x", present=True)]), False),
    ("header prefix vs shorter prefix", m(headers=[h("x", prefix="bet")]), m(headers=[h("x", prefix="be")]), False),
    ("header prefix vs exact outside it", m(headers=[h("x", prefix="be")]), m(headers=[h("x", exact="alpha")]), False),
    ("header prefix vs regex", m(headers=[h("x", prefix="b")]), m(headers=[h("x", regex="b.*")]), False),
    ("header regex vs other regex", m(headers=[h("x", regex="b.*")]), m(headers=[h("x", regex="be.*")]), False),
    ("header regex vs exact it matches", m(headers=[h("x", regex="b.*")]), m(headers=[h("x", exact="beta")]), False),
    ("header present vs absent", m(headers=[h("x", present=True)]), m(headers=[h("x", present=False)]), False),
    ("header absent vs present", m(headers=[h("x", present=False)]), m(headers=[h("x", present=True)]), False),
    ("header absent vs nothing", m(headers=[h("x", present=False)]), m(), False),
    ("header absent vs exact", m(headers=[h("x", present=False)]), m(headers=[h("x", exact="1")]), False),
    (
        "one earlier condition not implied",
        m(headers=[h("x", present=True), h("y", exact="1")]),
        m(headers=[h("x", exact="1")]),
        False,
    ),
    # --- query -----------------------------------------------------------
    ("query present covers exact", m(query=[h("v", present=True)]), m(query=[h("v", exact="b")]), True),
    ("query present covers regex", m(query=[h("v", present=True)]), m(query=[h("v", regex="b+")]), True),
    ("query exact covers exact", m(query=[h("v", exact="b")]), m(query=[h("v", exact="b")]), True),
    ("query prefix covers exact", m(query=[h("v", prefix="b")]), m(query=[h("v", exact="b2")]), True),
    ("query prefix covers prefix", m(query=[h("v", prefix="b")]), m(query=[h("v", prefix="b2")]), True),
    ("query regex covers identical regex", m(query=[h("v", regex="b+")]), m(query=[h("v", regex="b+")]), True),
    ("query on another parameter", m(query=[h("v", exact="b")]), m(query=[h("w", exact="b")]), False),
    ("query exact vs prefix", m(query=[h("v", exact="b")]), m(query=[h("v", prefix="b")]), False),
    ("query exact vs present", m(query=[h("v", exact="b")]), m(query=[h("v", present=True)]), False),
    ("query regex vs other regex", m(query=[h("v", regex="b+")]), m(query=[h("v", regex="b")]), False),
    ("query vs header of that name", m(query=[h("v", exact="b")]), m(headers=[h("v", exact="b")]), False),
    ("query vs nothing", m(query=[h("v", present=True)]), m(), False),
    # --- cookies ---------------------------------------------------------
    ("cookie exact covers exact", m(cookies=[h("ab", exact="b")]), m(cookies=[h("ab", exact="b")]), True),
    ("cookie regex covers identical", m(cookies=[h("ab", regex="b.*")]), m(cookies=[h("ab", regex="b.*")]), True),
    (
        "cookie among others",
        m(cookies=[h("ab", exact="b")]),
        m(cookies=[h("sid", regex=".+"), h("ab", exact="b")], headers=[h("x", present=True)]),
        True,
    ),
    ("cookie other value", m(cookies=[h("ab", exact="b")]), m(cookies=[h("ab", exact="c")]), False),
    ("cookie other name", m(cookies=[h("ab", exact="b")]), m(cookies=[h("cd", exact="b")]), False),
    ("cookie regex vs exact it matches", m(cookies=[h("ab", regex="b.*")]), m(cookies=[h("ab", exact="b")]), False),
    ("cookie exact vs regex", m(cookies=[h("ab", exact="b")]), m(cookies=[h("ab", regex="b")]), False),
    ("cookie vs nothing", m(cookies=[h("ab", exact="b")]), m(), False),
    ("cookie vs the Cookie header", m(cookies=[h("ab", exact="b")]), m(headers=[h("cookie", exact="ab=b")]), False),
    # --- callers ---------------------------------------------------------
    ("general rule covers a caller-limited one", m(), m(callers=["reviews"]), True),
    ("caller-limited rule does not cover a general one", m(callers=["reviews"]), m(), False),
    ("same caller covers", m(callers=["reviews"]), m(callers=["reviews"], path={"prefix": "/a"}), True),
    ("more callers cover fewer", m(callers=["reviews", "ingress"]), m(callers=["ingress"]), True),
    ("fewer callers do not cover more", m(callers=["reviews"]), m(callers=["reviews", "productpage"]), False),
    ("another caller", m(callers=["reviews"]), m(callers=["productpage"]), False),
    ("caller covers some of its versions", m(callers=["reviews"]), m(callers=[{"service": "reviews", "versions": ["v1"]}]), True),
    (
        "versions cover fewer versions",
        m(callers=[{"service": "reviews", "versions": ["v1", "v2"]}]),
        m(callers=[{"service": "reviews", "versions": ["v2"]}]),
        True,
    ),
    ("some versions do not cover the caller", m(callers=[{"service": "reviews", "versions": ["v1"]}]), m(callers=["reviews"]), False),
    (
        "versions do not cover other versions",
        m(callers=[{"service": "reviews", "versions": ["v1"]}]),
        m(callers=[{"service": "reviews", "versions": ["v1", "v3"]}]),
        False,
    ),
    ("a caller's versions in two entries", m(callers=[{"service": "reviews", "versions": ["v1"]}, {"service": "reviews", "versions": ["v2"]}]), m(callers=[{"service": "reviews", "versions": ["v2", "v1"]}]), True),
    ("callers and a path both needed", m(callers=["reviews"], path={"prefix": "/a"}), m(callers=["reviews"]), False),
    # --- everything together ---------------------------------------------
    (
        "all conditions implied",
        m(path={"prefix": "/api"}, methods=["GET", "POST"], headers=[h("x", present=True)], query=[h("v", prefix="b")], cookies=[h("ab", exact="1")]),
        m(path={"exact": "/api/a"}, methods=["GET"], headers=[h("x", exact="1")], query=[h("v", exact="b1")], cookies=[h("ab", exact="1")]),
        True,
    ),
    (
        "all but the path implied",
        m(path={"prefix": "/api"}, methods=["GET"], headers=[h("x", present=True)]),
        m(path={"prefix": "/ap"}, methods=["GET"], headers=[h("x", exact="1")]),
        False,
    ),
    (
        "all but the methods implied",
        m(path={"prefix": "/api"}, methods=["GET"], headers=[h("x", present=True)]),
        m(path={"prefix": "/api"}, methods=["GET", "HEAD"], headers=[h("x", exact="1")]),
        False,
    ),
]


@pytest.mark.parametrize("earlier, later, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_covers(earlier, later, expected):
    assert covers(earlier, later) is expected


def test_case_names_are_unique():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names))


def _policy(*rules: dict) -> PolicySet:
    svc = Service(name="reviews", port=9080, app_port=19080, versions={"v1": {}, "v2": {}})
    route = Route.model_validate({"service": "reviews", "rules": list(rules)})
    return PolicySet((Mesh(name="m"), svc, route))


def test_names_the_first_earlier_rule_that_covers():
    policy = _policy(
        {"match": {"headers": [h("x-user-group", exact="beta")]}, "to": {"v2": 100}},
        {"to": {"v1": 100}},
        {"match": {"headers": [h("x-user-group", exact="beta")], "methods": ["GET"]}, "to": {"v2": 100}},
        {"match": {"path": {"prefix": "/reviews"}}, "to": {"v2": 100}},
    )
    diags = list(check_shadowed_rules(policy))
    assert [(d.code, d.path, d.message) for d in diags] == [
        ("E218", "rules[2]", "never matches: rules[0] (at {0}) already matches every request it matches"),
        ("E218", "rules[3]", "never matches: rules[1] (at {0}) already matches every request it matches"),
    ]
    assert all(d.is_error and d.subject == "Route 'reviews'" and len(d.refs) == 1 for d in diags)


def test_no_report_when_each_rule_can_match():
    policy = _policy(
        {"match": {"path": {"exact": "/api"}}, "to": {"v2": 100}},
        {"match": {"path": {"prefix": "/api/"}}, "to": {"v2": 100}},
        {"match": {"path": {"prefix": "/API"}}, "to": {"v2": 100}},
        {"match": {"path": {"prefix": "/api"}, "methods": ["GET", "POST"]}, "to": {"v2": 100}},
        {"to": {"v1": 100}},
    )
    assert list(check_shadowed_rules(policy)) == []
    assert [d for d in check(policy) if d.is_error] == []


def test_runs_as_part_of_check():
    policy = _policy({"to": {"v1": 100}}, {"match": {"methods": ["GET"]}, "to": {"v2": 100}})
    assert [d.code for d in check(policy) if d.is_error] == ["E218"]


def test_a_caller_limited_rule_does_not_shadow_a_later_general_one():
    """callers: [productpage] first, the general rule after: other callers' sidecars have only the second."""
    policy = _policy({"match": {"callers": ["productpage"]}, "to": {"v2": 100}}, {"to": {"v1": 100}})
    assert list(check_shadowed_rules(policy)) == []
    # the other way round the caller-limited rule never matches (on productpage's sidecar the general one wins)
    policy = _policy({"to": {"v1": 100}}, {"match": {"callers": [{"service": "productpage", "versions": ["v1"]}]}, "to": {"v2": 100}})
    assert [(d.code, d.path) for d in check_shadowed_rules(policy)] == [("E218", "rules[1]")]


def test_a_caller_limited_rule_does_not_match_everything():
    """W203 and the gateway's shadowing read matches_everything: a rule for some callers leaves the others' requests
    to the next rules (404 when there is none)."""
    from compiler.check.routes import matches_everything
    from compiler.policy.route import RouteRule

    assert matches_everything(RouteRule(to={"v1": 100}))
    assert not matches_everything(RouteRule(match={"callers": ["productpage"]}, to={"v1": 100}))
    assert not matches_everything(RouteRule(match={"callers": [{"service": "productpage", "versions": ["v1"]}]}, to={"v1": 100}))
