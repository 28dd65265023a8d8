"""`meshc schema`: the JSON Schema of a policy document, for editors and tools.

    meshc schema                          print it (JSON Schema draft-07)
    meshc schema -o FILE                  write it to FILE
    meshc schema -o FILE --check          exit 1 if FILE is not what `meshc schema` writes now

One schema covers every kind (`kind` picks the definition) and one document: yaml-language-server checks
each document of a policy file against it. The repository keeps it in schema/meshc.schema.json.
Exit 0, 1 when --check finds FILE missing or out of date, 2 for bad usage.
"""

from __future__ import annotations

import sys
from pathlib import Path

from compiler.diagnostics import printable
from compiler.schema import COMMITTED, policy_schema, render


def register(sub) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of policy documents (editor completion, hover, errors)")
    p.add_argument("-o", "--output", help=f"write it to this file (the repository's copy: {COMMITTED})")
    p.add_argument("--check", action="store_true", help="do not write: exit 1 if OUTPUT differs from a fresh export")
    p.set_defaults(func=run)


def run(args) -> int:
    text = render(policy_schema())
    if args.check:
        if not args.output:
            print("error: --check needs -o FILE, the schema file to compare", file=sys.stderr)
            return 2
        target = Path(args.output)
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            return 0
        state = "does not exist" if current is None else "is out of date"
        print(printable(f"error: {args.output} {state}; regenerate it with: meshc schema -o {args.output}"),
              file=sys.stderr)
        return 1
    if args.output:
        target = Path(args.output)
        if target.parent != Path(""):
            target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
