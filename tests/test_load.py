"""Stage 1, load: source positions, value types (durations, endpoints) and YAML rules."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from compiler.diagnostics import Source
from compiler.load import load
from compiler.load.yaml_source import parse_yaml
from compiler.policy import Duration, Endpoint, RouteRule, Service


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _load_ok(root: Path):
    result = load(root)
    assert [d.render() for d in result.diagnostics] == []
    return result.policy


# --------------------------------------------------------------------------
# positions of YAML-loaded policies
# --------------------------------------------------------------------------

SHOP = """
    kind: Mesh
    name: shop
    ---
    # reviews has two versions
    kind: Service
    name: reviews
    port: 9080
    app_port: 19081
    versions:
      v1: {}
      v2:
        endpoints:
          - 127.0.0.1:19082
          - "[::1]:19083"
    calls: [ratings, details]
    sidecar: {address: 127.0.0.3, admin_port: 15010}
    ---
    kind: Route
    service: reviews
    rules:
      - match:
          headers: [{name: x-user-group, exact: beta}]
        to: {v2: 100}
      - to:
          v1: 90
          v2: 10
"""


@pytest.fixture
def shop(tmp_path):
    _write(tmp_path, "shop.yaml", SHOP)
    policy = _load_ok(tmp_path)
    return {d.subject: d for d in policy.documents}


def test_document_source_is_its_first_key(shop):
    assert shop["Mesh 'shop'"].source == Source("shop.yaml", 1, 1)
    assert shop["Service 'reviews'"].source == Source("shop.yaml", 5, 1)  # the comment above is not the document
    assert shop["Route 'reviews'"].source == Source("shop.yaml", 18, 1)


def test_where_version_key(shop):
    svc = shop["Service 'reviews'"]
    assert svc.where("versions", "v2") == Source("shop.yaml", 11, 3)
    assert svc.where("versions", "v1") == Source("shop.yaml", 10, 3)
    assert svc.where("versions") == Source("shop.yaml", 9, 1)


def test_where_sequence_items_and_flow_mappings(shop):
    svc = shop["Service 'reviews'"]
    assert svc.where("versions", "v2", "endpoints", 0) == Source("shop.yaml", 13, 9)
    assert svc.where("versions", "v2", "endpoints", 1) == Source("shop.yaml", 14, 9)
    assert svc.where("calls", 1) == Source("shop.yaml", 15, 18)
    assert svc.where("sidecar", "admin_port") == Source("shop.yaml", 16, 31)


def test_where_falls_back_to_nearest_recorded_ancestor(shop):
    svc = shop["Service 'reviews'"]
    assert svc.where("versions", "v2", "endpoints", 7) == Source("shop.yaml", 12, 5)  # no item 7: 'endpoints'
    assert svc.where("sidecar", "outbound_port") == Source("shop.yaml", 16, 1)  # not written: 'sidecar'
    assert svc.where("default_version") == svc.source  # nothing recorded: the document
    assert svc.where() == svc.source


def test_where_route_rule_targets(shop):
    route = shop["Route 'reviews'"]
    assert route.where("rules", 0) == Source("shop.yaml", 21, 5)
    assert route.where("rules", 0, "to", "v2") == Source("shop.yaml", 23, 10)
    assert route.where("rules", 1, "to") == Source("shop.yaml", 24, 5)
    assert route.where("rules", 1, "to", "v2") == Source("shop.yaml", 26, 7)


def test_positions_are_per_file_and_relative(tmp_path):
    _write(tmp_path, "mesh.yaml", "kind: Mesh\nname: shop\n")
    (tmp_path / "team" / "a").mkdir(parents=True)
    (tmp_path / "team" / "a" / "svc.yml").write_text("\n\nkind: Service\nname: a\nport: 1\napp_port: 2\n")
    policy = _load_ok(tmp_path)
    (svc,) = policy.services
    assert svc.source == Source("team/a/svc.yml", 3, 1)
    assert svc.where("port") == Source("team/a/svc.yml", 5, 1)


def test_wrong_type_points_at_the_value_not_the_key(tmp_path):
    _write(tmp_path, "shop.yaml", """
        kind: Service
        name: reviews
        port:
          "9080"
        app_port: 19081
    """)
    (diag,) = load(tmp_path).diagnostics
    assert (diag.code, diag.source, diag.path) == ("E104", Source("shop.yaml", 4, 3), "port")


def test_files_load_in_path_order_and_hidden_ones_are_skipped(tmp_path):
    _write(tmp_path, "b.yaml", "kind: Service\nname: b\nport: 1\napp_port: 2\n")
    _write(tmp_path, "a.yaml", "kind: Service\nname: a\nport: 1\napp_port: 2\n")
    _write(tmp_path, ".hidden.yaml", "not: [valid")
    _write(tmp_path, "_draft/c.yaml", "not: [valid")
    _write(tmp_path, "notes.txt", "not: [valid")
    policy = _load_ok(tmp_path)
    assert [s.name for s in policy.services] == ["a", "b"]


# --------------------------------------------------------------------------
# positions of Python-defined policies
# --------------------------------------------------------------------------

PY_POLICY = '''
from compiler.policy import Mesh, Route, RouteRule, Service

mesh = Mesh(name="shop")

reviews = Service(
    name="reviews",
    port=9080,
    app_port=19081,
)


def make(name, port):
    return Service(name=name, port=port, app_port=port + 10000)


ratings = make("ratings", 9081)
routes = [
    Route(service="reviews", rules=[RouteRule(to={"default": 100})]),
]
'''


def test_python_objects_record_the_constructing_line(tmp_path):
    _write(tmp_path, "policies.py", PY_POLICY)
    policy = _load_ok(tmp_path)
    lines = {d.subject: d.source for d in policy.documents}
    assert lines == {
        "Mesh 'shop'": Source("policies.py", 3, 1),
        "Service 'reviews'": Source("policies.py", 5, 1),  # a call over several lines: its first line
        "Service 'ratings'": Source("policies.py", 13, 1),  # the policy file's line, inside a helper
        "Route 'reviews'": Source("policies.py", 18, 1),  # inside a list
    }
    assert [d.subject for d in policy.documents] == [
        "Mesh 'shop'", "Service 'reviews'", "Service 'ratings'", "Route 'reviews'"
    ]
    # no field positions for Python objects: every path answers with the constructing line
    reviews = next(s for s in policy.services if s.name == "reviews")
    assert reviews.where("versions", "v2") == Source("policies.py", 5, 1)


def test_objects_made_outside_a_policy_file_say_so():
    from compiler.policy.base import IN_MEMORY

    svc = Service(name="reviews", port=9080, app_port=19081)
    assert svc.source == IN_MEMORY
    assert svc.where("port") == IN_MEMORY


def test_python_validation_error_points_at_the_argument(tmp_path):
    _write(tmp_path, "bad.py", '''
        from compiler.policy import Service, Version

        reviews = Service(
            name="reviews",
            port=9080,
            versions={"v1": {"endpoints": ["127.0.0.1:1", "nope"]}},
        )
    ''')
    (diag,) = load(tmp_path).diagnostics
    assert diag.code == "E104"
    assert diag.subject == "Service 'reviews'"
    assert diag.path == "versions.v1.endpoints[1]"
    assert diag.source == Source("bad.py", 6, 51)  # the string "nope"


def test_python_syntax_error_has_its_line(tmp_path):
    _write(tmp_path, "bad.py", "x = 1\ny = (\n")
    (diag,) = load(tmp_path).diagnostics
    assert diag.code == "E010"
    assert diag.source.file == "bad.py" and diag.source.line == 2


def test_python_policy_leaves_no_bytecode_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    _write(tmp_path, "policies.py", PY_POLICY)
    _load_ok(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policies.py"]


# --------------------------------------------------------------------------
# YAML rules
# --------------------------------------------------------------------------


def test_alias_is_refused_at_the_first_alias():
    text = "kind: Mesh\nname: shop\na: &a [x, y]\nb: [1, *a, *a]\n"
    docs, diags = parse_yaml(text, "f.yaml")
    assert docs == []
    assert [(d.code, d.source) for d in diags] == [("E002", Source("f.yaml", 4, 8))]


def test_alias_of_a_key_is_refused():
    _, diags = parse_yaml("kind: Mesh\n&k name: shop\nother: *k\n", "f.yaml")
    assert [(d.code, d.source) for d in diags] == [("E002", Source("f.yaml", 3, 8))]


def test_alias_bomb_is_refused_before_expansion():
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 40)]
    started = time.monotonic()
    _, diags = parse_yaml("\n".join(lines), "bomb.yaml")
    assert time.monotonic() - started < 2
    assert [(d.code, d.source) for d in diags] == [("E002", Source("bomb.yaml", 2, 10))]


def test_duplicate_key_names_both_lines():
    _, diags = parse_yaml("kind: Service\nsidecar:\n  address: 127.0.0.2\n  address: 127.0.0.3\n", "f.yaml")
    assert [(d.code, d.source, d.message) for d in diags] == [
        ("E003", Source("f.yaml", 4, 3), "duplicate key 'address' (first at line 3)")
    ]


def test_syntax_error_says_where_the_construct_started():
    _, diags = parse_yaml("kind: Service\ncalls: [a, b\nport: 1\n", "f.yaml")
    (diag,) = diags
    assert diag.code == "E001"
    assert diag.source == Source("f.yaml", 3, 5)
    assert "flow sequence that starts at line 2, column 8" in diag.message


def test_plain_keys_are_names_not_yaml_11_booleans():
    """`on:` (a retry field) would be the boolean True in YAML 1.1; keys are names, so it stays 'on'."""
    docs, diags = parse_yaml("kind: Route\non: [5xx]\nyes: 1\n80: http\n", "f.yaml")
    assert not diags
    assert docs[0].data == {"kind": "Route", "on": ["5xx"], "yes": 1, "80": "http"}


def test_structured_keys_are_refused():
    _, diags = parse_yaml("kind: Service\n[a, b]: http\n", "f.yaml")
    assert [(d.code, d.source) for d in diags] == [("E004", Source("f.yaml", 2, 1))]


# --------------------------------------------------------------------------
# durations
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ms, proto, shown",
    [
        ("250ms", 250, "0.250s", "250ms"),
        ("2s", 2000, "2s", "2s"),
        ("1m", 60_000, "60s", "1m"),
        ("1h", 3_600_000, "3600s", "1h"),
        ("1500ms", 1500, "1.500s", "1500ms"),
        ("90s", 90_000, "90s", "90s"),
        ("0s", 0, "0s", "0ms"),
    ],
)
def test_duration_parses(text, ms, proto, shown):
    d = Duration.parse(text)
    assert d == Duration(ms)
    assert d.proto() == proto
    assert str(d) == shown
    assert Duration.parse(str(d)) == d


@pytest.mark.parametrize("text", ["2", "1.5s", "-1s", "s", "2 s", "2sec", "1d", "", "ms250", "2S", 2, None])
def test_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        Duration.parse(text)


def test_duration_in_a_model():
    assert RouteRule(to={"v1": 100}, timeout="250ms").timeout == Duration(250)
    with pytest.raises(ValidationError, match="invalid duration '1.5s'"):
        RouteRule(to={"v1": 100}, timeout="1.5s")
    with pytest.raises(ValidationError, match="expected a duration string"):
        RouteRule(to={"v1": 100}, timeout=5)


# --------------------------------------------------------------------------
# endpoints
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, host, port, is_ip, shown",
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, True, "127.0.0.1:8080"),
        ("[::1]:80", "::1", 80, True, "[::1]:80"),
        ("[2001:db8::1]:9080", "2001:db8::1", 9080, True, "[2001:db8::1]:9080"),
        ("reviews:9080", "reviews", 9080, False, "reviews:9080"),
        ("reviews.default.svc.cluster.local:9080", "reviews.default.svc.cluster.local", 9080, False,
         "reviews.default.svc.cluster.local:9080"),
        ("localhost:1", "localhost", 1, False, "localhost:1"),
        ("10.0.0.1:65535", "10.0.0.1", 65535, True, "10.0.0.1:65535"),
    ],
)
def test_endpoint_parses(text, host, port, is_ip, shown):
    ep = Endpoint.parse(text)
    assert (ep.host, ep.port, ep.is_ip, str(ep)) == (host, port, is_ip, shown)
    assert Endpoint.parse(str(ep)) == ep


@pytest.mark.parametrize(
    "text, why",
    [
        ("::1:80", "write host:port"),  # IPv6 needs brackets
        ("[::1]", "write host:port"),
        ("[::1]80", "write host:port"),
        ("127.0.0.1", "write host:port"),
        ("127.0.0.1:", "write host:port"),
        ("reviews:http", "write host:port"),
        ("127.0.0.1:0", "outside 1-65535"),
        ("[::1]:65536", "outside 1-65535"),
        ("[fe80::1%eth0]:80", "write host:port"),
        ("[:::]:80", "neither an IP address nor a DNS name"),
        ("a b:80", "neither an IP address nor a DNS name"),
        ("-reviews:80", "neither an IP address nor a DNS name"),
        ("reviews_v1:80", "neither an IP address nor a DNS name"),
        (":80", "write host:port"),
        (8080, "expected 'host:port'"),
    ],
)
def test_endpoint_rejects(text, why):
    with pytest.raises(ValueError, match=why):
        Endpoint.parse(text)


def test_endpoint_in_a_model():
    svc = Service(name="reviews", port=9080, app_port=19081, versions={"v1": {"endpoints": ["[::1]:19082"]}, "v2": {}})
    assert svc.endpoints_of("v1") == [Endpoint("::1", 19082)]
    assert svc.endpoints_of("v2") == [Endpoint("127.0.0.1", 19081)]  # lists none: the app port
    assert [svc.uses_app_port(v) for v in svc.version_names] == [False, True]
    bare = Service(name="reviews", port=9080, versions={"v1": {"endpoints": ["[::1]:19082"]}, "v2": {}})
    assert bare.app_port is None and bare.endpoints_of("v2") == []  # refused by check (E215), never lowered
    with pytest.raises(ValidationError, match="invalid endpoint '::1:80'"):
        Service(name="reviews", port=9080, versions={"v1": {"endpoints": ["::1:80"]}})
