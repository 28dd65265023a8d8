"""meshc never ends in a traceback: what tests/errors/ cannot hold as data, and the internal-error path.

The error cases as data (bad YAML tags, huge numbers, Python policies that exit or raise anything,
objects that skipped validation, escape sequences in names) are folders under tests/errors/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import build as build_module
from compiler import cli
from compiler.check import check
from compiler.diagnostics import Diagnostic, Source, printable
from compiler.load import load
from compiler.load.python_source import revalidate
from compiler.policy import Mesh, PolicySet, Service
from compiler.write import WriteError, differences, write


def test_versions_on_one_app_port_are_one_bind():
    """Two versions without endpoints are the one app on 127.0.0.1:<app_port>, not two apps on one port (no E213)."""
    mesh = Mesh(name="m")
    svc = Service(name="a", port=1000, app_port=2000, sidecar={"address": "127.0.0.2"}, versions={"v1": {}, "v2": {}})
    assert [d for d in check(PolicySet((mesh, svc))) if d.code == "E213"] == []
    other = Service(name="b", port=1000, app_port=2000, sidecar={"address": "127.0.0.3"})
    (clash,) = [d for d in check(PolicySet((mesh, svc, other))) if d.code == "E213"]
    assert clash.message == (
        "127.0.0.1:2000 is bound twice on this host: by the app 'a' version 'v1' and by the app 'b' version 'default'"
    )


ROOT = Path(__file__).resolve().parent.parent
BASIC = ROOT / "policies" / "basic"


def _boom(*args, **kwargs):
    raise ZeroDivisionError("a bug")


@pytest.mark.parametrize("stage", ["emit", "lower", "render", "check", "load"])
def test_an_internal_error_is_one_line_exit_3_and_writes_nothing(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build_module, stage, _boom)
    out = tmp_path / "out"
    assert cli.main(["build", str(BASIC), "-o", str(out)]) == cli.INTERNAL_ERROR == 3
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("internal error: this is a meshc bug, not a problem in your policies (please report it): ")
    assert "ZeroDivisionError at compiler/build.py:" in line  # the last frame in meshc's own code
    assert "--traceback" in line and "Traceback" not in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_internal_error_keeps_the_previous_output(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert cli.main(["build", str(BASIC), "-o", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(build_module, "emit", _boom)
    assert cli.main(["build", str(BASIC), "-o", str(out)]) == 3
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("how", ["flag-before", "flag-after", "env"])
def test_traceback_on_request(how, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build_module, "emit", _boom)
    argv = ["build", str(BASIC), "-o", str(tmp_path / "out")]
    if how == "flag-before":
        argv = ["--traceback", *argv]
    elif how == "flag-after":
        argv.append("--traceback")
    else:
        monkeypatch.setenv("MESHC_TRACEBACK", "1")
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "ZeroDivisionError: a bug" in err
    assert err.splitlines()[-1].startswith("internal error: this is a meshc bug")


def test_what_the_file_system_refuses_is_exit_1_not_a_bug(tmp_path):
    """The real entry point: a policy directory that is a file is E000; an output below a file is a write error."""
    file = tmp_path / "file"
    file.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "compiler", "build", str(file), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "is not a directory" in done.stderr
    done = subprocess.run([sys.executable, "-m", "compiler", "build", str(BASIC), "-o", str(file / "sub")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert (done.returncode, done.stderr) == (1, f"error: cannot write '{file}': File exists\n")


def test_an_unreadable_policy_file_is_E013(tmp_path, monkeypatch):
    """(As root, chmod 000 does not stop a read, so the refusal is simulated.)"""
    policies = tmp_path / "p"
    shutil.copytree(BASIC, policies)
    (policies / "x.py").write_text("")
    real = Path.read_bytes

    def refuse(self):
        if self.name in ("routes.yaml", "x.py"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    result = load(policies)
    assert [d.render() for d in result.diagnostics] == [
        "routes.yaml:1:1: error[E013]: cannot read this file: Permission denied",
        "x.py:1:1: error[E013]: cannot read this file: Permission denied",
    ]


def test_a_fifo_named_like_a_policy_is_reported_not_read(tmp_path):
    policies = tmp_path / "p"
    shutil.copytree(BASIC, policies)
    os.mkfifo(policies / "pipe.yaml")  # reading it would wait forever
    assert [d.render() for d in load(policies).diagnostics] == [
        "pipe.yaml:1:1: error[E013]: not a regular file (a policy file must be a file)"
    ]


@pytest.mark.parametrize("rel", ["../x/bootstrap.yaml", "a/../../x", "/etc/x", "a//b", "a\\..\\b", ".", ""])
def test_the_writer_refuses_paths_outside_the_output(rel, tmp_path):
    for out in (tmp_path / "new", tmp_path / "existing"):
        if out.name == "existing":
            write({"a/f": b"1"}, out, settle=0)
        before = sorted(tmp_path.rglob("*"))
        with pytest.raises(WriteError, match="refusing to write .*: the path would leave the output folder"):
            write({"ok/f": b"", rel: b"x"}, out, settle=0)
        with pytest.raises(WriteError):
            differences({rel: b"x"}, out)
        assert sorted(tmp_path.rglob("*")) == before


def test_printable_escapes_and_shortens():
    assert printable("a\x1b[2Jb\r\nc\td\x7f\u202e\u2028\ud800") == "a\\x1b[2Jb\\r\\nc\\td\\x7f\\u202e\\u2028\\ud800"
    assert printable("café ünïcode, 漢字 and emoji 🎉") == "café ünïcode, 漢字 and emoji 🎉"
    long = printable("name '" + "n" * 100_000 + "' (first at line 3)")
    assert len(long) < 250 and long.endswith("nnn' (first at line 3)") and "…" in long
    assert printable("x" * 200) == "x" * 200


def test_every_diagnostic_line_is_printable():
    diag = Diagnostic("E104", "bad\x1b]0;t\x07", Source("f\n.yaml", 1, 1), "Service 'a\rb'", "x" * 500)
    line = diag.render("dir")
    assert line.isprintable() and "\\x1b]0;t\\x07" in line and "f\\n.yaml" in line and "a\\rb" in line
    assert len(line) < 400


def test_python_policies_keep_their_objects_when_they_validate_again():
    """Re-validation keeps the very objects of a clean policy file, so nested objects keep their lines."""
    twin = load(ROOT / "policies" / "basic-py")
    assert not twin.diagnostics
    reviews = next(d for d in twin.policy.services if d.name == "reviews")
    assert reviews.where("versions", "v2").line != reviews.source.line
    docs, diags = revalidate(twin.policy.documents, "shop.py")
    assert diags == [] and all(a is b for a, b in zip(docs, twin.policy.documents))


def test_long_locations_are_kept_whole():
    """A deep policy directory is no policy text: its path is printed whole (an editor opens it), only escaped."""
    root = "/" + "/".join(["folder"] * 60)
    diag = Diagnostic("E203", "duplicate service name (first defined at {0})", Source("a.yaml", 3, 1), "Service 'a'",
                      refs=(Source("b\x1b.yaml", 1, 1),))
    line = diag.render(root)
    assert line.startswith(f"{root}/a.yaml:3:1: error[E203]: Service 'a': ") and f"{root}/b\\x1b.yaml:1:1)" in line


def test_a_bug_while_writing_a_new_output_leaves_nothing(tmp_path, monkeypatch, capsys):
    """The new output is built in a hidden folder beside it and renamed into place: a failure before the rename
    removes the folder."""
    import compiler.write as write_module

    monkeypatch.setattr(write_module.os, "rename", _boom)
    assert cli.main(["build", str(BASIC), "-o", str(tmp_path / "out")]) == 3
    assert "ZeroDivisionError at compiler/write.py:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_values_no_file_can_hold_are_found_wherever_they_are():
    from compiler.load.python_source import _unwritable

    assert _unwritable({"a": [1, "ok", {"k": True}]}) is None
    path, diag = _unwritable({"a": [1, {"k\udce9": "v"}]})
    assert (path, diag.code) == (("a", 1, "k\udce9"), "E015")
    path, diag = _unwritable({"a": ("x", 10**5000)})
    assert (path, diag.code, diag.message) == (("a", 1), "E012", "a number with more than 4300 digits")


@pytest.mark.parametrize("argv", [
    ["certs", str(BASIC), "-o", "x", "--days", "-5"],
    ["build", str(BASIC), "-o", "x", "--settle", "-1"],
    ["build", str(BASIC), "-o", "x", "--settle", "nan"],
    ["validate", "x", "-j", "0"],
])
def test_numbers_out_of_range_are_bad_usage(argv, capsys):
    """Once a bug mid-write (a negative pause after the first write step) or in the certificate library."""
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2 and "is not between" in capsys.readouterr().err


@pytest.mark.parametrize("template, message", [
    ("{{ 1/0 }}", "error: bootstrap.yaml.j2 failed for 'productpage': ZeroDivisionError: division by zero"),
    (b"\xff", "error: cannot load bootstrap.yaml.j2 from {t}: 'utf-8' codec can't decode byte 0xff in position 0: "
              "invalid start byte"),
])
def test_a_broken_user_template_is_an_error_not_a_bug(template, message, tmp_path, capsys):
    templates = tmp_path / "t"
    templates.mkdir()
    target = templates / "bootstrap.yaml.j2"
    target.write_bytes(template) if isinstance(template, bytes) else target.write_text(template)
    assert cli.main(["build", str(BASIC), "-o", str(tmp_path / "out"), "--templates", str(templates)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == message.format(t=templates)
    assert not (tmp_path / "out").exists()


def test_roots_are_absolute_paths_given_or_recorded(tmp_path, capsys):
    """--config-root lands in every sidecar's configuration: a relative path or a newline is bad usage, and a
    manifest edited to record one is refused."""
    with pytest.raises(SystemExit) as exit:
        cli.main(["build", str(BASIC), "-o", str(tmp_path / "x"), "--config-root", "srv\nx"])
    assert exit.value.code == 2 and "'srv\\nx' is not an absolute path" in capsys.readouterr().err
    out = tmp_path / "out"
    assert cli.main(["build", str(BASIC), "-o", str(out), "--config-root", "/srv/x"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["settings"]["config_root"] = "\x1b[2J"
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(["build", str(BASIC), "-o", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"error: {out}/manifest.json records --config-root '\\x1b[2J', which is not an absolute path; give --config-root\n"
    )


def test_a_long_text_of_short_words_is_shortened_too():
    text = printable("unknown version 'x' (known: " + ", ".join(f"v{i}" for i in range(20_000)) + ")")
    assert len(text) == 1000 and text.startswith("unknown version 'x' (known: v0, v1,") and text.endswith("v19999)")
