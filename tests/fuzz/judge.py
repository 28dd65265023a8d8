"""Outcome classes of one fuzz input, and the tally `make fuzz` prints.

A class is a short text: `ok`, `error E104` (positioned errors, by code), and the failures:
`unpositioned error ...`, `traceback <Exception>: ...`, `exit 3`, `written on failure`, `hang`,
`envoy: <first line of the rejection>`, `schema: <first problem>`. `FAILING` says which classes fail a run.
"""

from __future__ import annotations

import re
import traceback
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

FAILING = ("unpositioned", "traceback", "exit 3", "written", "hang", "envoy:", "schema:", "raw control", "warning leaked",
           "false refusal")


def failing(outcome: str) -> bool:
    return outcome.startswith(FAILING)


def shorten(text: str, limit: int = 150) -> str:
    text = text.encode("unicode_escape").decode("ascii")  # never echo control characters into a terminal
    return text if len(text) <= limit else text[:limit] + "..."


def traceback_class(exc: BaseException) -> str:
    """`traceback <Type> at <file>:<function>: <message>`: the innermost frame in meshc names the cause."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/compiler/" in f.filename]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].name}" if frames else ""
    return f"traceback {type(exc).__name__}{where}: {shorten(str(exc), 100)}"


def positioned(diag) -> bool:
    src = diag.source
    return src is not None and src.line >= 1 and bool(src.file) and not src.file.startswith("<")


def build_outcome(result) -> str:
    """The class of a `compiler.build.build` result that did not raise."""
    errors = [d for d in result.diagnostics if d.is_error]
    if result.ok and not errors:
        return "ok"
    if not errors:
        return "unpositioned error: the build failed without an error diagnostic"
    loose = [d for d in errors if not positioned(d)]
    if loose:
        return f"unpositioned error {loose[0].code}: {shorten(loose[0].message, 100)}"
    return "error " + " ".join(sorted({d.code for d in errors}))


_ENVOY_PREFIX = re.compile(r"^(\[[^\]]*\])+\s*")


def envoy_class(output: str) -> str:
    """`envoy: <the rejection's reason>`: the failed constraint, or the bad JSON's field and reason, or the
    first error line; indices and numbers folded so that causes group."""
    flat = " ".join(output.split())
    m = re.search(r"Proto constraint validation failed \((.*?)\)(?: \S*\[|$| \S+:)", flat) or re.search(
        r"Proto constraint validation failed \((.*)\)", flat)
    if m:
        parts = m.group(1).split(" | caused by ")
        reason = parts[0].split(":")[0] + " ... " + parts[-1] if len(parts) > 1 else parts[0]
    elif (m := re.search(r"invalid JSON in \S+ @ (\S+?): .*?\(offset \d+\): (.*?)\): \{", flat)):
        reason = f"bad JSON at {m.group(1)}: {m.group(2)}"
    else:
        lines = [line for line in output.splitlines() if line.strip()]
        first = next((line for line in lines if "error" in line.lower() or "exception" in line.lower()),
                     lines[0] if lines else "")
        reason = _ENVOY_PREFIX.sub("", first.strip())
        reason = re.sub(r"^\[[^\]]*\]\s*", "", reason)
        reason = re.sub(r"error initializing configuration '[^']*': ", "", reason)
    return "envoy: " + shorten(re.sub(r"\d+", "N", reason), 200)


def validate_output(out: Path) -> list[str]:
    """Schema and real-Envoy verdicts of every sidecar written under `out`: the failure classes (empty: all valid)."""
    from compiler.validate.envoy import load_yaml, validate_sidecar
    from compiler.validate.schema import check_sidecar_dir

    problems = []
    for sidecar in sorted(p.parent for p in out.rglob("bootstrap.yaml")):
        try:
            for err in check_sidecar_dir(sidecar, load_yaml)[:1]:
                problems.append("schema: " + shorten(re.sub(r"\d+", "N", err.message), 160))
        except Exception as exc:  # noqa: BLE001 - `meshc validate` itself would crash: a finding
            problems.append("traceback in meshc validate (schema): " + traceback_class(exc))
        try:
            verdict = validate_sidecar(sidecar)
        except Exception as exc:  # noqa: BLE001
            problems.append("traceback in meshc validate (envoy): " + traceback_class(exc))
            continue
        if not verdict.ok:
            problems.append(envoy_class(verdict.output))
    return problems


@dataclass
class Tally:
    """Outcomes per class, with one example input (and its edges) per class."""

    counts: Counter = field(default_factory=Counter)
    sidecars: int = 0
    built: int = 0
    """Inputs that built and went to Envoy."""
    """Sidecars judged by the schema check and the real Envoy."""
    examples: dict[str, str] = field(default_factory=dict)
    known_open: Counter = field(default_factory=Counter)

    def add(self, outcome: str, example: str = "", known: str | None = None) -> None:
        if known and failing(outcome):
            self.known_open[f"{outcome}  [known open: {known}]"] += 1
            return
        self.counts[outcome] += 1
        self.examples.setdefault(outcome, example)

    @property
    def failures(self) -> int:
        return sum(n for k, n in self.counts.items() if failing(k))

    def lines(self, title: str, tried: int) -> list[str]:
        out = [f"{title}: {tried} input(s) tried" + (f", {self.built} built, {self.sidecars} sidecar(s) of those validated by Envoy" if self.built else "")]
        groups: dict[str, int] = defaultdict(int)
        for k, n in self.counts.items():
            groups[k.split(":")[0].split(" E")[0] if not k.startswith("error") else "positioned error"] += n
        out += [f"  {n:6d}  {k}" for k, n in sorted(groups.items(), key=lambda kv: -kv[1])]
        out.append("  by class:")
        out += [f"    {n:6d}  {k}" + (f"\n            e.g. {self.examples[k]}" if failing(k) and self.examples.get(k) else "")
                for k, n in self.counts.most_common()]
        if self.known_open:
            out.append("  known open (tests/fuzz/known_open.py), not counted as failures:")
            out += [f"    {n:6d}  {k}" for k, n in self.known_open.most_common()]
        return out


class EnvoyPool:
    """Validates written outputs on `jobs` Envoy processes at once, while the next inputs are built."""

    def __init__(self, jobs: int = 2):
        self.pool = ThreadPoolExecutor(max_workers=jobs)
        self.pending: list[tuple[Future, str, str | None]] = []

    def submit(self, out: Path, example: str, known: str | None, cleanup) -> None:
        def run():
            try:
                return validate_output(out), len(list(out.rglob("bootstrap.yaml")))
            finally:
                cleanup()

        self.pending.append((self.pool.submit(run), example, known))

    def drain(self, tally: Tally) -> None:
        for fut, example, known in self.pending:
            problems, sidecars = fut.result()
            tally.sidecars += sidecars
            tally.built += 1
            tally.add(problems[0] if problems else "ok", example, known)
        self.pending.clear()
