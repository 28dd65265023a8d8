"""Bad input, case by case: every case must fail with exactly the expected diagnostics and write nothing.

Each folder tests/errors/<case>/ holds a policy directory `policies/` and
`expected.txt`, the exact stderr of `meshc build policies -o OUT` run from the
case folder (so paths read `policies/shop.yaml:14:7`). Every case is run twice:
into a fresh OUT, which must not exist afterwards, and into an OUT holding a
previous good build, which must be left byte for byte as it was.

Regenerate the expected files with

    MESHC_REGEN=1 .venv/bin/pytest tests/test_errors.py

and then read every changed expected.txt (git diff tests/errors): each line
must name the right file, line and column and say plainly what is wrong.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler import cli

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = Path(__file__).resolve().parent / "errors"
CASES = sorted(d.name for d in CASES_DIR.iterdir() if d.is_dir() and (d / "policies").is_dir())
REGEN = os.environ.get("MESHC_REGEN") == "1"

# Every kind of bad input the compiler promises to report; each needs a case folder.
REQUIRED = {
    "yaml_syntax",
    "yaml_alias_bomb",
    "unknown_kind",
    "unknown_field",
    "wrong_type",
    "port_out_of_range",
    "duplicate_service",
    "route_unknown_service",
    "route_unknown_version",
    "weights_not_100",
    "bad_service_names",
    "empty_policy_dir",
    "duplicate_yaml_key",
    "two_meshes",
    "no_mesh",
    "calls_unknown_service",
    "port_clash_one_sidecar",
    "same_address_port",
    "python_validation_error",
    "several_errors",
    "mirror_unknown_target",
    "redirect_prefix_exact_match",
    "rewrite_prefix_regex_match",
    "shadowed_rules",
    "rewrite_regex_query",
    "traffic_policy_errors",
    "retry_status_codes_missing",
    "authz_errors",
    "jwt_errors",
    "tcp_authz_errors",
    "observability_errors",
    "security_paths",
    "ignored_settings",
    "retry_budget_unused",
    "app_port",
    "kubernetes_output",
    "kubernetes_external",
    # never a traceback (issue 12)
    "yaml_tag_values",
    "yaml_huge_number",
    "yaml_control_characters",
    "python_raises_anything",
    "python_sys_exit",
    "python_bypass_validation",
    "untrusted_text",
    "no_documents",
    "not_a_policy_file",
    "kind_not_a_name",
    "python_not_unicode",
    "yaml_too_deep",
    "python_changes_the_interpreter",
    # gateways and services outside the mesh (issue 13)
    "gateway_errors",
    "gateway_ports",
    "gateway_pods",
    "external_errors",
    "edge_ranges",  # gateway numbers beyond Envoy's uint32 fields (found by the mesh fuzzer)
    # mesh-wide resilience analysis (issue 14): its warnings, positioned, beside an error
    "resilience_analysis",
    # per-version traffic policies (issue 15): unknown versions, what cannot be per version, and why
    "per_version_policy",
    "per_version_refused",
    # connection settings (issue 15): HTTP-only ones on tcp, HTTP versions a protocol cannot take, keepalive seconds
    "connection_settings",
    "keepalive_seconds",
}


def _meshc() -> list[str]:
    script = Path(sys.executable).parent / "meshc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "compiler"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Let Python write bytecode if it wants to: a Python policy must not leave
    # __pycache__/ in the policy directory (checked by _snapshot of the case folder).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT)  # the policy files import compiler.policy
    return env


def _snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every file and folder under root: content, mode, and identity (so a rewrite with the same bytes shows)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        if rel in skip:
            continue
        if path.is_symlink():  # a case may hold a broken link (not_a_policy_file)
            out[rel] = ("link", os.readlink(path), st.st_ino, st.st_mtime_ns)
        elif path.is_dir():
            out[rel + "/"] = ("dir", st.st_mode)
        else:
            out[rel] = (path.read_bytes(), st.st_mode, st.st_ino, st.st_mtime_ns)
    return out


def _run_build(case: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_meshc(), "build", "policies", "-o", str(out)],
        cwd=CASES_DIR / case,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_stderr(case: str, stderr: str) -> None:
    expected_file = CASES_DIR / case / "expected.txt"
    if REGEN:
        expected_file.write_text(stderr)
    assert expected_file.exists(), f"{expected_file} is missing; run with MESHC_REGEN=1 and review it"
    expected = expected_file.read_text()
    if stderr != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                stderr.splitlines(keepends=True),
                f"tests/errors/{case}/expected.txt",
                "actual stderr",
            )
        )
        pytest.fail(f"stderr of case '{case}' differs from expected.txt:\n{diff}", pytrace=False)


@pytest.fixture(scope="session")
def good_build(tmp_path_factory) -> Path:
    """A previous good build (of the basic example), to fail a build over."""
    out = tmp_path_factory.mktemp("good") / "out"
    done = subprocess.run(
        [*_meshc(), "build", str(ROOT / "policies" / "basic"), "-o", str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.json").is_file()
    return out


def test_required_cases_exist():
    missing = REQUIRED - set(CASES)
    assert not missing, f"no case folder for: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("case", CASES)
def test_fails_and_writes_nothing(case, tmp_path):
    before = _snapshot(CASES_DIR / case, skip=("expected.txt",))
    out = tmp_path / "out"
    done = _run_build(case, out)
    assert done.returncode == 1, f"exit code {done.returncode}\n{done.stderr}"
    assert done.stdout == ""
    _assert_stderr(case, done.stderr)
    assert not out.exists(), "a failed build created the output directory"
    assert list(tmp_path.iterdir()) == [], "a failed build left files next to the output directory"
    assert _snapshot(CASES_DIR / case, skip=("expected.txt",)) == before, "the build wrote into the policy directory"


@pytest.mark.parametrize("case", CASES)
def test_fails_and_keeps_previous_output(case, tmp_path, good_build):
    out = tmp_path / "out"
    shutil.copytree(good_build, out)
    before = _snapshot(out)
    done = _run_build(case, out)
    assert done.returncode == 1, f"exit code {done.returncode}\n{done.stderr}"
    if not REGEN:
        _assert_stderr(case, done.stderr)
    assert _snapshot(out) == before, "a failed build changed the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "a failed build left files next to the output"


@pytest.mark.parametrize("case", CASES)
def test_check_reports_the_same(case, monkeypatch, capsys):
    """`meshc check` (in process this time) prints the same diagnostics and exits 1."""
    monkeypatch.chdir(CASES_DIR / case)
    assert cli.main(["check", "policies"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_stderr(case, captured.err)


def test_alias_bomb_fails_fast(tmp_path):
    """A far bigger bomb than the case's (9^30 strings) is refused as quickly, at the first alias."""
    lines = ["kind: Mesh", "name: shop", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 31):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    done = subprocess.run(
        [*_meshc(), "build", "policies", "-o", str(tmp_path / "out")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        "policies/bomb.yaml:4:10: error[E002]: anchors and aliases (&name / *name) are not allowed in policies; "
        "write the value out"
    )
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert not (tmp_path / "out").exists()


def test_every_case_has_expected_output():
    """Runs after the case tests, so a MESHC_REGEN=1 run has written them by now."""
    missing = [c for c in CASES if not (CASES_DIR / c / "expected.txt").is_file()]
    assert not missing, f"cases without expected.txt: {', '.join(missing)}"
