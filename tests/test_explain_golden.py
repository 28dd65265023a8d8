"""Golden outputs of `meshc explain` on the example policies (tests/explain/commands.txt).

Each line of commands.txt runs the command twice, text and `--format json`, and compares stdout with
tests/explain/<case>/<name>.txt and .json byte for byte. Regenerate after a deliberate change with

    MESHC_REGEN=1 .venv/bin/python -m pytest -q tests/test_explain_golden.py

and read the diff (git diff tests/explain): every step must still name the right rule and policy line.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from compiler import cli

ROOT = Path(__file__).resolve().parent.parent
DIR = Path(__file__).resolve().parent / "explain"
REGEN = os.environ.get("MESHC_REGEN") == "1"


def _commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for line in (DIR / "commands.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            case, name, *args = shlex.split(line)
            out.append((case, name, args))
    return out


COMMANDS = _commands()


def test_every_example_with_routes_or_security_is_explained():
    cases = {c for c, _, _ in COMMANDS}
    assert not cases - {p.name for p in (ROOT / "policies").iterdir()}, "a command names a missing case"
    assert len({(c, n) for c, n, _ in COMMANDS}) == len(COMMANDS), "names repeat"


@pytest.mark.parametrize("case,name,args", COMMANDS, ids=[f"{c}/{n}" for c, n, _ in COMMANDS])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_golden(case, name, args, fmt, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the policy directory as the user names it: no machine path in the output
    code = cli.main(["explain", f"policies/{case}", *args, "--format", fmt])
    out, err = capsys.readouterr()
    assert code == 0, err
    golden = DIR / case / f"{name}.{'txt' if fmt == 'text' else 'json'}"
    if REGEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(out)
    assert golden.exists(), f"{golden} missing: run MESHC_REGEN=1 pytest tests/test_explain_golden.py"
    assert out == golden.read_text(), f"{golden} differs from `meshc explain policies/{case} {shlex.join(args)}`"
