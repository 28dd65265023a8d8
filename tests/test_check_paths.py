"""Security paths: path-prefix coverage (W244), paths no request can have (E270), kept escaped slashes (W271),
and how a security prefix is lowered (a path prefix, optionally case-insensitive)."""

from __future__ import annotations

import pytest

from compiler.check import check
from compiler.check.shadowing import covers_path
from compiler.ir import PathCondition
from compiler.lower.access import security_path
from compiler.policy import AuthorizationPolicy, JwtProvider, Mesh, Paths, PolicySet, RequestAuthentication, Service
from compiler.policy.route import PathMatch

JWKS = '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'


def p(**kw) -> PathMatch:
    return PathMatch(**kw)


SEGMENT_CASES = [
    # a, b, case_sensitive, covers
    (p(prefix="/admin"), p(prefix="/admin"), True, True),
    (p(prefix="/admin"), p(prefix="/admin/x"), True, True),
    (p(prefix="/admin"), p(prefix="/admin/"), True, True),
    (p(prefix="/admin"), p(exact="/admin"), True, True),
    (p(prefix="/admin"), p(exact="/admin/x"), True, True),
    (p(prefix="/admin"), p(prefix="/administrator"), True, False),  # a string prefix, not a path under it
    (p(prefix="/admin"), p(exact="/administrator"), True, False),
    (p(prefix="/admin/"), p(prefix="/admin"), True, False),  # /admin itself is not under /admin/
    (p(prefix="/admin/"), p(exact="/admin/x"), True, True),
    (p(prefix="/"), p(regex="/a.*"), True, True),
    (p(prefix="/admin"), p(prefix="/ADMIN/x"), True, False),
    (p(prefix="/admin"), p(prefix="/ADMIN/x"), False, True),
    (p(prefix="/admin"), p(exact="/Administrator"), False, False),
    (p(exact="/debug"), p(exact="/DEBUG"), False, True),
    (p(exact="/debug"), p(exact="/DEBUG"), True, False),
    (p(regex="/a.*"), p(regex="/A.*"), False, False),  # regexes: only the same text
]


@pytest.mark.parametrize("a, b, case_sensitive, expected", SEGMENT_CASES)
def test_security_paths_cover_by_segment(a, b, case_sensitive, expected):
    assert covers_path(a, b, segments=True, case_sensitive=case_sensitive) is expected


def test_route_paths_stay_string_prefixes():
    assert covers_path(p(prefix="/admin"), p(prefix="/administrator")) is True
    assert covers_path(p(prefix="/admin"), p(prefix="/ADMIN")) is False


def _policy(*docs, paths: dict | None = None) -> PolicySet:
    mesh = Mesh(name="m", **({"paths": paths} if paths else {}))
    return PolicySet((mesh, Service(name="a", port=1000, app_port=2000), *docs))


def _codes(policy: PolicySet) -> list[tuple[str, str]]:
    return [(d.code, d.path) for d in check(policy)]


def test_w244_follows_path_prefixes_and_case():
    ap = AuthorizationPolicy(
        service="a",
        allow=[{"paths": [{"prefix": "/administrator"}]}, {"paths": [{"prefix": "/Admin/x"}]}, {"paths": [{"exact": "/admin"}]}],
        deny=[{"paths": [{"prefix": "/admin"}]}],
    )
    assert _codes(_policy(ap)) == [("W244", "allow[2]")]
    assert _codes(_policy(ap, paths={"case_sensitive": False})) == [("W244", "allow[1]"), ("W244", "allow[2]")]


def test_e270_paths_no_normalised_request_has():
    ap = AuthorizationPolicy(
        service="a",
        deny=[{"paths": [{"prefix": "/ok"}, {"exact": "/a?b=1"}, {"prefix": "/a#b"}, {"prefix": "//a"},
                         {"exact": "/a/./b"}, {"prefix": "/a/.."}, {"prefix": "/a%2fb"}, {"regex": "/a//b"}]}],
    )
    ra = RequestAuthentication(
        service="a", providers=[JwtProvider(name="p", issuer="i", jwks=JWKS)], rules=[{"paths": ["/x/../y", "/fine/"]}]
    )
    expected = [
        ("E270", "deny[0].paths[1].exact"),
        ("E270", "deny[0].paths[2].prefix"),
        ("E270", "deny[0].paths[3].prefix"),
        ("E270", "deny[0].paths[4].exact"),
        ("E270", "deny[0].paths[5].prefix"),
        ("E270", "deny[0].paths[6].prefix"),
        ("E270", "rules[0].paths[0]"),
    ]
    assert sorted(_codes(_policy(ap, ra))) == sorted(expected)
    # With escaped slashes kept, a rule may name one (and every policy with paths gets W271).
    kept = _codes(_policy(ap, ra, paths={"escaped_slashes": "keep"}))
    assert ("E270", "deny[0].paths[6].prefix") not in kept
    assert [c for c in kept if c[0] == "W271"] == [("W271", "deny[0].paths[0].prefix"), ("W271", "rules[0].paths[0]")]


def test_w271_only_with_keep_and_path_rules():
    no_paths = AuthorizationPolicy(service="a", deny=[{"methods": ["DELETE"]}])
    assert _codes(_policy(no_paths, paths={"escaped_slashes": "keep"})) == []
    with_paths = AuthorizationPolicy(service="a", deny=[{"paths": [{"regex": "/admin.*"}]}])
    for mode in ("reject", "redirect", "decode"):
        assert _codes(_policy(with_paths, paths={"escaped_slashes": mode})) == []
    assert _codes(_policy(with_paths, paths={"escaped_slashes": "keep"})) == [("W271", "deny[0].paths[0].regex")]


def test_security_prefixes_lower_to_path_prefixes():
    assert security_path("prefix", "/admin", Paths()) == PathCondition("path_prefix", "/admin")
    assert security_path("exact", "/a", Paths(case_sensitive=False)) == PathCondition("exact", "/a", ignore_case=True)
    assert security_path("regex", "/a.*", Paths()) == PathCondition("regex", "/a.*")
