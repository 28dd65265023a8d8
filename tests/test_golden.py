"""Golden pairs: policies/<case>/ compiles byte for byte to golden/<case>/.

`make golden` regenerates golden/; a golden diff in a commit is reviewed like
code. The IR is snapshotted too (golden/<case>/ir.json).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.build import build
from compiler.ir import to_json
from compiler.sourcemap import SOURCEMAP
from compiler.write import with_manifest

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted(p.name for p in (ROOT / "policies").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _diff(name: str, expected: bytes, actual: bytes) -> str:
    return "".join(
        difflib.unified_diff(
            expected.decode().splitlines(keepends=True),
            actual.decode().splitlines(keepends=True),
            f"golden/{name}",
            f"compiled/{name}",
        )
    )


@pytest.mark.parametrize("case", CASES)
def test_case_matches_golden(case: str) -> None:
    result = build(ROOT / "policies" / case)
    assert result.ok, "\n".join(d.render() for d in result.diagnostics)
    produced = with_manifest(result.files)
    produced["ir.json"] = to_json(result.ir).encode()
    golden_dir = ROOT / "golden" / case
    assert golden_dir.is_dir(), f"golden/{case} is missing: run `make golden`"
    on_disk = {p.relative_to(golden_dir).as_posix(): p.read_bytes() for p in golden_dir.rglob("*") if p.is_file()}

    problems = []
    for rel in sorted(set(produced) | set(on_disk)):
        if rel not in on_disk:
            problems.append(f"not in golden/{case}: {rel}")
        elif rel not in produced:
            problems.append(f"stale file golden/{case}/{rel} (no longer produced)")
        elif produced[rel] != on_disk[rel]:
            problems.append(_diff(f"{case}/{rel}", on_disk[rel], produced[rel]))
    assert not problems, "output differs from golden (run `make golden` and review):\n" + "\n".join(problems)


def test_every_golden_dir_has_a_policy_case() -> None:
    stale = sorted(p.name for p in (ROOT / "golden").iterdir() if p.is_dir() and p.name not in CASES)
    assert not stale, f"golden/ folders without a policies/ case: {stale}"


def _normalise(data: bytes) -> bytes:
    """Drop what legitimately differs between a YAML and a Python twin: the file name in provenance and content hashes."""
    text = re.sub(r"[\w./-]+\.(?:ya?ml|py)#", "#", data.decode())
    return re.sub(r'"version_info": "[0-9a-f]+"', '"version_info": ""', text).encode()


def test_python_twin_compiles_to_the_same_config() -> None:
    yaml_build = build(ROOT / "policies" / "basic")
    py_build = build(ROOT / "policies" / "basic-py")
    assert yaml_build.ok and py_build.ok
    assert sorted(yaml_build.files) == sorted(py_build.files)
    for rel in set(yaml_build.files) - {SOURCEMAP}:  # the source maps hold lines, which differ
        assert _normalise(yaml_build.files[rel]) == _normalise(py_build.files[rel]), rel
    # Provenance names the same places, each in its own file.
    assert b'"source": "routes.yaml#Route/reviews/rules[1]"' in yaml_build.files["productpage/routes-outbound.yaml"]
    assert b'"source": "shop.py#Route/reviews/rules[1]"' in py_build.files["productpage/routes-outbound.yaml"]
    anchors = [{_normalise(k.encode()) for k in json.loads(b.files[SOURCEMAP])["sources"]} for b in (yaml_build, py_build)]
    assert anchors[0] == anchors[1] and len(anchors[0]) > 5


def test_output_is_deterministic_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    """Two builds in fresh interpreters with different hash seeds are byte-identical."""
    outs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"out-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [sys.executable, "-m", "compiler", "build", str(ROOT / "policies"), "--cases", "-o", str(out)],
            check=True,
            env=env,
            capture_output=True,
        )
        outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outs[0] == outs[1]
    assert len(outs[0]) > 10


def test_file_order_does_not_change_output(tmp_path: Path) -> None:
    """Documents split across files in another order (and created in reverse) compile the same."""
    import shutil

    src = ROOT / "policies" / "basic"
    shuffled = tmp_path / "basic"
    shuffled.mkdir()
    for f in sorted(src.iterdir(), reverse=True):
        shutil.copy(f, shuffled / f.name)
    a, b = build(src), build(shuffled)
    assert a.files == b.files
