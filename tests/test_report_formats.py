"""`meshc check/build --format text|json|sarif|github`: the diagnostics for machines (compiler/report).

Golden outputs of a few error cases live in tests/report/<case>.{json,sarif,github}: the stdout of
`meshc check policies --format F` run from tests/errors/<case>/ (paths in SARIF and GitHub annotations are
relative to the repository root). Regenerate them with

    MESHC_REGEN=1 .venv/bin/python -m pytest tests/test_report_formats.py

and read the diff. The SARIF goldens leave out each rule's title and help, which come from the code
catalog (`meshc explain-code`): the tests compare those with the catalog instead. Every error case is also
run through `json` (it must say all the text says) and `sarif` (valid against the SARIF 2.1.0 schema, vendored
in tests/data/ from the OASIS TC's repository oasis-tcs/sarif-spec, sarif-2.1/schema/sarif-schema-2.1.0.json).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from compiler import cli
from compiler.diagnostics import Diagnostic, Severity, Source
from compiler.report import Batch, render
from compiler.report.github import escape_data, escape_property
from compiler.report.tool import code_help

ROOT = Path(__file__).resolve().parent.parent
ERRORS = ROOT / "tests" / "errors"
GOLDEN = ROOT / "tests" / "report"
SCHEMA = json.loads((ROOT / "tests" / "data" / "sarif-schema-2.1.0.json").read_text())
CASES = sorted(d.name for d in ERRORS.iterdir() if (d / "policies").is_dir())
GOLDEN_CASES = ["empty_policy_dir", "gateway_errors", "several_errors", "shadowed_rules", "untrusted_text", "yaml_syntax"]
EXTENSIONS = {"json": "json", "sarif": "sarif", "github": "github"}
REGEN = os.environ.get("MESHC_REGEN") == "1"
# A URI reference (RFC 3986): unreserved, reserved and percent-encoded characters only.
URI = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")


def _run(monkeypatch, capsys, cwd: Path, *argv: str) -> tuple[int, str, str]:
    """meshc in-process from `cwd`, with the repository root as SARIF's %SRCROOT% wherever the tests run."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr("compiler.report.find_srcroot", lambda start: ROOT)
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _validate_sarif(doc: dict) -> None:
    validator = jsonschema.Draft4Validator(SCHEMA)
    problems = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not problems, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in problems[:10])
    for result in doc["runs"][0]["results"]:
        for loc in result["locations"] + result.get("relatedLocations", []):
            uri = loc["physicalLocation"]["artifactLocation"]["uri"]
            assert URI.fullmatch(uri), uri


def _without_catalog_text(doc: dict) -> dict:
    """The SARIF document less each rule's title and help (checked against the code catalog instead)."""
    for rule in doc["runs"][0]["tool"]["driver"]["rules"]:
        title, text, markdown = code_help(rule["id"])
        assert rule.pop("shortDescription") == {"text": title}
        assert rule.pop("help") == {"text": text, "markdown": markdown}
        assert "meshc explain-code" in text or "README" in text
    return doc


@pytest.mark.parametrize("fmt", sorted(EXTENSIONS))
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden(case, fmt, monkeypatch, capsys):
    code, out, err = _run(monkeypatch, capsys, ERRORS / case, "check", "policies", "--format", fmt)
    assert code == 1
    assert err.endswith("; nothing written\n") and err.count("\n") == 1, err  # only the counts on stderr
    if fmt == "sarif":
        doc = json.loads(out)
        _validate_sarif(doc)
        out = json.dumps(_without_catalog_text(doc), indent=2, sort_keys=True) + "\n"
    golden = GOLDEN / f"{case}.{EXTENSIONS[fmt]}"
    if REGEN:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(out)
    assert golden.exists(), f"{golden} is missing: run with MESHC_REGEN=1 and review it"
    assert out == golden.read_text(), f"{golden.name} differs (MESHC_REGEN=1 rewrites it; review the diff)"


def _text_line(item: dict) -> str:
    where = f"{item['file']}:{item['line']}:{item['column']}: " if item["file"] is not None else ""
    what = " ".join(p for p in (item["subject"], item["path"]) if p)
    return f"{where}{item['severity']}[{item['code']}]: {what + ': ' if what else ''}{item['message']}"


@pytest.mark.parametrize("case", CASES)
def test_every_error_case_json_says_what_the_text_says(case, tmp_path, monkeypatch, capsys):
    code, out, err = _run(monkeypatch, capsys, ERRORS / case, "build", "policies", "-o", str(tmp_path / "out"),
                          "--format", "json")
    assert code == 1, err
    doc = json.loads(out)
    expected = (ERRORS / case / "expected.txt").read_text().splitlines()
    assert [_text_line(i) for i in doc["diagnostics"]] == expected[:-1]
    assert err.splitlines() == expected[-1:]  # the counts
    errors = sum(i["severity"] == "error" for i in doc["diagnostics"])
    assert doc["summary"] == {"errors": errors, "warnings": len(doc["diagnostics"]) - errors}
    assert expected[-1].startswith(f"{errors} error(s), {len(doc['diagnostics']) - errors} warning(s)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", CASES)
def test_every_error_case_sarif_is_valid(case, tmp_path, monkeypatch, capsys):
    code, out, err = _run(monkeypatch, capsys, ERRORS / case, "build", "policies", "-o", str(tmp_path / "out"),
                          "--format", "sarif")
    assert code == 1, err
    doc = json.loads(out)
    _validate_sarif(doc)
    run = doc["runs"][0]
    expected = (ERRORS / case / "expected.txt").read_text().splitlines()[:-1]
    codes = [re.search(r"(?:error|warning)\[([EW]\d{3})\]", line).group(1) for line in expected]
    assert [r["ruleId"] for r in run["results"]] == codes
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(set(codes))
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] == ("error" if result["ruleId"].startswith("E") else "warning")
        location = result["locations"][0]["physicalLocation"]["artifactLocation"]
        assert location["uriBaseId"] == "%SRCROOT%"
        assert location["uri"].startswith(f"tests/errors/{case}/policies")
    # two comment lines on top of every policy file (of a copy): every alert keeps its fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(ERRORS / case / "policies", copy / "policies", symlinks=True)

    def fingerprints() -> list[dict]:
        _, out, _ = _run(monkeypatch, capsys, copy, "build", "policies", "-o", str(tmp_path / "out"), "--format", "sarif")
        return [r["partialFingerprints"] for r in json.loads(out)["runs"][0]["results"]]

    before = fingerprints()
    for path in (copy / "policies").rglob("*"):
        if path.suffix in {".yaml", ".yml", ".py"} and path.is_file() and not path.is_symlink():
            path.write_bytes(b"# moved\n# down\n" + path.read_bytes())
    assert fingerprints() == before


def test_text_is_unchanged(monkeypatch, capsys, tmp_path):
    case = ERRORS / "shadowed_rules"
    expected = (case / "expected.txt").read_text()
    for argv in (["build", "policies", "-o", str(tmp_path / "o")], ["build", "policies", "-o", str(tmp_path / "o"),
                 "--format", "text"], ["check", "policies"], ["check", "policies", "--format", "text"]):
        code, out, err = _run(monkeypatch, capsys, case, *argv)
        assert (code, out, err) == (1, "", expected), argv


def test_check_ok_with_warnings_only(monkeypatch, capsys):
    code, out, err = _run(monkeypatch, capsys, ROOT, "check", "policies/basic", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["errors"] == 0
    assert all(i["severity"] == "warning" for i in doc["diagnostics"])
    assert doc["tool"]["name"] == "meshc" and doc["format"] == "meshc-diagnostics" and doc["version"] == 1
    assert err.endswith(": ok\n")
    code, out, err = _run(monkeypatch, capsys, ROOT, "check", "policies/basic", "--format", "sarif")
    assert code == 0
    _validate_sarif(json.loads(out))
    assert all(r["level"] == "warning" for r in json.loads(out)["runs"][0]["results"])


def test_build_machine_format_puts_only_the_report_on_stdout(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = _run(monkeypatch, capsys, ROOT, "build", "policies/canary", "-o", str(out_dir), "--format", "json")
    assert code == 0 and out_dir.is_dir()
    assert json.loads(out)["summary"]["errors"] == 0
    assert "sidecar(s) ->" in err
    # --check of an output that is not there: every file is reported as missing on stderr, the report stays alone
    code, out, err = _run(monkeypatch, capsys, ROOT, "build", "policies/canary", "-o", str(tmp_path / "none"),
                          "--check", "--format", "github")
    assert code == 1
    assert all(line.startswith("::warning ") for line in out.splitlines())  # no stale-file line on stdout
    assert "file(s) differ from what the policies compile to" in err


def test_build_cases_one_document(monkeypatch, capsys, tmp_path):
    """`build --cases`: every case's diagnostics in one SARIF run, each file under its case folder."""
    cases = tmp_path / "cases"
    shutil.copytree(ROOT / "policies" / "canary", cases / "a-good")
    shutil.copytree(ERRORS / "shadowed_rules" / "policies", cases / "b-bad")
    shutil.copytree(ERRORS / "yaml_syntax" / "policies", cases / "c-bad")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["build", "cases", "--cases", "-o", str(tmp_path / "out"), "--format", "sarif"])
    out, err = capsys.readouterr()
    assert code == 1 and not (tmp_path / "out").exists()
    doc = json.loads(out)
    _validate_sarif(doc)
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in doc["runs"][0]["results"]]
    assert uris == ["cases/b-bad/routes.yaml"] * 3 + ["cases/c-bad/shop.yaml"]
    assert [r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]] == ["E001", "E218"]
    assert err.splitlines()[-1] == "4 error(s), 0 warning(s); nothing written"


def test_fingerprints_survive_moved_lines(monkeypatch, capsys, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(ERRORS / "shadowed_rules" / "policies", policies)

    def results() -> list[dict]:
        code, out, _ = _run(monkeypatch, capsys, tmp_path, "check", "policies", "--format", "sarif")
        assert code == 1
        return json.loads(out)["runs"][0]["results"]

    before = results()
    routes = policies / "routes.yaml"
    routes.write_text("# a comment\n# and another\n" + routes.read_text())
    after = results()
    assert [r["partialFingerprints"] for r in after] == [r["partialFingerprints"] for r in before]
    assert len({r["partialFingerprints"]["meshcAnchor/v1"] for r in after}) == 3
    lines = [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in (before, after) for r in r]
    assert lines == [12, 15, 24, 14, 17, 26]


def test_github_escaping():
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_property("a:b,c%") == "a%3Ab%2Cc%25"
    diag = Diagnostic("W203", "50% of requests: none, and {0}", Source("we:ird,name.yaml", 3, 7, "Route/x"),
                      "Route 'x'", severity=Severity.WARNING, refs=(Source("o,k.yaml", 1, 2),))
    text = render("github", [Batch("pol", (diag,))], ROOT)
    assert text == (
        "::warning file=pol/we%3Aird%2Cname.yaml,line=3,col=7,title=W203::"
        "Route 'x': 50%25 of requests: none, and pol/o,k.yaml:1:2"
    )
    # a policy's text cannot end the command or start another one: CR/LF are escaped before GitHub's escaping
    sneaky = Diagnostic("E104", "bad\n::error::forged", Source("a.yaml", 1, 1))
    assert render("github", [Batch("", (sneaky,))], ROOT).count("\n") == 0


def test_no_position_and_unknown_format(monkeypatch, capsys, tmp_path):
    code, out, err = _run(monkeypatch, capsys, tmp_path, "check", "missing", "--format", "github")
    assert code == 1 and out == "::error title=E000::policy directory 'missing' does not exist\n"
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "policies", "--format", "xml"])
    assert exc.value.code == 2


def test_pre_commit_hook(monkeypatch, capsys, tmp_path):
    """The hook's command with its default args, from a repository whose policies are in policies/."""
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "meshc-check"]
    assert hook["entry"] == "meshc check" and hook["language"] == "python"
    assert hook["pass_filenames"] is False  # one run over the policy directory, not one per changed file
    shutil.copytree(ROOT / "policies" / "canary", tmp_path / "policies")
    code, _, err = _run(monkeypatch, capsys, tmp_path, *hook["entry"].split()[1:], *hook["args"])
    assert code == 0, err
    code, _, err = _run(monkeypatch, capsys, ERRORS / "shadowed_rules", *hook["entry"].split()[1:], *hook["args"])
    assert code == 1 and "error[E218]" in err


def _readme_workflow() -> dict:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Use meshc in CI\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return yaml.safe_load(block)


def test_readme_workflow_runs_meshc_as_documented():
    workflow = _readme_workflow()
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    uses = {s["uses"].split("@")[0] for s in steps if "uses" in s}
    assert {"actions/checkout", "github/codeql-action/upload-sarif"} <= uses
    commands = []
    for step in steps:
        for line in step.get("run", "").splitlines():
            words = line.strip().split()
            if words[:1] == ["meshc"]:
                stop = next((i for i, w in enumerate(words) if w in {">", "|", "||", "&&", ";"} or w.startswith(">")),
                            len(words))
                commands.append(words[1:stop])
    names = [c[0] for c in commands]
    assert {"check", "build", "diff"} <= set(names)
    assert ["--format", "github"] in [c[-2:] for c in commands if c[0] == "check"]
    assert any("--check" in c for c in commands if c[0] == "build")
    p = cli.parser()
    registered = set(p._subparsers._group_actions[0].choices)  # noqa: SLF001
    for argv in commands:
        if argv[0] in registered:
            p.parse_args(argv)  # exit 2 (SystemExit) on a flag meshc does not take
        else:  # `meshc diff` before it lands: its documented command line
            assert argv == ["diff", "--git", "origin/main", "HEAD", "policies", "--format", "markdown"], argv
