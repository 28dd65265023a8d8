"""Subcommands beyond build/check/certs/validate, one module each.

Every module here defines `register(sub)`: it adds its parser with
`sub.add_parser(...)` (which already carries the common flags) and sets
`func` to a function `(args) -> exit code`. `compiler/cli.py` registers them
all, in name order; adding a command is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil


def register_all(sub) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
