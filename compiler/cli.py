"""`meshc`: the command line.

    meshc build [POLICY_DIR] [-o OUT] [--static] [--templates DIR] [--check] [--relocate] [--settle S] [--format F]
    meshc check [POLICY_DIR] [--format text|json|sarif|github]
    meshc validate [OUT]

Exit codes: 0 success, 1 the policies or the output have errors, 2 bad usage, 3 an internal error (a meshc
bug: one line says where; `--traceback` or MESHC_TRACEBACK=1 prints the whole traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path

from compiler.build import BuildOptions, build, check_policies, paused_gc
from compiler.diagnostics import Diagnostic, printable
from compiler.ir import to_json
from compiler.render import DEFAULT_TEMPLATES, TemplateError
from compiler.report import FORMATS, Reporter
from compiler.report import text as text_report
from compiler.write import MANIFEST, SETTLE, WriteError, differences, read_manifest, write


def _error(text: str) -> None:
    print(printable(f"error: {text}"), file=sys.stderr)


def _print_diags(diags: list[Diagnostic], root: str) -> None:
    """The text format on stderr (`--format` of check and build: compiler/report)."""
    for line in text_report.lines(diags, root):
        print(line, file=sys.stderr)


def _cases(policy_dir: Path) -> list[Path]:
    return sorted(p for p in policy_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


SETTING_FLAGS = {"certs_root": "--certs-root", "config_root": "--config-root"}


def _settings_for(dest: Path, args) -> tuple[dict[str, str] | None, str | None]:
    """Where sidecars read their files and certificates: as given, else as the output records it.

    A rebuild that forgets `--certs-root` would silently point every sidecar elsewhere; so an omitted flag
    reuses the value recorded in the output's manifest, and a different one is refused unless `--relocate`.
    """
    given = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None}
    recorded = (read_manifest(dest) or {}).get("settings") or {}
    if args.relocate or not dest.exists():
        return given, None
    settings = dict(given)
    for key, flag in SETTING_FLAGS.items():
        if key not in given and key in recorded:
            if not isinstance(recorded[key], str) or not re.fullmatch(_ROOT, recorded[key]):
                return None, f"{dest / MANIFEST} records {flag} {recorded[key]!r}, which is not an absolute path; give {flag}"
            settings[key] = recorded[key]
            print(printable(f"{dest}: {flag} {recorded[key]} (recorded in {dest / MANIFEST})"), file=sys.stderr)
        elif settings.get(key) != recorded.get(key):
            was = f"{flag} {recorded[key]}" if key in recorded else f"no {flag}"
            return None, (
                f"'{dest}' was built with {was}; running sidecars would read their "
                f"{'certificates' if key == 'certs_root' else 'files'} from another place after this build. "
                f"Build with the same {flag}, or add --relocate to move them on purpose (each sidecar restarts)."
            )
    return settings, None


def cmd_build(args) -> int:
    report = Reporter(args.format)
    code = _build(args, report)
    report.finish()  # the machine formats: one document of every directory's diagnostics on stdout
    return code


def _build(args, report: Reporter) -> int:
    policy_dir = Path(args.policy_dir)
    out = Path(args.output)
    jobs = [(c, out / c.name) for c in _cases(policy_dir)] if args.cases else [(policy_dir, out)]
    if args.cases and not jobs:
        _error(f"no case folders in '{policy_dir}'")
        return 1
    results = []
    failed = False
    for src, dest in jobs:
        settings, problem = _settings_for(dest, args)
        if problem:
            _error(f"{problem}")
            return 1
        options = BuildOptions(
            static=args.static, templates=Path(args.templates),
            config_root=settings.get("config_root"), certs_root=settings.get("certs_root"),
        )
        try:
            result = build(src, options)
        except TemplateError as exc:
            _error(f"{exc}")
            return 1
        report.add(result.diagnostics, str(src))
        failed |= not result.ok
        results.append((src, dest, result, options))
    if failed:
        return 1

    if args.check:
        stale = []
        for src, dest, result, options in results:
            try:
                lines = differences(result.files, dest, options.settings)
            except WriteError as exc:
                _error(str(exc))
                return 1
            for line in lines:
                what, rel = line.split(": ", 1)
                stale.append(f"{what}: {dest / rel}")
        for line in stale:  # stdout holds only the report in a machine format
            print(line, file=sys.stderr if report.machine else sys.stdout)
        if stale:
            print(f"{len(stale)} file(s) differ from what the policies compile to; run meshc build", file=sys.stderr)
            return 1
        print("output is up to date", file=sys.stderr)
        return 0

    for src, dest, result, options in results:
        try:
            rollout = write(result.files, dest, options.settings, settle=args.settle)
        except WriteError as exc:
            _error(f"{exc}")
            return 1
        if args.dump_ir:
            target = Path(args.dump_ir) / src.name / "ir.json" if args.cases else Path(args.dump_ir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(to_json(result.ir))
        print(f"{src}: {len(result.ir.sidecars)} sidecar(s) -> {dest}", file=sys.stderr)
        if rollout.changed and not all(c.action == "added" for c in rollout.sidecars):
            for line in rollout.lines():
                print(f"  {line}", file=sys.stderr)
        elif not rollout.changed:
            print("  unchanged: no sidecar needs to do anything", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    diags, view = check_policies(Path(args.policy_dir))
    report = Reporter(args.format)
    report.add(diags, args.policy_dir)
    report.finish()
    if view is None:
        return 1
    print(f"{args.policy_dir}: {len(view.services)} service(s), {len(view.routes)} route(s): ok", file=sys.stderr)
    return 0


def cmd_certs(args) -> int:
    from compiler.certs import write_edge_certs, write_service_certs

    diags, view = check_policies(Path(args.policy_dir))
    _print_diags(diags, args.policy_dir)
    if view is None:
        return 1
    mesh = view.mesh
    root = Path(args.output)
    identities = {name: sv.identity for name, sv in view.views.items()}
    identities.update({name: gv.identity for name, gv in view.gateways.items()})
    for folder in write_service_certs(root, mesh.trust_domain, identities, args.days):
        print(printable(f"{folder}: {identities[folder.name]}"), file=sys.stderr)
    for name, gv in sorted(view.gateways.items()):
        for folder, spec in write_edge_certs(root, mesh.trust_domain, gv.gateway, args.days):
            print(printable(f"{folder}: {_edge_line(spec)}"), file=sys.stderr)
            for what, path in sorted(spec.paths.items()):
                print(printable(f"  {spec.files[what]}: the gateway reads {path}"), file=sys.stderr)
    if view.gateways:
        print(
            printable(
                f"edge certificates are signed by the development CA ({root / 'ca.pem'}): clients must trust it; "
                "point the policy's cert/key/client_ca paths at these files, or mount each folder where the paths say"
            ),
            file=sys.stderr,
        )
    print("keys are private: keep the certificates folder out of version control", file=sys.stderr)
    return 0


def _edge_line(spec) -> str:
    if spec.kind == "server":
        return f"server certificate for {', '.join(spec.hosts)}"
    if spec.kind == "client-ca":
        return "the CA that client certificates must be signed by (the development CA)"
    return "a client certificate signed by that CA, for testing clients (not read by the gateway)"


def cmd_validate(args) -> int:
    from compiler.validate.envoy import load_yaml, validate_all
    from compiler.validate.schema import check_sidecar_dir

    out = Path(args.output)
    sidecars = sorted(p.parent for p in out.rglob("bootstrap.yaml"))
    if not sidecars:
        _error(f"no sidecar output (*/bootstrap.yaml) under '{out}'")
        return 1
    bad = 0
    if not args.envoy_only:
        for d in sidecars:
            for err in check_sidecar_dir(d, load_yaml):
                print(printable(f"schema: {d.parent / err.where}: {err.message}"), file=sys.stderr)
                bad += 1
    if not args.schema_only:
        for verdict, d in zip(validate_all(sidecars, args.jobs), sidecars):
            if not verdict.ok:
                bad += 1
                rejected = "\n".join(map(printable, str(verdict.output).splitlines()))  # Envoy quotes policy values
                print(f"envoy: {printable(str(d))}: rejected:\n{rejected}", file=sys.stderr)
    checks = "schema" if args.schema_only else "envoy" if args.envoy_only else "schema + envoy"
    if bad:
        print(f"{bad} problem(s) in {len(sidecars)} sidecar(s)", file=sys.stderr)
        return 1
    print(f"{out}: {len(sidecars)} sidecar(s) valid ({checks})", file=sys.stderr)
    return 0


def _number(kind: type, low: float, high: float):
    """An argparse type: a number of `kind` from `low` to `high` (else bad usage, exit 2, before anything is done)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is not between {low} and {high}")
        return value

    return parse


_ROOT = r"/[A-Za-z0-9._/-]*"


def _root(text: str) -> str:
    """--config-root / --certs-root: an absolute path of the characters the Mesh's `config_dir` allows (it is
    written into every sidecar's configuration)."""
    if not re.fullmatch(_ROOT, text):
        raise argparse.ArgumentTypeError(
            f"{printable(repr(text))} is not an absolute path of letters, digits, '.', '_', '-' and '/'"
        )
    return text


def _format_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format", choices=FORMATS, default="text",
        help="diagnostics as text on stderr (default), or on stdout as json, sarif (2.1.0, code scanning) or "
        "github (workflow commands: annotations)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshc", description="Compile service-mesh policies into Envoy sidecar configs.")
    p.add_argument("--traceback", action="store_true", help="on an internal error (a meshc bug), print the whole traceback")
    common = argparse.ArgumentParser(add_help=False)  # the same flag after the command: `meshc build --traceback`
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)  # type: ignore[method-assign]

    b = sub.add_parser("build", help="compile a policy directory into Envoy configs")
    b.add_argument("policy_dir", nargs="?", default="policies", help="policy directory (default: policies)")
    b.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    b.add_argument("--static", action="store_true", help="one self-contained bootstrap.yaml per sidecar")
    b.add_argument("--templates", default=str(DEFAULT_TEMPLATES), help="directory with bootstrap.yaml.j2")
    b.add_argument("--check", action="store_true", help="write nothing; exit 1 if OUT differs from the compiled policies")
    b.add_argument("--cases", action="store_true", help="POLICY_DIR holds one mesh per folder; compile each into OUT/<folder>")
    b.add_argument("--config-root", type=_root, help="sidecar S reads its files from CONFIG_ROOT/S (default: the Mesh's config_dir)")
    b.add_argument("--certs-root", type=_root, help="sidecar S reads its certificates from CERTS_ROOT/S (default: the Mesh's mtls.certs_dir)")
    b.add_argument("--relocate", action="store_true",
                   help="accept --config-root/--certs-root values that differ from those the output was built with")
    b.add_argument("--settle", type=_number(float, 0, 3600), default=SETTLE, metavar="SECONDS",
                   help=f"pause between write steps into a running mesh's output (default: {SETTLE})")
    b.add_argument("--dump-ir", metavar="FILE", help="also write the mesh IR as JSON to FILE (with --cases: FILE/<case>/ir.json)")
    _format_flag(b)
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("check", help="load and check policies; write nothing")
    c.add_argument("policy_dir", nargs="?", default="policies")
    _format_flag(c)
    c.set_defaults(func=cmd_check)

    k = sub.add_parser(
        "certs", help="create a development CA, per-service and per-gateway certificates with SPIFFE IDs, and "
        "gateways' edge certificates"
    )
    k.add_argument("policy_dir", nargs="?", default="policies")
    k.add_argument(
        "-o", "--output", required=True,
        help="certificates root: CA here, CERTS/<service or gateway>/{cert,key,ca}.pem, CERTS/<gateway>/edge/<host>/",
    )
    k.add_argument("--days", type=_number(int, 1, 36500), default=30, help="validity of the leaf certificates, not the CA (default: 30)")
    k.set_defaults(func=cmd_certs)

    v = sub.add_parser("validate", help="check emitted configs against Envoy's schema and the real envoy binary")
    v.add_argument("output", nargs="?", default="out")
    v.add_argument("--schema-only", action="store_true", help="only the offline schema check")
    v.add_argument("--envoy-only", action="store_true", help="only `envoy --mode validate`")
    v.add_argument("-j", "--jobs", type=_number(int, 1, 256), default=2, help="envoy processes at once (default: 2)")
    v.set_defaults(func=cmd_validate)

    from compiler.commands import register_all

    register_all(sub)
    return p


INTERNAL_ERROR = 3


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with paused_gc():  # one short-lived process: see compiler.build.paused_gc
            return args.func(args)
    except KeyboardInterrupt:
        print("meshc: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system refused (a path that is a file, no space, no permission): not a bug
        _error(f"{exc.filename + ': ' if isinstance(exc.filename, str) else ''}{exc.strerror or exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - every other exception is a bug of meshc's
        return internal_error(exc, args.traceback or os.environ.get("MESHC_TRACEBACK") == "1")


def internal_error(exc: BaseException, full: bool) -> int:
    """One line for a bug: what was raised and where in meshc; the whole traceback only when asked for."""
    if full:
        traceback.print_exception(exc, file=sys.stderr)
    frames = traceback.extract_tb(exc.__traceback__)
    package = os.path.dirname(os.path.abspath(__file__))
    ours = [f for f in frames if os.path.abspath(f.filename).startswith(package + os.sep)] or frames
    where = ""
    if ours:
        frame = ours[-1]
        path = os.path.relpath(os.path.abspath(frame.filename), os.path.dirname(package))
        where = f" at {path}:{frame.lineno} in {frame.name}()"
    hint = "" if full else "; run with --traceback (or MESHC_TRACEBACK=1) for the whole traceback"
    print(
        printable(
            f"internal error: this is a meshc bug, not a problem in your policies (please report it): "
            f"{type(exc).__name__}{where}{hint}"
        ),
        file=sys.stderr,
    )
    return INTERNAL_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
