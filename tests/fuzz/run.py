"""`make fuzz`: mutated example policies and generated meshes, with the figures of what happened.

    .venv/bin/python tests/fuzz/run.py [--mutations 10000] [--meshes 1000] [--seed 1] [--jobs 2]
                                       [--workdir /tmp/meshc-fuzz] [--exclude-known-open] [--only TAG]

Prints inputs tried and outcomes per class (ok, positioned error by code, traceback, exit 3, Envoy
rejection with its reason, ...), keeps one failing input per class under the work folder, and exits 1
when any input failed (failures of known-open generator branches are listed apart, see known_open.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `import fuzz`
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for `import compiler`

from fuzz.generated import run_generated  # noqa: E402
from fuzz.judge import Tally  # noqa: E402
from fuzz.known_open import KNOWN_OPEN, KNOWN_OPEN_MUTATIONS  # noqa: E402
from fuzz.mutated import run_mutations  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutations", type=int, default=10_000)
    p.add_argument("--meshes", type=int, default=1_000, help="meshes to draw at least")
    p.add_argument("--built", type=int, default=1_000,
                   help="and go on (up to 4 x) until this many built and were validated by Envoy (0: no minimum)")
    p.add_argument("--seed", type=int, default=1, help="the mutator's seed (input i of seed s is always the same)")
    p.add_argument("--jobs", type=int, default=2, help="Envoy processes at once")
    p.add_argument("--workdir", default="/tmp/meshc-fuzz", help="scratch folder; failing inputs are kept here")
    p.add_argument("--exclude-known-open", action="store_true", help="leave known-open generator branches out")
    p.add_argument("--only", metavar="TAG", help="risky values only from edges whose tag starts so (e.g. keepalive. or "
                   "percent.; a tag no edge has, e.g. none, gives valid values only: most meshes then reach Envoy)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    work = Path(args.workdir)
    for part in ("mutations", "meshes"):  # only what an earlier run left there
        shutil.rmtree(work / part, ignore_errors=True)
    started = time.monotonic()

    mutations, keep = Tally(), {}
    print(f"mutation fuzzer: {args.mutations} damaged copies of policies/*/ (seed {args.seed})", flush=True)
    tried_m = run_mutations(args.mutations, args.seed, mutations, work / "mutations", keep=keep,
                            progress=lambda s: print(s, flush=True))
    t_m = time.monotonic() - started

    meshes = Tally()
    print(f"mesh generator: at least {args.meshes} meshes and {args.built} built, Envoy validation on {args.jobs} "
          "processes" + (f", risky values only from edges {args.only}*" if args.only else ""), flush=True)
    tried_g = run_generated(args.meshes, meshes, work / "meshes", include_open=not args.exclude_known_open,
                            jobs=args.jobs, progress=lambda s: print(s, flush=True), built=args.built, only=args.only)
    t_g = time.monotonic() - started - t_m

    print()
    print("\n".join(mutations.lines(f"mutated inputs ({t_m:.0f} s)", tried_m)))
    for outcome, folder in sorted(keep.items()):
        print(f"  kept: {folder}  <- {outcome[:100]}")
    print()
    print("\n".join(meshes.lines(f"generated meshes ({t_g:.0f} s)", tried_g)))
    print()
    if KNOWN_OPEN:
        state = "left out" if args.exclude_known_open else "generated, failures counted apart"
        print(f"known-open generator branches ({state}; tests/fuzz/known_open.py):")
        for tag, finding in KNOWN_OPEN.items():
            print(f"  {tag}: {finding}")
    if KNOWN_OPEN_MUTATIONS:
        print("known-open mutation outcomes (counted apart; tests/fuzz/known_open.py):")
        for prefix, finding in KNOWN_OPEN_MUTATIONS.items():
            print(f"  {prefix}\n      {finding}")
    failures = mutations.failures + meshes.failures
    print(f"fuzz: {tried_m} mutated inputs, {tried_g} generated meshes, {failures} failure(s) "
          f"({mutations.failures} mutation, {meshes.failures} mesh), {time.monotonic() - started:.0f} s; "
          f"failing inputs kept under {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
