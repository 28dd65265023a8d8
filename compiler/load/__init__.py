"""Stage 1, load: policy files -> typed policy models with source positions.

`load(policy_dir)` reads every `*.yaml`, `*.yml` and `*.py` below the
directory (sorted by path, so file order never changes the result) and
returns a `PolicySet` plus diagnostics. It knows nothing about Envoy.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from compiler.diagnostics import Diagnostic, Source
from compiler.load.python_source import load_python
from compiler.load.typing_errors import diagnostics_from_validation
from compiler.load.yaml_source import parse_yaml
from compiler.policy import PolicyDocument, PolicySet
from compiler.policy.base import Document

MAX_FILE_BYTES = 8 * 1024 * 1024
_ADAPTER: TypeAdapter = TypeAdapter(PolicyDocument)
_SUFFIXES = (".yaml", ".yml", ".py")


@dataclass(frozen=True)
class LoadResult:
    policy: PolicySet
    diagnostics: list[Diagnostic]
    files: tuple[str, ...] = ()
    """The policy files read, relative to the policy directory, in load order."""


def policy_files(policy_dir: Path) -> list[Path]:
    files = []
    for path in policy_dir.rglob("*"):
        rel_parts = path.relative_to(policy_dir).parts
        if any(p.startswith((".", "_")) for p in rel_parts):
            continue
        # not only regular files: a broken link or a FIFO named *.yaml is reported (E013), not skipped silently
        if path.suffix in _SUFFIXES and not path.is_dir():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(policy_dir).as_posix())


def load(policy_dir: Path) -> LoadResult:
    policy_dir = Path(policy_dir)
    if not policy_dir.is_dir():
        problem = "is not a directory" if policy_dir.exists() else "does not exist"
        return LoadResult(PolicySet(()), [Diagnostic("E000", f"policy directory '{policy_dir}' {problem}")])
    files = policy_files(policy_dir)
    if not files:
        return LoadResult(
            PolicySet(()),
            [Diagnostic("E000", f"no policy files (*.yaml, *.yml, *.py) in '{policy_dir}'")],
        )
    documents: list[Document] = []
    diags: list[Diagnostic] = []
    for path in files:
        rel = path.relative_to(policy_dir).as_posix()
        unreadable = _unreadable(path, rel)
        if unreadable is not None:
            docs, errs = [], [unreadable]
        elif path.suffix == ".py":
            docs, errs = load_python(path, rel)
        else:
            docs, errs = _load_yaml_file(path, rel)
        documents.extend(docs)
        diags.extend(errs)
    return LoadResult(PolicySet(tuple(documents)), diags, tuple(p.relative_to(policy_dir).as_posix() for p in files))


def _unreadable(path: Path, rel: str) -> Diagnostic | None:
    """E013 for a policy file that cannot be read as one: missing (a broken link), not a regular file, too large."""
    try:
        st = path.stat()
    except OSError as exc:
        return Diagnostic("E013", f"cannot read this file: {exc.strerror or type(exc).__name__}", Source(rel, 1, 1))
    if not stat.S_ISREG(st.st_mode):
        return Diagnostic("E013", "not a regular file (a policy file must be a file)", Source(rel, 1, 1))
    if st.st_size > MAX_FILE_BYTES:
        return Diagnostic("E013", f"file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB", Source(rel, 1, 1))
    return None


def _load_yaml_file(path: Path, rel: str) -> tuple[list[Document], list[Diagnostic]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [Diagnostic("E013", f"cannot read this file: {exc.strerror or type(exc).__name__}", Source(rel, 1, 1))]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[data.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", "replace")) + 1
        return [], [Diagnostic("E001", f"not UTF-8 text: {exc.reason} (byte 0x{data[exc.start]:02x})", Source(rel, line, column))]
    raw_docs, diags = parse_yaml(text, rel)
    documents: list[Document] = []
    for raw in raw_docs:
        def where(loc: tuple, value: bool = False, raw=raw) -> Source:
            """Where `loc` is named (its key), or with `value` where its value starts."""
            if value and loc in raw.values:
                return raw.values[loc]
            parts = loc
            while parts:
                if parts in raw.positions:
                    return raw.positions[parts]
                parts = parts[:-1]
            return raw.source

        if not isinstance(raw.data, dict):
            diags.append(Diagnostic("E101", "a policy document must be a mapping with a 'kind' field", raw.source))
            continue
        try:
            doc = _ADAPTER.validate_python(raw.data)
        except ValidationError as exc:
            diags.extend(diagnostics_from_validation(exc, raw.data, where))
            continue
        doc.attach_source(raw.source, raw.positions)
        documents.append(doc)
    return documents, diags
