"""The generated-mesh property, run by `make fuzz` (many, Envoy in parallel) and tests/test_fuzz.py (a slice).

For a drawn mesh: `build()` returns positioned errors or succeeds, never raises; when it succeeds the
written output passes the schema check and the real `envoy --mode validate` on every sidecar.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from fuzz.judge import EnvoyPool, Tally, build_outcome, traceback_class, validate_output
from fuzz.known_open import known_open
from fuzz.meshgen import Drawn, meshes


def known(drawn: Drawn) -> str | None:
    """The known-open edge a mesh used, if any (its failure is then counted apart)."""
    hits = sorted(t for t in drawn.edges if known_open(t))
    return hits[0] if hits else None


def build_drawn(drawn: Drawn, folder: Path) -> tuple[str, Path | None]:
    """Write the mesh's policy into `folder/policies`, build it, write a good build into `folder/out`."""
    from compiler.build import build
    from compiler.write import write

    policies = drawn.write(folder / "policies")
    try:
        result = build(policies)
    except Exception as exc:  # noqa: BLE001 - the finding itself
        return traceback_class(exc), None
    outcome = build_outcome(result)
    if outcome != "ok":
        return _false_refusal(drawn, result) or outcome, None
    out = folder / "out"
    try:
        write(result.files, out, settle=0)
    except Exception as exc:  # noqa: BLE001
        return traceback_class(exc), None
    return outcome, out


def _false_refusal(drawn: Drawn, result) -> str | None:
    """A refused regex in a mesh whose only odd regexes are valid RE2 (Envoy would accept them): a finding."""
    if not any(t.endswith(".re2-only") for t in drawn.edges):
        return None
    if any(t.endswith((".python-only", ".big")) for t in drawn.edges):
        return None
    for d in result.diagnostics:
        if d.is_error and "regular expression" in d.message:
            return f"false refusal {d.code}: valid RE2 refused: {d.message[:80]}"
    return None


def check_one(drawn: Drawn) -> list[str]:
    """The failure classes of one mesh, validated at once (the test's form)."""
    with tempfile.TemporaryDirectory(prefix="meshc-fuzz-") as tmp:
        outcome, out = build_drawn(drawn, Path(tmp))
        if out is None:
            return [outcome] if outcome.startswith(("traceback", "unpositioned")) else []
        return validate_output(out)


def run_generated(count: int, tally: Tally, workdir: Path, include_open: bool = True, jobs: int = 2,
                  progress=print, derandomize: bool = False, built: int = 0, only: str | None = None) -> int:
    """Draw `count` meshes, build each, validate good builds on `jobs` Envoys; returns meshes tried.

    With `built`, go on drawing (up to 4 x count) until that many meshes have built and gone to Envoy: about
    half the meshes stop at a positioned error, by design (their edge values are refused), and those never
    reach Envoy. With `only`, risky values come from the edges whose tags start so, and from no other.
    """
    if not count and not built:
        return 0  # `make fuzz --meshes 0 --built 0`: mutations only (Hypothesis refuses max_examples=0)
    envoy = EnvoyPool(jobs)
    tried = [0]
    to_envoy = [0]
    limit = count if not built else 4 * max(count, built)
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)

    @settings(max_examples=limit, deadline=None, database=None, derandomize=derandomize,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(meshes(include_open=include_open, only=only))
    def one(drawn: Drawn) -> None:
        if tried[0] >= count and to_envoy[0] >= built:
            return  # done: Hypothesis may still draw, nothing is built
        tried[0] += 1
        if tried[0] % 100 == 0:
            progress(f"  meshes: {tried[0]} tried, {to_envoy[0]} built and sent to Envoy "
                     f"({time.monotonic() - started:.0f} s), {tally.failures} failure(s) so far")
        folder = Path(tempfile.mkdtemp(prefix="mesh-", dir=workdir))
        outcome, out = build_drawn(drawn, folder)
        example = f"{folder.name} edges={sorted(drawn.edges)}"
        if out is None:
            tally.add(outcome, example, known(drawn))
            if not outcome.startswith(("traceback", "unpositioned")):
                shutil.rmtree(folder, ignore_errors=True)
            return
        (folder / "edges.txt").write_text("\n".join(sorted(drawn.edges)) + "\n")
        to_envoy[0] += 1
        envoy.submit(out, example, known(drawn), lambda: None)
        if len(envoy.pending) >= 4 * jobs:
            envoy.drain(tally)

    one()
    envoy.drain(tally)
    _keep_failures_only(workdir, tally)
    return tried[0]


def _keep_failures_only(workdir: Path, tally: Tally) -> None:
    """Failing meshes stay in `workdir` (named in the examples); the rest is removed."""
    keep = {example.split()[0] for example in tally.examples.values() if example}
    for folder in workdir.glob("mesh-*"):
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
