"""Fractional percentages and tcp canaries, without Envoy: the type, the emitted fractions and weights,
where a tcp split is drawn (the callee on one host, the callers in pods), and what explain predicts.
Live behaviour: tests/test_live_fractions.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from compiler.build import check_policies
from compiler.emit import emit
from compiler.emit.route_action import fraction, weights
from compiler.explain import Request, explain
from compiler.ir import Cluster, TcpListener, Target
from compiler.lower import lower
from compiler.policy.types import Percentage, per_million, percent_text

ROOT = Path(__file__).resolve().parent.parent


class _P(BaseModel):
    p: Percentage = 100


@pytest.mark.parametrize("written, kept", [(10, 10), (10.0, 10), (0.1, 0.1), (0.0001, 0.0001), (99.9999, 99.9999), (0, 0)])
def test_percentage_takes_up_to_4_decimals_and_keeps_whole_numbers_whole(written, kept):
    value = _P(p=written).p
    assert value == kept and type(value) is type(kept)


@pytest.mark.parametrize("written", [0.00001, 12.34567, 100.5, -0.1, True, "0.5", float("nan"), float("inf")])
def test_percentage_refuses(written):
    with pytest.raises(ValidationError):
        _P(p=written)


def test_fractions_in_hundredths_when_whole_else_millionths():
    assert fraction(10) == {"numerator": 10, "denominator": "HUNDRED"}
    assert fraction(0.1) == {"numerator": 1000, "denominator": "MILLION"}
    assert fraction(0.0001) == {"numerator": 1, "denominator": "MILLION"}
    assert fraction(33.3333) == {"numerator": 333333, "denominator": "MILLION"}
    assert per_million(99.9) + per_million(0.1) == 1_000_000
    assert [percent_text(p) for p in (10, 0.1, 100.0001, 12.5)] == ["10", "0.1", "100.0001", "12.5"]


def _targets(*ws):
    c = Cluster.__new__(Cluster)  # weights() reads only the weights
    return tuple(Target(c, w) for w in ws)


def test_split_weights_stay_whole_unless_one_is_not():
    assert weights(_targets(90, 10, 0)) == [90, 10, 0]
    assert weights(_targets(99.9, 0.1)) == [999000, 1000]
    assert weights(_targets(97.5, 2.5, 0)) == [975000, 25000, 0]


def _build(case: str | Path):
    diags, view = check_policies(case if isinstance(case, Path) else ROOT / "policies" / case)
    assert view is not None, [d.render() for d in diags]
    ir = lower(view)
    return ir, {s.service: s for s in emit(ir).sidecars}


def test_golden_case_fractions_in_envoy_terms():
    ir, out = _build("fractions")
    routes = json.dumps(out["frontend"].route_configs)
    assert '"weight": 999000' in routes and '"weight": 1000' in routes  # the 0.1 % canary
    assert '{"numerator": 5000, "denominator": "MILLION"}' in routes  # the 0.5 % mirror
    assert '{"numerator": 100, "denominator": "MILLION"}' in routes  # the 0.01 % abort
    assert '{"numerator": 5, "denominator": "HUNDRED"}' in routes  # the whole 5 % delay stays in hundredths


def test_tcp_split_on_one_host_is_drawn_by_the_callee():
    ir, out = _build("fractions")
    sidecars = {s.service: s for s in ir.sidecars}
    inbound = next(l for l in sidecars["ledger"].listeners if isinstance(l, TcpListener))
    assert [(t.cluster.id, t.weight) for t in inbound.split] == [("inbound/ledger/v1", 90), ("inbound/ledger/v2", 10)]
    outbound = next(l for l in sidecars["frontend"].listeners if isinstance(l, TcpListener))
    assert outbound.split == () and outbound.cluster.id == "outbound/ledger/v1"
    e = explain(ir, Request("frontend", "ledger"))
    assert (e.outcome.kind, e.outcome.versions) == ("forwarded", (("v1", 0.9), ("v2", 0.1)))
    assert [s.decision for s in e.steps if s.what == "targets"] == [
        "one version drawn per connection: v1 90%, v2 10% (tcp Route; bytes, nothing else applies)"
    ]


PODS = """
kind: Mesh
name: shop
sidecar: {address: 0.0.0.0}
---
kind: Service
name: web
port: 9080
app_port: 19080
calls: [db]
---
kind: Service
name: db
protocol: tcp
port: 5432
app_port: 15432
versions: {v1: {}, v2: {}, v3: {}}
default_version: v1
---
kind: Route
service: db
rules:
  - to: {v1: 75, v2: 25, v3: 0}
"""


def test_tcp_split_in_pods_is_drawn_by_each_caller_over_headless_services(tmp_path):
    (tmp_path / "mesh.yaml").write_text(PODS)
    ir, out = _build(tmp_path)
    sidecars = {s.service: s for s in ir.sidecars}
    outbound = next(l for l in sidecars["web"].listeners if isinstance(l, TcpListener))
    # v3 has weight 0: left out (tcp_proxy refuses a weight of 0)
    assert [(t.cluster.id, t.weight) for t in outbound.split] == [("outbound/db/v1", 75), ("outbound/db/v2", 25)]
    assert [str(e) for e in outbound.split[1].cluster.endpoints] == ["db-v2.default.svc.cluster.local:5432"]
    inbound = next(l for l in sidecars["db"].listeners if isinstance(l, TcpListener))
    assert inbound.split == ()  # the pod that answers is of the drawn version
    listeners = json.dumps(out["web"].listeners)
    assert '{"name": "outbound|db|v1", "weight": 75}' in listeners
    assert explain(ir, Request("web", "db")).outcome.versions == (("v1", 0.75), ("v2", 0.25))


def test_a_tcp_route_to_one_version_moves_every_connection(tmp_path):
    (tmp_path / "mesh.yaml").write_text(PODS.replace("{v1: 75, v2: 25, v3: 0}", "{v2: 100}"))
    ir, out = _build(tmp_path)
    web = next(s for s in ir.sidecars if s.service == "web")
    outbound = next(l for l in web.listeners if isinstance(l, TcpListener))
    assert (outbound.cluster.id, outbound.split) == ("outbound/db/v2", ())
    assert explain(ir, Request("web", "db")).outcome.versions == (("v2", 1.0),)
