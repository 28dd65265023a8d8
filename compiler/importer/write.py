"""meshc documents -> policy files: mesh.yaml, one <service>.yaml per service, gateways.yaml, external.yaml.

Deterministic: files sorted by name, documents in a fixed kind order, keys in the order a person writes them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from compiler.importer.model import Doc

_ORDER = ("Mesh", "Service", "Route", "TrafficPolicy", "AuthorizationPolicy", "RequestAuthentication", "Gateway",
          "ExternalService")
HEADER = "# Written by `meshc import istio`: review the comments, then own this file.\n"


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):  # lists indented under their key
        return super().increase_indent(flow, False)


def _flow_leaves(data):
    """Short lists of scalars in flow style (`methods: [GET]`), everything else in block style."""
    if isinstance(data, dict):
        return {k: _flow_leaves(v) for k, v in data.items()}
    if isinstance(data, list):
        if all(not isinstance(x, (dict, list)) for x in data) and len(data) <= 8:
            return _Flow(data)
        return [_flow_leaves(x) for x in data]
    return data


class _Flow(list):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def render_doc(doc: Doc) -> str:
    lines = [f"# {c}" for c in doc.comments]
    text = yaml.dump(_flow_leaves(doc.body), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120,
                     default_flow_style=False)
    return "\n".join(lines + [text.rstrip("\n")]) + "\n"


def render(docs: list[Doc]) -> dict[str, str]:
    """File name -> its text."""
    by_file: dict[str, list[Doc]] = {}
    for doc in docs:
        by_file.setdefault(doc.file, []).append(doc)
    out = {}
    for name in sorted(by_file):
        items = sorted(by_file[name], key=lambda d: _ORDER.index(d.body["kind"]))
        out[name] = HEADER + "---\n".join(render_doc(d) for d in items)
    return out


def write_files(files: dict[str, str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (dest / name).write_text(text, encoding="utf-8")


RECORD = ".meshc-import"
"""Kept in the output folder: each file the import wrote there and its sha256 as written (`sha256sum` format;
a dot file, so policy loading skips it)."""


class Refused(Exception):
    """The output folder has files a re-import must not overwrite or remove: nothing was written."""


def replace_files(files: dict[str, str], dest: Path) -> list[str]:
    """Write an import into `dest` in place of the one written there before: the earlier import's files that
    this one does not write are removed (else `meshc check` would still load a service that is gone).

    Only files the import wrote itself, unchanged since (their sha256 is in the record), are overwritten or
    removed; a file edited since, or one it did not write (no record of it), is never touched: the import is
    then refused as a whole (`Refused`, nothing written). Returns the names of the files removed.
    """
    if dest.exists() and not dest.is_dir():
        raise Refused(f"{dest} is not a folder")
    recorded = _read_record(dest / RECORD)
    blocked = []
    for name, text in sorted(files.items()):
        path = dest / name
        if path.is_file() and _digest_of(path) not in (_digest(text), recorded.get(name)):
            blocked.append(f"{name}: {_why(name, recorded)}; this import would overwrite it")
    stale = sorted(n for n in recorded if n not in files and (dest / n).is_file())
    for name in stale:
        if _digest_of(dest / name) != recorded[name]:
            blocked.append(f"{name}: written by the earlier import and edited since; this import does not write it")
    for path in sorted(dest.glob("*.yaml")) if dest.is_dir() else []:
        if path.name not in files and path.name not in recorded and _has_header(path):
            blocked.append(f"{path.name}: written by an earlier import that kept no record of its files; this "
                           "import does not write it")
    if blocked:
        raise Refused("; ".join(blocked))
    dest.mkdir(parents=True, exist_ok=True)
    write_files(files, dest)
    for name in stale:
        (dest / name).unlink()
    lines = [f"{_digest(text)}  {name}" for name, text in sorted(files.items())]
    (dest / RECORD).write_text("# meshc import istio: the files it wrote here, as it wrote them (sha256); a "
                               "re-import replaces or removes only these, unchanged\n" + "\n".join(lines) + "\n",
                               encoding="utf-8")
    return stale


def _why(name: str, recorded: dict[str, str]) -> str:
    if name in recorded:
        return "edited since the import wrote it"
    return "not written by `meshc import istio` (or by one that kept no record of its files)"


def _read_record(path: Path) -> dict[str, str]:
    """File name -> sha256 as the import wrote it; a name that is not a plain file name of the folder is
    ignored (the record never makes the import touch anything outside it)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name and "/" not in name and "\\" not in name and not name.startswith("."):
            out[name] = digest
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _has_header(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.readline() == HEADER
    except OSError:
        return False
