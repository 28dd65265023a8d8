"""A bounded, deterministic slice of `make fuzz` (tests/fuzz/): damaged example policies never crash meshc,
and generated valid meshes either stop with positioned errors or build output the real Envoy accepts.

- 300 mutants of the example policies (fixed seed): each ends in success or positioned errors with exit 1,
  nothing written (into a fresh output, or every tenth into a previous good build left byte for byte);
  never a traceback, exit 3, raw control characters on the terminal or a leaked Python warning.
- 15 generated meshes (Hypothesis, derandomized): built in memory, written, schema-checked and validated
  by `envoy --mode validate` sidecar by sidecar. Known-open generator branches are left out here
  (tests/fuzz/known_open.py); `make fuzz` runs them and reports them.
- The fixed findings of the mesh generator, each as the smallest mesh that showed it: they build, and Envoy
  accepts what they build.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings

from fuzz.generated import build_drawn, check_one
from fuzz.judge import Tally, failing, validate_output
from fuzz.meshgen import Drawn, meshes
from fuzz.mutated import run_mutations

MUTATIONS = 300
MESHES = 15


def test_mutated_policies_end_in_positioned_errors_or_success(tmp_path: Path):
    tally, keep = Tally(), {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tried = run_mutations(MUTATIONS, 12, tally, tmp_path, progress=lambda s: None, keep=keep)
    assert tried == MUTATIONS
    report = "\n".join(tally.lines("mutated inputs", tried))
    assert tally.failures == 0, report
    assert tally.counts["ok"] > 0 and sum(n for k, n in tally.counts.items() if k.startswith("error")) > 0, report


@pytest.mark.envoy
@settings(max_examples=MESHES, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(meshes(include_open=False))
def test_generated_meshes_build_what_envoy_accepts(drawn: Drawn):
    problems = check_one(drawn)
    assert not [p for p in problems if failing(p)], f"{problems}\n{drawn.yaml()}"


FINDINGS = {
    # F15: a TrafficPolicy `versions:` load_balancer on a tcp service: the E234 check asked the version's
    # load_balancer for hash_on, which only the service-level one has (traceback AttributeError).
    "tcp-version-load-balancer": """
kind: Mesh
name: m
---
kind: Service
name: db
protocol: tcp
port: 5432
app_port: 20001
sidecar: {address: 127.0.99.1}
---
kind: TrafficPolicy
service: db
versions:
  default:
    load_balancer: {policy: least_request}
""",
    # F16: Mesh defaults connection_pool.max_requests_per_connection with egress undeclared: allow: the forward
    # proxy's cluster got HttpProtocolOptions without auto_sni/auto_san_validation, and Envoy refused it
    # ("dynamic_forward_proxy cluster must have auto_sni and auto_san_validation true").
    "forward-proxy-connection-settings": """
kind: Mesh
name: m
defaults:
  connection_pool: {max_requests_per_connection: 10, idle_timeout: 5s, upstream_protocol: client}
egress: {undeclared: allow}
---
kind: Service
name: web
port: 9080
app_port: 20001
sidecar: {address: 127.0.99.1}
""",
}


@pytest.mark.envoy
@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_fixed_fuzz_findings_build_what_envoy_accepts(finding: str, tmp_path: Path):
    drawn = Drawn([d for d in yaml.safe_load_all(FINDINGS[finding]) if d])
    outcome, out = build_drawn(drawn, tmp_path)
    assert outcome == "ok" and out is not None, outcome
    assert validate_output(out) == []


REFUSED = {
    # F17: an ip_blocks entry with a zone (`fe80::1%eth0/128`, drawn by the fuzzer's odd CIDRs) was refused as
    # "has bits set after its prefix: write fe80::1%eth0/128", naming the input itself as the fix.
    "ip-block-with-zone": ("""
kind: Mesh
name: m
mtls: {mode: strict}
---
kind: Service
name: web
port: 9080
app_port: 20001
sidecar: {address: 127.0.99.1}
---
kind: AuthorizationPolicy
service: web
deny:
  - ip_blocks: [fe80::1%eth0/128]
""", "E104", "names a zone"),
}


@pytest.mark.parametrize("finding", sorted(REFUSED))
def test_fixed_fuzz_findings_are_refused_with_their_reason(finding: str, tmp_path: Path):
    from compiler.build import build

    text, code, reason = REFUSED[finding]
    result = build(Drawn([d for d in yaml.safe_load_all(text) if d]).write(tmp_path))
    errors = [d for d in result.diagnostics if d.is_error]
    assert [d.code for d in errors] == [code] and reason in errors[0].message, errors
    assert errors[0].source is not None and errors[0].source.line > 1
