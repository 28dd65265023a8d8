"""`meshc import istio FILES... -o POLICY_DIR [--partial] [--mesh-name N] [--report FILE]`: Istio YAML -> meshc.

Reads Istio resources and the Kubernetes Services and Deployments they name (compiler/importer/), writes one
policy file per service (plus mesh.yaml, gateways.yaml, external.yaml), with comments where a choice was made.
What cannot be carried over is listed on stderr with its file:line and the reason; the exit code is then 1
and nothing is written, unless `--partial` (written anyway, exit 0). Importing again into the same folder
replaces the earlier import: its files this one does not write are removed, unless edited since (then the
import is refused, see compiler/importer/write.py `replace_files`). The written policies are checked like
`meshc check` does: errors there are exit 1 too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cmd_import(args) -> int:
    from compiler.build import check_policies
    from compiler.cli import _error, _print_diags
    from compiler.diagnostics import printable
    from compiler.importer import import_istio
    from compiler.importer.write import Refused, replace_files

    paths = [Path(p) for p in args.files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        _error(f"no such file: {missing[0]}")
        return 1
    result = import_istio(paths, args.mesh_name)
    for p in result.problems:
        print(printable(f"{p}: not imported"), file=sys.stderr)
    for p in result.notes:
        print(printable(f"{p} (note)"), file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps({
            "not_imported": [_entry(p) for p in result.problems], "notes": [_entry(p) for p in result.notes],
        }, indent=2) + "\n", encoding="utf-8")
    if result.problems and not args.partial:
        _error(f"{len(result.problems)} thing(s) cannot be imported (listed above); nothing written. "
               "--partial writes the rest")
        return 1
    dest = Path(args.output)
    try:
        removed = replace_files(result.files, dest)
    except Refused as exc:
        _error(f"{dest}: {exc}. Nothing written: move or delete those files, or import into a new folder")
        return 1
    except OSError as exc:
        _error(f"{dest}: cannot write the policy files: {exc}")
        return 1
    print(f"{len(result.files)} policy file(s) -> {dest}; {len(result.problems)} not imported, "
          f"{len(result.notes)} note(s)", file=sys.stderr)
    if removed:
        print(f"removed {len(removed)} file(s) of the earlier import that this one does not write: "
              f"{', '.join(removed)}", file=sys.stderr)
    diags, view = check_policies(dest)
    _print_diags(diags, str(dest))
    return 0 if view is not None else 1


def _entry(p) -> dict:
    return {"file": p.source.file, "line": p.source.line, "column": p.source.column, "message": p.message}


def register(sub) -> None:
    p = sub.add_parser("import", help="convert Istio YAML (and its Kubernetes Services/Deployments) to meshc policies")
    p.add_argument("source", choices=["istio"], help="what to import from: istio")
    p.add_argument("files", nargs="+", help="Istio and Kubernetes YAML files (multi-document)")
    p.add_argument("-o", "--output", required=True, metavar="POLICY_DIR", help="where the policy files are written")
    p.add_argument("--partial", action="store_true",
                   help="write what can be imported even when some of the input cannot (exit 0)")
    p.add_argument("--mesh-name", default="mesh", help="the Mesh's name (default: mesh)")
    p.add_argument("--report", metavar="FILE", help="also write what was not imported, as JSON")
    p.set_defaults(func=cmd_import)
