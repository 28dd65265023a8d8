"""Python policy files: module-level policy objects, loaded like YAML documents.

The file is executed as a module; every module-level `Mesh`, `Service` or
`Route` (or a list/tuple of them) becomes a document. Each object remembers
the line that constructed it (see `Document.model_post_init`), so
provenance and diagnostics point into the Python file too.

Python policies are code: only load files you would run.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from pydantic import ValidationError

from compiler.diagnostics import Diagnostic, Source
from compiler.load.typing_errors import diagnostics_from_validation
from compiler.policy.base import PYTHON_POLICY_FILE, Document


def load_python(path: Path, rel: str) -> tuple[list[Document], list[Diagnostic]]:
    abs_path = str(path.resolve())
    module_name = f"_meshc_policy_{abs(hash(abs_path))}"
    spec = importlib.util.spec_from_file_location(module_name, abs_path)
    if spec is None or spec.loader is None:
        return [], [Diagnostic("E010", "cannot load this Python file", Source(rel, 1, 1))]
    module = importlib.util.module_from_spec(spec)
    token = PYTHON_POLICY_FILE.set((abs_path, rel))
    try:
        spec.loader.exec_module(module)
    except ValidationError as exc:
        where = _failing_line(exc, abs_path, rel)
        data = {"kind": exc.title} if exc.title in ("Mesh", "Service", "Route") else {}
        return [], diagnostics_from_validation(exc, data, lambda loc: where)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a diagnostic
        where = _failing_line(exc, abs_path, rel)
        return [], [Diagnostic("E010", f"the policy file raised {type(exc).__name__}: {exc}", where)]
    finally:
        PYTHON_POLICY_FILE.reset(token)
        sys.modules.pop(module_name, None)

    found: dict[int, Document] = {}
    for value in vars(module).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, Document):
                found[id(item)] = item
    docs = sorted(found.values(), key=lambda d: (d.source.line if d.source else 0, d.kind, d.subject))
    return docs, []


def _failing_line(exc: BaseException, abs_path: str, rel: str) -> Source:
    line = 1
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == abs_path and frame.lineno:
            line = frame.lineno
    return Source(rel, line, 1)
