"""The mutation property, run by `make fuzz` and tests/test_fuzz.py: `meshc build` on a damaged policy
ends in success or in positioned errors (exit 1) with nothing written, never in a traceback, exit 3, raw
control characters on the terminal, a leaked Python warning, or files outside (or changed in) the output.

`meshc build` runs in-process (`compiler.cli.main`), so an escaping exception is seen as the exception.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

from fuzz.judge import Tally, shorten, traceback_class
from fuzz.known_open import KNOWN_OPEN_MUTATIONS
from fuzz.mutate import Mutant, mutant, seeds

POSITIONED = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): error\[(?P<code>E\d+)\]")
WARNING = re.compile(r"\b\w*Warning\b: ")
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029\u202e]")
TIMEOUT_S = 30


class Hang(BaseException):
    """Raised by the alarm when one build runs longer than TIMEOUT_S."""


def _on_alarm(signum, frame):
    raise Hang()


def materialise(m: Mutant, folder: Path) -> Path:
    policies = folder / "policies"
    policies.mkdir(parents=True)
    for name, data in m.files.items():
        if name.endswith("\0unreadable"):
            target = policies / name.split("\0")[0]
            kind = len(m.steps) % 3
            if kind == 0:
                os.chmod(target, 0)  # unreadable for a normal user (root reads it anyway)
            elif kind == 1:
                (policies / ("dir-" + target.name)).mkdir()  # a folder named like a policy file
            else:
                (policies / ("dangling-" + target.name)).symlink_to(policies / "nowhere")
            continue
        (policies / name).write_bytes(data)
    return policies


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def judge(m: Mutant, folder: Path, previous: Path | None = None) -> str:
    """Build the mutant in `folder` (into a fresh OUT, or a copy of `previous`'s good build); its class."""
    from compiler import cli

    policies = materialise(m, folder)
    out = folder / "out"
    if previous is not None:
        shutil.copytree(previous, out, symlinks=True)
    before = snapshot(out)
    entries = set(os.listdir(folder))
    err, std = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TIMEOUT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            rc = cli.main(["build", str(policies), "-o", str(out), "--settle", "0"])
    except Hang:
        return f"hang: more than {TIMEOUT_S} s"
    except SystemExit as exc:
        return f"traceback SystemExit({shorten(repr(exc.code), 40)}) escaped meshc build"
    except BaseException as exc:  # noqa: BLE001 - the finding itself
        return traceback_class(exc)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    text = err.getvalue() + std.getvalue()
    if set(os.listdir(folder)) - entries - {"out"}:
        return f"written outside the output folder: {sorted(set(os.listdir(folder)) - entries - {'out'})}"
    if rc == 3:
        bug = re.search(r"\(please report it\): (.*?);", text)
        return "exit 3: " + shorten(bug.group(1) if bug else text.strip()[:120], 160)
    if RAW_CONTROL.search(text):
        return f"raw control character printed: {RAW_CONTROL.search(text).group()!r}"
    if WARNING.search(text):
        return "warning leaked: " + shorten(next(line for line in text.splitlines() if WARNING.search(line)), 120)
    if rc == 0:
        return "ok" if (out / "manifest.json").exists() else "unpositioned error: exit 0 but nothing written"
    if snapshot(out) != before:
        return "written on failure" + (" (previous output changed)" if previous else " (output created)")
    errors = [line for line in text.splitlines() if "error" in line and not line.startswith("  ")]
    loose = [line for line in errors if not POSITIONED.match(line) and not re.match(r"^\d+ error\(s\)", line)]
    if loose or rc != 1:
        first = (loose or text.splitlines() or [""])[0]
        return f"unpositioned error (exit {rc}): " + shorten(re.sub(r"/tmp/\S+", "<tmp>", first), 120)
    codes = sorted({POSITIONED.match(line).group("code") for line in errors if POSITIONED.match(line)})
    return "error " + " ".join(codes) if codes else f"unpositioned error (exit {rc}): no error line"


def known_mutation(outcome: str) -> str | None:
    """The known-open finding an outcome belongs to (counted apart), if any."""
    return next((f.split(":")[0] for prefix, f in KNOWN_OPEN_MUTATIONS.items() if outcome.startswith(prefix)), None)


def good_builds(workdir: Path) -> dict[str, Path]:
    """One good build per example case, for mutants that are built into an existing output."""
    from compiler import cli

    builds = {}
    for case in sorted(seeds()):
        out = workdir / "good" / case
        if not out.exists():
            with contextlib.redirect_stderr(io.StringIO()):
                cli.main(["build", str(Path(__file__).resolve().parents[2] / "policies" / case), "-o", str(out)])
        builds[case] = out
    return builds


def run_mutations(count: int, seed: int, tally: Tally, workdir: Path, progress=print, keep=None) -> int:
    """`count` mutants of seed `seed`; every tenth is built into a previous good build. Returns inputs tried."""
    cases = seeds()
    workdir.mkdir(parents=True, exist_ok=True)
    previous = good_builds(workdir)
    started = time.monotonic()
    for i in range(count):
        rng = random.Random(f"{seed}:{i}")
        m = mutant(rng, cases)
        folder = workdir / f"m{seed}-{i}"
        shutil.rmtree(folder, ignore_errors=True)
        outcome = judge(m, folder, previous[m.case] if i % 10 == 9 else None)
        example = f"input {seed}:{i} ({shorten(m.describe(), 200)})"
        tally.add(outcome, example, known_mutation(outcome))
        if outcome.startswith(("traceback", "exit 3", "unpositioned", "written", "raw", "warning", "hang")):
            if keep is not None and outcome not in keep:
                keep[outcome] = folder
                continue
        _remove(folder)
        if (i + 1) % 1000 == 0:
            progress(f"  mutations: {i + 1}/{count} ({time.monotonic() - started:.0f} s), {tally.failures} failure(s) so far")
    return count


def _remove(folder: Path) -> None:
    for p in folder.rglob("*"):
        if not p.is_symlink():
            with contextlib.suppress(OSError):
                os.chmod(p, 0o755)
    shutil.rmtree(folder, ignore_errors=True)
