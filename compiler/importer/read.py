"""Istio and Kubernetes YAML -> resources that remember where each field was written.

Reuses the policy loader's YAML reading (compiler/load/yaml_source.py): every field path keeps its
file:line, so what cannot be imported is reported where it was written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compiler.diagnostics import Source
from compiler.load.yaml_source import RawDocument, parse_yaml

ISTIO_GROUPS = ("networking.istio.io", "security.istio.io")
ISTIO_VERSIONS = ("v1alpha3", "v1beta1", "v1")
ISTIO_KINDS = (
    "VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication",
    "Gateway", "ServiceEntry", "Sidecar",
)
KUBERNETES_KINDS = ("Service", "Deployment")


@dataclass
class Resource:
    """One Istio or Kubernetes resource and the positions of its fields."""

    kind: str
    name: str
    namespace: str
    data: dict
    raw: RawDocument
    file: str

    @property
    def spec(self) -> dict:
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}

    def at(self, *path) -> Source:
        """Where `path` (below the document's root) was written, else its nearest written parent."""
        path = tuple(path)
        while path:
            for table in (self.raw.positions, self.raw.values):
                if path in table:
                    return table[path]
            path = path[:-1]
        return self.raw.source

    def where(self, *path) -> str:
        src = self.at(*path)
        return f"{src.file}:{src.line}"

    @property
    def title(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class Problem:
    """Something of the input that the import did not carry over (or carried over with a caveat)."""

    source: Source
    message: str

    def __str__(self) -> str:
        return f"{self.source.file}:{self.source.line}:{self.source.column}: {self.message}"


def read_files(paths: list[Path]) -> tuple[list[Resource], list[Problem], list[Problem]]:
    """Every document of every file, in file then document order; other Istio kinds are problems, other
    Kubernetes kinds notes (both skipped)."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    notes: list[Problem] = []
    for path, name in zip(paths, _names(paths)):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(Source(name, 1, 1), f"cannot read this file: {exc}"))
            continue
        docs, errors = parse_yaml(text, name)
        problems.extend(Problem(d.source or Source(name, 1, 1), d.message) for d in errors)
        for doc in docs:
            res = _resource(doc, name, problems, notes)
            if res is not None:
                resources.append(res)
    return resources, problems, notes


def _names(paths: list[Path]) -> list[str]:
    """Each file's name as messages and comments show it: relative to the folder they share (no machine paths)."""
    absolute = [p.resolve() for p in paths]
    if len(paths) == 1:
        return [paths[0].name]
    common = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    return [p.relative_to(common).as_posix() for p in absolute]


def _resource(doc: RawDocument, file: str, problems: list[Problem], notes: list[Problem]) -> Resource | None:
    data = doc.data
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(Problem(doc.source, "not a Kubernetes resource (a mapping with kind and apiVersion)"))
        return None
    kind, api = data.get("kind"), str(data.get("apiVersion", ""))
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    res = Resource(str(kind), str(meta.get("name", "")), str(meta.get("namespace") or "default"), data, doc, file)
    group, _, version = api.rpartition("/")
    if kind in ISTIO_KINDS and group in ISTIO_GROUPS:
        if version not in ISTIO_VERSIONS:
            problems.append(Problem(res.at("apiVersion"), f"{api}: only {', '.join(ISTIO_VERSIONS)} are read"))
            return None
        return res
    if kind in KUBERNETES_KINDS and api in ("v1", "apps/v1"):
        return res
    if group not in ISTIO_GROUPS and not group.endswith(".istio.io"):  # a ServiceAccount, a ConfigMap...: not policy
        notes.append(Problem(res.at("kind"), f"{kind} ({api or 'no apiVersion'}): skipped (not a policy; meshc "
                                             "writes the Kubernetes objects its sidecars need)"))
        return None
    problems.append(Problem(res.at("kind"), f"{kind} ({api or 'no apiVersion'}): not an Istio or Kubernetes kind "
                                            "the import reads; skipped"))
    return None
