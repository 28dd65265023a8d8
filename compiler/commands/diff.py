"""`meshc diff`: what a change of policies means (compiler/diff).

    meshc diff OLD_DIR NEW_DIR [--format text|markdown|json] [--exit-code]
    meshc diff --git REV [REV2] [POLICY_DIR] [...]

Exit 0 whether or not they differ (with `--exit-code`: 1 when they differ), 1 when a side has errors
(printed as `meshc check` prints them), 2 bad usage (a missing directory, an unknown revision).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

from compiler.diagnostics import Diagnostic, printable
from compiler.diff import diff
from compiler.diff.render import FORMATS
from compiler.diff.sides import Side, SideError, git_sides, is_revision, load_side

USAGE = 2


def _print_diags(side: Side) -> None:
    for d in sorted(side.diagnostics, key=Diagnostic.sort_key):
        print(d.render(side.label), file=sys.stderr)
    errors = sum(d.is_error for d in side.diagnostics)
    if errors:
        print(printable(f"{side.label}: {errors} error(s); nothing compared"), file=sys.stderr)


def _git_args(args) -> tuple[str, str | None, str]:
    """--git REV [REV2] [POLICY_DIR]: one extra word is POLICY_DIR when it is a directory or not a revision,
    else REV2."""
    rest = list(args.paths)
    if len(rest) > 2:
        raise SideError("--git takes REV, then at most REV2 and POLICY_DIR")
    if len(rest) == 2:
        return args.git, rest[0], rest[1]
    if len(rest) == 1:
        if Path(rest[0]).is_dir() or not is_revision(Path("."), rest[0]):
            return args.git, None, rest[0]
        return args.git, rest[0], "policies"
    return args.git, None, "policies"


def cmd_diff(args) -> int:
    with ExitStack() as stack:
        try:
            if args.git is not None:
                rev, rev2, shown = _git_args(args)
                old, new = git_sides(stack, Path(shown), rev, rev2, shown)
            else:
                if len(args.paths) != 2:
                    raise SideError("give OLD and NEW policy directories, or --git REV [REV2] [POLICY_DIR]")
                old, new = (load_side(Path(p), p) for p in args.paths)
        except SideError as exc:
            print(printable(f"error: {exc}"), file=sys.stderr)
            return USAGE
        for side in (old, new):
            _print_diags(side)
        if not (old.ok and new.ok):
            return 1
        report = diff(old, new)
    sys.stdout.write(FORMATS[args.format](report))
    return 1 if (args.exit_code and report.different) else 0


def register(sub) -> None:
    d = sub.add_parser(
        "diff",
        help="what a change of policies means: traffic moved, rules, protections, who may call what, rollout",
        description="Compare two policy directories (or two git revisions of one) by what they mean.",
    )
    d.add_argument("paths", nargs="*", metavar="DIR",
                   help="OLD NEW policy directories; with --git: [REV2] [POLICY_DIR] (default: policies)")
    d.add_argument("--git", metavar="REV",
                   help="compare POLICY_DIR at git revision REV with REV2 (default: the working tree)")
    d.add_argument("--format", choices=sorted(FORMATS), default="text", help="text (default), markdown, json")
    d.add_argument("--exit-code", action="store_true", help="exit 1 when the sides differ (like git diff)")
    d.set_defaults(func=cmd_diff)
