"""`meshc explain-code CODE`: what a diagnostic code means, an example that raises it and its fix.

    meshc explain-code E218                 the entry as plain text (also `e218`, `error[E218]`)
    meshc explain-code E218 --format json   the entry as one JSON object (see compiler/codes: Entry.as_json)
    meshc explain-code --list               every code with its title (`--format json`: a list of objects)

Exit 0, or 1 for a code the catalog does not know (with "did you mean"), 2 for bad usage.
"""

from __future__ import annotations

import json
import re
import sys

from compiler import codes as catalog
from compiler.diagnostics import printable

_PASTED = re.compile(r"\s*(?:(?:error|warning)\[)?([EW]\d{3})\]?:?\s*", re.IGNORECASE)


def register(sub) -> None:
    p = sub.add_parser("explain-code", help="explain a diagnostic code (E218, W301...) with an example and its fix")
    p.add_argument("code", nargs="?", help="the code, as printed in brackets: error[E218]")
    p.add_argument("--list", action="store_true", help="list every code with its title")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.list == bool(args.code):
        print("error: give one CODE (e.g. E218), or --list", file=sys.stderr)
        return 2
    if args.list:
        entries = catalog.entries()
        if args.format == "json":
            rows = [{"code": e.code, "severity": e.severity, "title": e.title} for e in entries]
            print(json.dumps(rows, indent=2, sort_keys=True))
        else:
            for e in entries:
                print(f"{e.code}  {e.title}")
        return 0
    pasted = _PASTED.fullmatch(args.code)  # `error[E218]` copied from a diagnostic line
    code = pasted.group(1).upper() if pasted else args.code.strip().upper()
    entry = catalog.entry(code)
    if entry is None:
        close = catalog.suggestions(args.code)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        print(printable(f"error: no code {args.code!r} in the catalog{hint}; `meshc explain-code --list` lists them"),
              file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(entry.as_json(), indent=2, sort_keys=True))
    else:
        sys.stdout.write(catalog.as_text(entry))
    return 0
