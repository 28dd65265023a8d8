"""The catalog of diagnostic codes (compiler/codes/catalog/<CODE>.md, `meshc explain-code`).

Every code the compiler can emit has an entry and every entry is a code the compiler emits; each
entry's example, written into a folder and checked, raises its code, and its fix raises neither the
code nor any error. So the documentation cannot drift from the checks.

"Every code the compiler can emit" is every "E…"/"W…" string literal under compiler/ (the codes are
literals at the place that reports them). E000 (no policy directory, or no policy files) is a user's
mistake like any other and has its entry; meshc has no internal codes (a meshc bug is exit 3 with one
line, never a diagnostic), so there is nothing to leave out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from compiler import cli
from compiler import codes as catalog
from compiler.build import BuildOptions, build, check_policies

ROOT = Path(__file__).resolve().parent.parent
LITERAL = re.compile(r"""["']([EW]\d{3})["']""")

# Examples the tests cannot run, each marked `Not checked by the tests: <reason>` in its entry; their error
# cases in tests/errors/ run instead. Keep this short: add a code only if no policy folder can show it.
NOT_CHECKED = {
    "E012": "a number of 4,301 digits (tests/errors/yaml_huge_number)",
    "E013": "a broken link, a folder named like a policy file (tests/errors/not_a_policy_file)",
}


def emitted_codes() -> set[str]:
    """Every code written as a string literal in the compiler (Diagnostic("E209", ...), code="W301")."""
    found: set[str] = set()
    for path in (ROOT / "compiler").rglob("*.py"):
        if "codes" not in path.relative_to(ROOT / "compiler").parts[:1]:
            found.update(LITERAL.findall(path.read_text(encoding="utf-8")))
    return found


ENTRIES = {e.code: e for e in catalog.entries()}


def test_every_emitted_code_has_an_entry():
    missing = sorted(emitted_codes() - set(ENTRIES))
    assert not missing, f"no compiler/codes/catalog/<CODE>.md for: {', '.join(missing)}"


def test_every_entry_is_an_emitted_code():
    extra = sorted(set(ENTRIES) - emitted_codes())
    assert not extra, f"catalog entries for codes the compiler never emits: {', '.join(extra)}"


def test_catalog_files_are_entries():
    names = sorted(p.name for p in catalog.CATALOG.iterdir() if not p.name.startswith("."))
    assert names == [f"{c}.md" for c in catalog.codes()], "every catalog file is <CODE>.md"


def test_few_examples_are_not_checked():
    skipped = {c for c, e in ENTRIES.items() if e.not_checked}
    assert skipped == set(NOT_CHECKED) & set(ENTRIES), "examples the tests do not run: " + ", ".join(sorted(skipped))


def _run(entry: catalog.Entry, files: dict[str, str], folder: Path) -> list:
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content, encoding="utf-8")
    command, *options = entry.command
    if command == "check":
        assert not options, f"{entry.code}: `meshc check` takes no options"
        diags, _ = check_policies(folder)
        return diags
    flags = {"--certs-root": "certs_root", "--config-root": "config_root"}
    kwargs: dict = {}
    rest = list(options)
    while rest:
        flag = rest.pop(0)
        if flag == "--static":
            kwargs["static"] = True
        elif flag in flags and rest:
            kwargs[flags[flag]] = rest.pop(0)
        else:
            pytest.fail(f"{entry.code}: unknown build option {flag!r} in 'Checked with'")
    return build(folder, BuildOptions(**kwargs)).diagnostics


CHECKED = sorted(c for c, e in ENTRIES.items() if not e.not_checked)


@pytest.mark.parametrize("code", CHECKED)
def test_example_raises_its_code_and_the_fix_does_not(code, tmp_path):
    entry = ENTRIES[code]
    diags = _run(entry, entry.example, tmp_path / "example")
    rendered = "\n".join(d.render("policies") for d in diags)
    assert code in {d.code for d in diags}, f"{code}: the example does not raise it; it raises:\n{rendered}"
    others = sorted({d.code for d in diags if d.is_error and d.code != code})
    unexplained = [c for c in others if c not in entry.markdown]
    assert not unexplained, f"{code}: the example also raises {unexplained}; keep it to one mistake (or say why):\n{rendered}"
    assert entry.fix, f"{code}: the fix changes no file"
    after = _run(entry, entry.fixed, tmp_path / "fixed")
    rendered = "\n".join(d.render("policies") for d in after)
    assert code not in {d.code for d in after}, f"{code}: the fix still raises it:\n{rendered}"
    assert not [d for d in after if d.is_error], f"{code}: the fixed policies have errors:\n{rendered}"


def test_entries_name_their_files_and_code():
    for code, entry in ENTRIES.items():
        assert entry.title and not entry.title.endswith("."), code
        for name in [*entry.example, *entry.fix]:
            assert name.endswith((".yaml", ".yml", ".py")), f"{code}: {name} is not a policy file"


def test_cli_explains_a_code(capsys):
    assert cli.main(["explain-code", "E218"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("E218 (error): ")
    assert "Example:" in out and "Fix:" in out and "routes.yaml:" in out and "```" not in out


def test_cli_json_is_the_entry(capsys):
    assert cli.main(["explain-code", "e218", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["code"] == "E218" and doc["severity"] == "error"
    assert [f["name"] for f in doc["example"]["files"]] == sorted(ENTRIES["E218"].example)
    assert set(doc) == {"code", "severity", "title", "explanation", "example", "fix", "command",
                        "checked_by_tests", "not_checked_because"}


def test_cli_takes_the_code_as_printed(capsys):
    assert cli.main(["explain-code", "warning[W301]:"]) == 0
    assert capsys.readouterr().out.startswith("W301 (warning): ")


def test_cli_unknown_code_suggests(capsys):
    assert cli.main(["explain-code", "E2188"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no code 'E2188'" in captured.err and "did you mean E218" in captured.err
    assert cli.main(["explain-code", "nothing"]) == 1
    assert "did you mean" not in capsys.readouterr().err
    assert cli.main(["explain-code", "../catalog/E218"]) == 1, "a code, never a path"
    assert cli.main(["explain-code", "E2\x1b[2J18" + "x" * 5000]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b" in err and len(err) < 2000, "the argument is escaped and shortened"


def test_cli_list(capsys):
    assert cli.main(["explain-code", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == catalog.codes()
    assert cli.main(["explain-code", "--list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["code"] for r in rows] == catalog.codes()


def test_cli_usage():
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain-code", "--format", "xml", "E218"])
    assert exc.value.code == 2
    assert cli.main(["explain-code"]) == 2
    assert cli.main(["explain-code", "E218", "--list"]) == 2


def test_every_code_has_a_row_in_the_readme_table():
    """The README's table of codes (Meaning checks) names every code, alone or in a range like `E001–E004`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Meaning checks")
    end = text.index("\n#### ", start)
    named: set[str] = set()
    for row in text[start:end].splitlines():
        if not row.startswith("| "):
            continue
        cell = row.split("|")[1]
        named.update(re.findall(r"[EW]\d{3}", cell))
        for first, last in re.findall(r"([EW]\d{3})\s*[–-]\s*[EW](\d{3})", cell):
            named.update(f"{first[0]}{n:03d}" for n in range(int(first[1:]), int(last) + 1))
    missing = [code for code in catalog.codes() if code not in named]
    assert not missing, f"no row of the README's Meaning checks table names: {', '.join(missing)}"
