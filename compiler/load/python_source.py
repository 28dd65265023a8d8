"""Python policy files: module-level policy objects, loaded like YAML documents.

The file is executed as a module; every module-level `Mesh`, `Service` or
`Route` (or a list/tuple of them) becomes a document. Each object remembers
the line that constructed it (see `Document.model_post_init`), so
provenance and diagnostics point into the Python file too.

However the file ends (any exception, `sys.exit`, `KeyboardInterrupt`) is a
diagnostic at its line (E010); its warnings are W011. Every collected object is
validated again from its fields (`revalidate`), so `model_construct()` or
`object.__setattr__` cannot slip an unchecked value past the checks.

Python policies are code: only load files you would run.
"""

from __future__ import annotations

import ast
import builtins
import os
import sys
import traceback
import types
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ValidationError

from compiler.diagnostics import Diagnostic, Severity, Source, format_path
from compiler.load.typing_errors import MODELS, diagnostics_from_validation, show
from compiler.load.yaml_source import MAX_DIGITS
from compiler.policy.base import PYTHON_POLICY_FILE, Document


def load_python(path: Path, rel: str) -> tuple[list[Document], list[Diagnostic]]:
    abs_path = str(path.resolve())
    module_name = f"_meshc_policy_{abs(hash(abs_path))}"
    try:
        text = path.read_bytes()
    except OSError as exc:
        return [], [Diagnostic("E013", f"cannot read this file: {exc.strerror or type(exc).__name__}", Source(rel, 1, 1))]
    try:
        # compiled here rather than imported: an import would leave __pycache__/ in the policy directory
        code = compile(text, abs_path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = Source(rel, exc.lineno or 1, exc.offset or 1)
        return [], [Diagnostic("E010", f"invalid Python: {exc.msg}", where)]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [], [Diagnostic("E010", f"cannot compile this Python file: {safe_str(exc)}", Source(rel, 1, 1))]
    module = types.ModuleType(module_name)
    module.__file__ = abs_path
    failure: BaseException | None = None
    caught: list[warnings.WarningMessage] = []
    with _isolated():
        sys.modules[module_name] = module
        token = PYTHON_POLICY_FILE.set((abs_path, rel))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                exec(code, module.__dict__)
        except BaseException as exc:  # noqa: BLE001 - any way user code ends (sys.exit too) is a diagnostic
            failure = exc
        finally:
            PYTHON_POLICY_FILE.reset(token)
            sys.modules.pop(module_name, None)
    if isinstance(failure, ValidationError):
        call = _failing_call(failure, abs_path, text)
        data: dict = {"kind": failure.title} if failure.title in MODELS else {}
        if call is not None and data:
            data.update(_constant_names(call))
        line = _failing_line(failure, abs_path, rel)
        where = lambda loc, value=False: _argument_at(call, loc, value, rel) or line  # noqa: E731
        return [], diagnostics_from_validation(failure, data, where)
    if failure is not None:
        return [], [_raised(failure, abs_path, rel)]
    notes = [_warning(w, abs_path, rel) for w in caught]

    try:
        found: dict[int, Document] = {}
        for value in list(vars(module).values()):
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, Document):
                    found[id(item)] = item
    except BaseException as exc:  # noqa: BLE001 - a module-level object of the policy file misbehaved
        return [], [*notes, _raised(exc, abs_path, rel)]
    docs, errors = revalidate(found.values(), rel)
    docs.sort(key=lambda d: (d.source.line if d.source else 0, d.kind, d.subject))
    return docs, [*notes, *errors]


@contextmanager
def _isolated():
    """Undo what a policy file changes in the interpreter that meshc itself relies on afterwards: the
    standard streams (diagnostics must not vanish), the working directory (relative paths), the recursion
    limit, the builtins and the modules imported before it (`sys.modules['compiler.policy'] = None`)."""
    streams = sys.stdout, sys.stderr
    limit = sys.getrecursionlimit()
    try:
        cwd = os.getcwd()
    except OSError:  # pragma: no cover - the working directory was deleted
        cwd = None
    saved_builtins = dict(vars(builtins))
    saved_modules = dict(sys.modules)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        sys.setrecursionlimit(limit)
        if cwd is not None:
            os.chdir(cwd)
        space = vars(builtins)
        for name in [n for n in space if n not in saved_builtins]:
            del space[name]
        space.update(saved_builtins)
        for name, module in saved_modules.items():
            if sys.modules.get(name) is not module:
                sys.modules[name] = module


def safe_str(exc: BaseException) -> str:
    """`str(exc)`, or a placeholder when the exception's own `__str__` fails."""
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001 - user code
        return f"<{type(exc).__name__} that cannot be printed>"


def _raised(exc: BaseException, abs_path: str, rel: str) -> Diagnostic:
    where = _failing_line(exc, abs_path, rel)
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, (int, type(None))) else safe_str(exc)
        return Diagnostic("E010", f"the policy file called sys.exit({show(code)}) (a policy file must not exit)", where)
    text = safe_str(exc)
    return Diagnostic("E010", f"the policy file raised {type(exc).__name__}" + (f": {text}" if text else ""), where)


def _warning(w: warnings.WarningMessage, abs_path: str, rel: str) -> Diagnostic:
    """A warning issued while the policy file ran, at its line when it came from the file."""
    line = w.lineno if w.filename == abs_path and isinstance(w.lineno, int) else 1
    category = getattr(w.category, "__name__", "Warning")
    return Diagnostic(
        "W011", f"the policy file issued a {category}: {safe_str(w.message)}", Source(rel, line, 1), severity=Severity.WARNING
    )


_MISSING = object()


def _fields(value):
    """A model's fields as the input that would build it again: nested models as dicts (pydantic takes a
    model instance as it is), keyed by alias; a field left at its default and never set is left out."""
    if isinstance(value, BaseModel):
        out = {}
        fields_set = value.model_fields_set
        for name, info in type(value).model_fields.items():
            current = value.__dict__.get(name, _MISSING)
            if current is _MISSING:
                continue  # model_construct() without a required field: validation says it is missing
            if name not in fields_set and current == info.get_default(call_default_factory=True):
                continue
            out[info.alias or name] = _fields(current)
        return out
    if isinstance(value, dict):
        return {k: _fields(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fields(v) for v in value) if type(value) in (list, tuple) else [_fields(v) for v in value]
    return value


def _unwritable(value, path: tuple = ()) -> tuple[tuple, Diagnostic] | None:
    """The first value no output file can hold, with its path: a string UTF-8 cannot encode (a lone surrogate:
    Python has them, YAML and JSON files cannot; E015) or an integer Python will not print (over 4,300 digits;
    E012), in keys or values."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, Diagnostic("E015", "a string that is not Unicode text (it holds a lone surrogate such as "
                                    "'\\ud800'; no file can carry it)")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value).bit_length() > MAX_DIGITS * 3.32:
            return path, Diagnostic("E012", f"a number with more than {MAX_DIGITS} digits")
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for k, v in items:
        hit = _unwritable(k, path + (k,)) if isinstance(value, dict) else None
        hit = hit if hit is not None else _unwritable(v, path + (k,))
        if hit is not None:
            return hit
    return None


def revalidate(documents, rel: str) -> tuple[list[Document], list[Diagnostic]]:
    """Every collected object validated again, from its fields.

    `Service.model_construct(...)` or `object.__setattr__` on a frozen model skip validation; a policy
    object is used only when its fields, read back, pass it. The original object is kept when
    validation reads them back unchanged (it remembers the lines of its nested objects).
    """
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    for doc in documents:
        at = doc._source or Source(rel, 1, 1)
        data = None
        try:
            data = _fields(doc)
            again = type(doc).model_validate(data)
            same = _fields(again) == data
        except ValidationError as exc:
            data = data if isinstance(data, dict) else {}
            data.setdefault("kind", type(doc).__name__)
            diags.extend(diagnostics_from_validation(exc, data, lambda loc, value=False: at))
            continue
        except BaseException as exc:  # noqa: BLE001 - a field holds something that cannot be read back
            diags.append(
                Diagnostic("E014", f"a {type(doc).__name__} whose fields cannot be read back ({type(exc).__name__}); "
                           "build policy objects by calling their class", at)
            )
            continue
        unwritable = _unwritable(data)
        if unwritable is not None:
            path, diag = unwritable
            diags.append(replace(diag, source=at, subject=doc.subject, path=format_path(path)))
            continue
        if same:
            docs.append(doc)
        else:
            again._source = doc._source
            docs.append(again)
    return docs, diags


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
