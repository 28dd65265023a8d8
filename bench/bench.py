#!/usr/bin/env python3
"""meshc benchmark: a synthetic mesh of N services, built end to end.

    python bench/bench.py [--sizes 250,500,1000,2000] [--repeat K] [--seed S]
                          [--profile [--profile-size N] [--top T]]
                          [--tracemalloc] [--no-gc] [--keep]

(`make bench` runs it with the defaults.) This is a report, not a test: it
exits 0 whether or not the targets are met (2 on bad usage, or if a build
itself fails), and ends with a summary table and PASS/FAIL per target.

For every N it writes a policy directory under bench/.work/ (git-ignored):

    mesh.yaml                 kind: Mesh
    services/svc-NNNN.yaml    kind: Service + kind: Route (one file per service)

Every service calls 10 others and has one Route with 20 rules (19 path-prefix
rules /api/<k>/, three in four with a header match, weights across 2 or 3
versions, and a final catch-all prefix /). Versions have explicit endpoints;
every service has v1 and v2, one in five also v3 (so that 3-way splits exist),
and every service calls exactly 8 two-version and 2 three-version services,
so all sidecars have the same shape whatever N is: the "one sidecar's size is
independent of N" target then measures the compiler, not the generator. Route
contents depend on (seed, service) only. Sidecar addresses are left unset
(0.0.0.0, Kubernetes mode), so no cross-sidecar port check applies. The call
graph is random (fixed seed), so it has cycles and the check stage reports
W201 warnings; that is deliberate, it exercises the cycle check.

Each N runs in its own child process (so peak RSS is per N). In it:

  total   compiler.build.build() + compiler.write.write() into a fresh dir,
          i.e. what `meshc build` does; also the time spent in Python's
          cyclic garbage collector during it (gc.callbacks);
  stages  load, check, lower, emit, render, write, each timed on its own
          (and the GC time inside each);
  floor   yaml.load_all(CSafeLoader) over the same policy files (measured
          first, on a small heap), plus compact json.dumps of all emitted data
          (every sidecar's clusters, route configs and bootstrap listeners;
          shared dicts are dumped once per sidecar that uses them, i.e. at
          full expanded size);
  (fs)    informational: plain open().write() of the same files into a
          fresh dir, i.e. what the file system alone costs (not in the floor).

Timings are the best of --repeat runs (default 3). Targets:

  floor   total <= 2x floor at N=1000
  linear  log-log slope of total time vs N (least squares) <= 1.1
  size    largest sidecar's bytes at the largest N within 5% of the smallest N

If the build crashes with RecursionError (the call-cycle check recurses once
per service on a DFS path), the child says so and measures with a raised
recursion limit.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"

DEFAULT_SIZES = (250, 500, 1000, 2000)
CALLS = 10  # dependencies per service
RULES = 20  # rules per Route, the last one a catch-all
THREE_VERSION_EVERY = 5  # every 5th service has a third version
THREE_VERSION_CALLS = 2  # of the CALLS dependencies, this many have three versions

FLOOR_N = 1000
FLOOR_FACTOR = 2.0
SLOPE_MAX = 1.1
SIZE_TOLERANCE = 0.05

STAGES = ("load", "check", "lower", "emit", "render", "write")


# --------------------------------------------------------------------------
# The synthetic mesh
# --------------------------------------------------------------------------


def service_name(i: int) -> str:
    return f"svc-{i:04d}"


def versions_of(i: int) -> list[str]:
    return ["v1", "v2", "v3"] if i % THREE_VERSION_EVERY == 0 else ["v1", "v2"]


_SPLITS_2 = ((90, 10), (80, 20), (70, 30), (50, 50))
_SPLITS_3 = ((80, 10, 10), (60, 20, 20), (50, 25, 25), (40, 30, 30))


def _endpoint(i: int, v: int) -> str:
    return f"10.{v}.{i // 256}.{i % 256}:8080"


def _route_rules(i: int, seed: int) -> list[str]:
    """The Route of service i: depends on (seed, i) only, not on N."""
    rng = random.Random(f"{seed}-route-{i}")
    versions = versions_of(i)
    lines = []

    def to(k: int) -> str:
        if len(versions) == 3 and k % 2 == 1:
            weights = rng.choice(_SPLITS_3)
            chosen = versions
        else:
            weights = rng.choice(_SPLITS_2)
            chosen = rng.choice([versions[:2], versions[-2:]])
        return "{" + ", ".join(f"{v}: {w}" for v, w in zip(chosen, weights)) + "}"

    for k in range(RULES - 1):
        lines.append("  - match:")
        lines.append(f"      path: {{prefix: /api/{k}/}}")
        kind = k % 4
        if kind == 0:
            lines.append(f"      headers: [{{name: x-user-group, exact: group-{rng.randrange(100):02d}}}]")
        elif kind == 1:
            lines.append(f"      headers: [{{name: x-tenant, prefix: t{rng.randrange(10)}-}}]")
        elif kind == 2:
            lines.append("      headers: [{name: x-canary, present: true}, {name: x-debug, present: false}]")
        lines.append(f"    to: {to(k)}")
        if k % 5 == 4:
            lines.append(f"    timeout: {rng.choice((2, 3, 4))}s")
    lines.append(f"  - to: {to(RULES - 1)}")  # catch-all: match defaults to prefix / and no headers
    lines.append("    timeout: 10s")
    return lines


def generate(n: int, seed: int, dest: Path) -> dict:
    """Write the policy directory for N services; returns a small description."""
    if n < CALLS + 1 or n < THREE_VERSION_EVERY * (THREE_VERSION_CALLS + 1):
        raise ValueError(f"N must be at least {max(CALLS + 1, THREE_VERSION_EVERY * (THREE_VERSION_CALLS + 1))}")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "services").mkdir(parents=True)
    (dest / "mesh.yaml").write_text(
        "# Synthetic mesh for bench/bench.py (Kubernetes mode: sidecar addresses are 0.0.0.0).\n"
        "kind: Mesh\nname: bench\ndefaults:\n  timeout: 15s\n  connect_timeout: 1s\n"
    )
    rng = random.Random(f"{seed}-calls-{n}")
    three = [i for i in range(n) if len(versions_of(i)) == 3]
    two = [i for i in range(n) if len(versions_of(i)) == 2]
    total_bytes = 0
    for i in range(n):
        pool3 = three if len(versions_of(i)) == 2 else [j for j in three if j != i]
        pool2 = two if len(versions_of(i)) == 3 else [j for j in two if j != i]
        pick3 = rng.sample(pool3, THREE_VERSION_CALLS)
        pick2 = rng.sample(pool2, CALLS - THREE_VERSION_CALLS)
        calls = sorted(pick3 + pick2)
        name = service_name(i)
        lines = [
            "kind: Service",
            f"name: {name}",
            "protocol: http",
            "port: 8080",
            "versions:",
        ]
        for vi, v in enumerate(versions_of(i), start=1):
            lines.append(f'  {v}: {{endpoints: ["{_endpoint(i, vi)}"]}}')
        lines.append("calls: [" + ", ".join(service_name(j) for j in calls) + "]")
        lines += ["---", "kind: Route", f"service: {name}", "rules:"]
        lines += _route_rules(i, seed)
        text = "\n".join(lines) + "\n"
        (dest / "services" / f"{name}.yaml").write_text(text)
        total_bytes += len(text)
    return {"files": n + 1, "bytes": total_bytes}


# --------------------------------------------------------------------------
# The child: one N, measured in its own process
# --------------------------------------------------------------------------


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _output_stats(out: Path) -> dict:
    files = 0
    total = 0
    per_sidecar: dict[str, int] = {}
    for p in out.rglob("*"):
        if p.is_file():
            size = p.stat().st_size
            files += 1
            total += size
            rel = p.relative_to(out)
            if len(rel.parts) > 1 and rel.parts[0] != "kubernetes":  # out/kubernetes/: manifests, no sidecar
                per_sidecar[rel.parts[0]] = per_sidecar.get(rel.parts[0], 0) + size
    largest = max(per_sidecar.items(), key=lambda kv: (kv[1], kv[0])) if per_sidecar else ("", 0)
    return {
        "files": files,
        "bytes": total,
        "sidecars": len(per_sidecar),
        "largest_sidecar": largest[0],
        "largest_sidecar_bytes": largest[1],
    }


def _floor_yaml(policy_dir: Path) -> float:
    """Seconds PyYAML's C loader alone takes to read and load every policy file."""
    import yaml

    from compiler.load import policy_files

    paths = policy_files(policy_dir)
    t0 = time.perf_counter()
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for _ in yaml.load_all(fh.read(), Loader=yaml.CSafeLoader):
                pass
    return time.perf_counter() - t0


def _floor_json(mesh) -> tuple[float, int]:
    """(seconds, bytes) of compact json.dumps over everything emitted, sidecar by sidecar."""
    size = 0
    dumps = json.dumps
    t0 = time.perf_counter()
    for sc in mesh.sidecars:
        for data in (sc.clusters, sc.route_configs, sc.bootstrap.listeners):
            size += len(dumps(data, separators=(",", ":")))
    return time.perf_counter() - t0, size


def _floor_io(files: dict[str, bytes], out: Path) -> float:
    """Seconds plain open().write() takes to put the same bytes into a fresh directory (informational)."""
    t0 = time.perf_counter()
    made = set()
    for rel, data in files.items():
        path = out / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb") as fh:
            fh.write(data)
    return time.perf_counter() - t0


class _GCTimer:
    """Wall time spent inside the cyclic garbage collector (gc.callbacks), and collections per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.collections[info["generation"]] += 1


def stage_steps(policy_dir: Path, out_dir) -> tuple[dict, dict]:
    """The pipeline split into its stages, each a no-argument call that keeps its result (in `state`) for the next."""
    from compiler.check import check
    from compiler.emit import emit
    from compiler.load import load
    from compiler.lower import lower
    from compiler.render import render
    from compiler.write import write

    state: dict = {}
    return state, {
        "load": lambda: state.__setitem__("loaded", load(policy_dir)),
        "check": lambda: state.__setitem__("diags", check(state["loaded"].policy)),
        "lower": lambda: state.__setitem__("ir", lower(state["loaded"].policy)),
        "emit": lambda: state.__setitem__("mesh", emit(state["ir"])),
        "render": lambda: state.__setitem__("files", render(state["mesh"])),
        "write": lambda: write(state["files"], out_dir()),
    }


def _profile_stages(policy_dir: Path, out: Path, top: int) -> str:
    import cProfile
    import io
    import pstats

    _, steps = stage_steps(policy_dir, lambda: _fresh(out))
    report = io.StringIO()
    for stage in STAGES:
        gc.collect()
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        steps[stage]()
        prof.disable()
        wall = time.perf_counter() - t0
        report.write(f"\n===== stage {stage}: {wall:.3f}s under cProfile =====\n")
        for key in ("tottime", "cumulative"):
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats(key).print_stats(top)
            text = buf.getvalue()
            # keep only the table (drop pstats' preamble lines)
            lines = text.splitlines()
            start = next((i for i, l in enumerate(lines) if l.lstrip().startswith("ncalls")), 0)
            report.write(f"--- top {top} by {key} ---\n")
            report.write("\n".join(l for l in lines[start:] if l.strip()) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    return report.getvalue()


def child(args) -> int:
    policy_dir = Path(args.child)
    work = policy_dir.parent
    rss_start = _maxrss_mib()

    import compiler.emit  # noqa: F401  (imported before "after imports" RSS is read)
    import compiler.lower  # noqa: F401
    import compiler.render  # noqa: F401
    from compiler.build import build, paused_gc
    from compiler.check import check
    from compiler.load import load
    from compiler.write import write

    rss_imported = _maxrss_mib()
    if args.no_gc:
        gc.disable()
    gc_timer = _GCTimer()
    best_total = math.inf
    best_stage = {s: math.inf for s in STAGES}
    best_yaml = best_json = best_io = math.inf
    total_gc = 0.0
    total_full_gcs = 0
    stage_gc = {s: 0.0 for s in STAGES}
    stats: dict = {}
    warnings = 0
    json_bytes = 0

    # --- floor, part 1: PyYAML alone, first, on a small heap ---------------
    for _ in range(args.repeat):
        gc.collect()
        best_yaml = min(best_yaml, _floor_yaml(policy_dir))

    # The call-cycle check (compiler/check/graph.py) is a recursive DFS, one
    # Python frame per service on the path; on a big random call graph that
    # outgrows the default recursion limit and `meshc build` crashes. Find
    # out whether it does (untimed), report it, and measure with a higher limit.
    recursion_error = None
    try:
        check(load(policy_dir).policy)
    except RecursionError as exc:
        recursion_error = f"{type(exc).__name__}: {exc} (recursion limit {sys.getrecursionlimit()})"
        sys.setrecursionlimit(max(10_000, 4 * sum(1 for _ in (policy_dir / "services").iterdir())))

    for _ in range(args.repeat):
        # --- total: what `meshc build` does ------------------------------
        out = _fresh(work / "out-total")
        gc.collect()
        g0, full0 = gc_timer.seconds, gc_timer.collections[2]
        t0 = time.perf_counter()
        with paused_gc():  # as `meshc build` runs it (compiler/cli.py)
            result = build(policy_dir)
            if not result.ok:
                for d in result.diagnostics[:20]:
                    print(d.render(str(policy_dir)), file=sys.stderr)
                print("bench: the build failed", file=sys.stderr)
                return 1
            write(result.files, out)
        elapsed = time.perf_counter() - t0
        if elapsed < best_total:
            best_total = elapsed
            total_gc = gc_timer.seconds - g0
            total_full_gcs = gc_timer.collections[2] - full0
        warnings = sum(not d.is_error for d in result.diagnostics)
        stats = _output_stats(out)
        del result
        shutil.rmtree(out)

        # --- the stages, one at a time -----------------------------------
        out = _fresh(work / "out-stages")
        gc.collect()
        state, steps = stage_steps(policy_dir, lambda: out)
        for stage in STAGES:
            g0 = gc_timer.seconds
            t = time.perf_counter()
            steps[stage]()
            elapsed = time.perf_counter() - t
            if elapsed < best_stage[stage]:
                best_stage[stage] = elapsed
                stage_gc[stage] = gc_timer.seconds - g0
            if stage == "check":
                errors = [d for d in list(state["loaded"].diagnostics) + state["diags"] if d.is_error]
                assert not errors, f"the synthetic policy has errors: {errors[:3]}"
        mesh = state["mesh"]
        shutil.rmtree(out)
        # --- informational: the file system's share ----------------------
        out = _fresh(work / "out-io")
        best_io = min(best_io, _floor_io(state["files"], out))
        state.clear()
        shutil.rmtree(out)

        # --- floor, part 2: json.dumps of everything emitted ------------
        gc.collect()
        j, json_bytes = _floor_json(mesh)
        best_json = min(best_json, j)
        del mesh

    rss_peak = _maxrss_mib()

    heap_peak = None
    if args.tracemalloc:
        import tracemalloc

        gc.collect()
        out = _fresh(work / "out-tracemalloc")
        tracemalloc.start()
        result = build(policy_dir)
        write(result.files, out)
        heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del result
        shutil.rmtree(out)

    profile = _profile_stages(policy_dir, work / "out-profile", args.top) if args.profile else None

    print(
        json.dumps(
            {
                "total": best_total,
                "stages": best_stage,
                "total_gc": total_gc,
                "total_full_gcs": total_full_gcs,
                "stage_gc": stage_gc,
                "gc_disabled": args.no_gc,
                "floor_yaml": best_yaml,
                "io": best_io,
                "floor_json": best_json,
                "json_bytes": json_bytes,
                "warnings": warnings,
                "recursion_error": recursion_error,
                "rss_imported_mib": rss_imported,
                "rss_start_mib": rss_start,
                "rss_peak_mib": rss_peak,
                "heap_peak_mib": heap_peak,
                "profile": profile,
                **stats,
            }
        )
    )
    return 0


# --------------------------------------------------------------------------
# The parent: generate, run a child per N, report
# --------------------------------------------------------------------------


def _slope(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else None


def _source_state() -> str:
    """The commit measured, and whether compiler/ had local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "compiler", "templates"], cwd=REPO,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    changed = len(dirty.stdout.splitlines())
    return f"commit {head.stdout.strip()}" + (f" + {changed} changed file(s) in compiler/, templates/" if changed else "")


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f}"


def _verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


def run(args) -> int:
    sizes = args.sizes
    WORK.mkdir(parents=True, exist_ok=True)
    print(
        f"meshc bench: sizes {', '.join(map(str, sizes))}; {CALLS} calls and {RULES} route rules per service; "
        f"best of {args.repeat}; seed {args.seed}; python {sys.version.split()[0]}; {_source_state()}"
        + ("; WHAT-IF: cyclic GC disabled" if args.no_gc else ""),
        flush=True,
    )
    results: dict[int, dict] = {}
    for n in sizes:
        policy_dir = WORK / f"n{n}" / "policies"
        t = time.perf_counter()
        gen = generate(n, args.seed, policy_dir)
        gen_s = time.perf_counter() - t
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(policy_dir), "--repeat", str(args.repeat)]
        if args.tracemalloc:
            cmd.append("--tracemalloc")
        if args.no_gc:
            cmd.append("--no-gc")
        if args.profile and n == args.profile_size:
            cmd += ["--profile", "--top", str(args.top)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"bench: N={n}: the child failed (exit {proc.returncode})", file=sys.stderr)
            return 2
        if proc.stderr.strip():
            sys.stderr.write(proc.stderr)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["input_files"], r["input_bytes"] = gen["files"], gen["bytes"]
        results[n] = r
        floor = r["floor_yaml"] + r["floor_json"]
        st = r["stages"]
        print(f"\nN={n}  (input: {gen['files']} files, {_mib(gen['bytes'])} MiB, generated in {gen_s:.1f}s; child wall {wall:.1f}s)")
        if r["recursion_error"]:
            print(f"  CRASH with the default recursion limit: meshc build fails at this N with {r['recursion_error']};"
                  " measured with a raised limit")
        print(f"  total (build + write)  {r['total']:8.3f} s   = {r['total'] / floor:5.2f}x floor   ({r['warnings']} warnings)"
              f"; in the cyclic GC {r['total_gc']:.3f} s, {r['total_full_gcs']} full collections")
        print("  stages                 " + "  ".join(f"{s} {st[s]:.3f}" for s in STAGES) + f"   (sum {sum(st.values()):.3f} s)")
        print("    of which GC          " + "  ".join(f"{s} {r['stage_gc'][s]:.3f}" for s in STAGES)
              + f"   (sum {sum(r['stage_gc'].values()):.3f} s)")
        print(f"  floor                  {floor:8.3f} s   = yaml CSafeLoader {r['floor_yaml']:.3f} + json.dumps {r['floor_json']:.3f}"
              f"  ({_mib(r['json_bytes'])} MiB compact json)")
        print(f"  (file system)          {r['io']:8.3f} s   to write the same files with plain open/write (not part of the floor;"
              f" meshc's write stage {st['write']:.3f} s)")
        print(f"  written                {r['files']} files, {_mib(r['bytes'])} MiB; largest sidecar {r['largest_sidecar']} "
              f"{r['largest_sidecar_bytes']} bytes")
        mem = f"  peak RSS               {r['rss_peak_mib']:.0f} MiB (after imports {r['rss_imported_mib']:.0f} MiB)"
        if r["heap_peak_mib"] is not None:
            mem += f"; tracemalloc peak of build + write {r['heap_peak_mib']:.0f} MiB"
        print(mem, flush=True)
        if r["profile"]:
            print(f"\ncProfile per stage at N={n} (one run, profiler overhead included; a cyclic-GC pause is charged"
                  " to whichever function happened to allocate when it started):")
            print(r["profile"])

    # ---- summary --------------------------------------------------------
    print("\n=== summary ===")
    head = ["N", "total s", "GC s", "floor s", "x floor"] + [f"{s} s" for s in STAGES] + ["files", "MiB out", "max sidecar B", "peak RSS MiB"]
    rows = []
    for n in sizes:
        r = results[n]
        floor = r["floor_yaml"] + r["floor_json"]
        rows.append(
            [str(n), f"{r['total']:.3f}", f"{r['total_gc']:.3f}", f"{floor:.3f}", f"{r['total'] / floor:.2f}"]
            + [f"{r['stages'][s]:.3f}" for s in STAGES]
            + [str(r["files"]), _mib(r["bytes"]), str(r["largest_sidecar_bytes"]), f"{r['rss_peak_mib']:.0f}"]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))

    print()
    if FLOOR_N in results:
        r = results[FLOOR_N]
        ratio = r["total"] / (r["floor_yaml"] + r["floor_json"])
        print(f"[{_verdict(ratio <= FLOOR_FACTOR)}] floor:  total <= {FLOOR_FACTOR:g}x floor at N={FLOOR_N}: {ratio:.2f}x")
    else:
        print(f"[{_verdict(None)}] floor:  total <= {FLOOR_FACTOR:g}x floor at N={FLOOR_N}: N={FLOOR_N} not run")
    slope = _slope([(n, results[n]["total"]) for n in sizes])
    if slope is None:
        print(f"[{_verdict(None)}] linear: log-log slope of total time vs N <= {SLOPE_MAX}: needs 2+ sizes")
    else:
        stage_slopes = ", ".join(
            f"{s} {_slope([(n, max(results[n]['stages'][s], 1e-9)) for n in sizes]):.2f}" for s in STAGES
        )
        print(f"[{_verdict(slope <= SLOPE_MAX)}] linear: log-log slope of total time vs N <= {SLOPE_MAX}: {slope:.2f}"
              f"   (per stage: {stage_slopes})")
    lo, hi = min(sizes), max(sizes)
    if lo == hi:
        print(f"[{_verdict(None)}] size:   largest sidecar independent of N: needs 2+ sizes")
    else:
        a, b = results[lo]["largest_sidecar_bytes"], results[hi]["largest_sidecar_bytes"]
        change = (b - a) / a
        print(f"[{_verdict(abs(change) <= SIZE_TOLERANCE)}] size:   largest sidecar at N={hi} within "
              f"{SIZE_TOLERANCE:.0%} of N={lo}: {a} -> {b} bytes ({change:+.1%})")

    if not args.keep:
        for n in sizes:
            shutil.rmtree(WORK / f"n{n}", ignore_errors=True)
    return 0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or any(n < 15 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be integers >= 15")
    return sorted(set(sizes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark meshc on a synthetic mesh (a report: exits 0 even if a target fails).")
    p.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="comma-separated N (default: 250,500,1000,2000)")
    p.add_argument("--repeat", type=int, default=3, help="best of K runs per N (default: 3)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the synthetic mesh (default: 1)")
    p.add_argument("--profile", action="store_true", help="also print cProfile's top functions per stage at --profile-size")
    p.add_argument("--profile-size", type=int, default=None, help="N to profile (default: 1000 if run, else the largest N)")
    p.add_argument("--top", type=int, default=15, help="functions per cProfile table (default: 15)")
    p.add_argument("--tracemalloc", action="store_true", help="also measure the Python heap peak of one build (slow)")
    p.add_argument("--no-gc", action="store_true", help="what-if: run with the cyclic garbage collector disabled")
    p.add_argument("--keep", action="store_true", help="keep the generated policies under bench/.work/")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.child:
        return child(args)
    if args.profile and args.profile_size is None:
        args.profile_size = FLOOR_N if FLOOR_N in args.sizes else max(args.sizes)
    if args.profile and args.profile_size not in args.sizes:
        p.error(f"--profile-size {args.profile_size} is not one of --sizes")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
