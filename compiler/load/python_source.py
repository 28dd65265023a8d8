"""Python policy files: module-level policy objects, loaded like YAML documents.

The file is executed as a module; every module-level `Mesh`, `Service` or
`Route` (or a list/tuple of them) becomes a document. Each object remembers
the line that constructed it (see `Document.model_post_init`), so
provenance and diagnostics point into the Python file too.

Python policies are code: only load files you would run.
"""

from __future__ import annotations

import ast
import sys
import traceback
import types
from pathlib import Path

from pydantic import ValidationError

from compiler.diagnostics import Diagnostic, Source
from compiler.load.typing_errors import MODELS, diagnostics_from_validation
from compiler.policy.base import PYTHON_POLICY_FILE, Document


def load_python(path: Path, rel: str) -> tuple[list[Document], list[Diagnostic]]:
    abs_path = str(path.resolve())
    module_name = f"_meshc_policy_{abs(hash(abs_path))}"
    try:
        text = path.read_bytes()
        # compiled here rather than imported: an import would leave __pycache__/ in the policy directory
        code = compile(text, abs_path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = Source(rel, exc.lineno or 1, exc.offset or 1)
        return [], [Diagnostic("E010", f"invalid Python: {exc.msg}", where)]
    except (OSError, ValueError) as exc:
        return [], [Diagnostic("E010", f"cannot load this Python file: {exc}", Source(rel, 1, 1))]
    module = types.ModuleType(module_name)
    module.__file__ = abs_path
    sys.modules[module_name] = module
    token = PYTHON_POLICY_FILE.set((abs_path, rel))
    try:
        exec(code, module.__dict__)
    except ValidationError as exc:
        call = _failing_call(exc, abs_path, text)
        data: dict = {"kind": exc.title} if exc.title in MODELS else {}
        if call is not None and data:
            data.update(_constant_names(call))
        line = _failing_line(exc, abs_path, rel)
        return [], diagnostics_from_validation(exc, data, lambda loc, value=False: _argument_at(call, loc, value, rel) or line)
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


def _failing_call(exc: BaseException, abs_path: str, text: bytes) -> ast.Call | None:
    """The call expression in the policy file that raised (`Service(...)`), if it can be found."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == abs_path]
    if not frames:
        return None
    frame = frames[-1]
    try:
        tree = ast.parse(text)
    except SyntaxError:  # pragma: no cover - it compiled a moment ago
        return None
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == frame.lineno]
    exact = [n for n in calls if n.col_offset == getattr(frame, "colno", None)]
    if exact:
        return exact[0]
    return calls[0] if len(calls) == 1 else None


def _constant_names(call: ast.Call) -> dict:
    """`name=`/`service=` given as literals, so diagnostics can say "Service 'reviews'"."""
    return {
        kw.arg: kw.value.value
        for kw in call.keywords
        if kw.arg in ("name", "service") and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
    }


def _argument_at(call: ast.Call | None, loc: tuple, value: bool, rel: str) -> Source | None:
    """Position of `loc` in the failing call: its keyword argument, followed into literal lists and dicts."""
    if call is None or not loc:
        return None
    kw = next((k for k in call.keywords if k.arg == loc[0]), None)
    if kw is None:
        return None
    node: ast.AST = kw.value if value or len(loc) > 1 else kw
    for i, part in enumerate(loc[1:], start=1):
        last = i == len(loc) - 1
        if isinstance(part, int) and isinstance(node, (ast.List, ast.Tuple)) and 0 <= part < len(node.elts):
            node = node.elts[part]
        elif isinstance(node, ast.Dict):
            pairs = [(k, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == part]
            if not pairs:
                break
            node = pairs[0][0] if last and not value else pairs[0][1]
        else:
            break
    return Source(rel, node.lineno, node.col_offset + 1)
