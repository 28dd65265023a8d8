"""Base policies, their builds, and the places where a field's model occurs in them.

A base is a policy directory (an example case, or one of fieldwalk/bases/)
loaded once and built once, in memory. `sparse()` writes a model back the
way it was written (only the fields that were given), so a mutated base is
the YAML with one value changed, not the YAML with every default spelt out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.check import check
from compiler.emit import emit
from compiler.kubernetes import manifests
from compiler.load import load
from compiler.lower import lower
from compiler.policy import PolicySet
from compiler.policy.base import Document, PolicyModel
from compiler.policy.types import Duration, Endpoint
from compiler.render import render
from fieldwalk.fields import FieldSpec


@dataclass
class Base:
    """A loaded policy directory and its build (all files), built once."""

    name: str
    policy: PolicySet
    files: dict[str, bytes]


@dataclass(frozen=True)
class Location:
    base: Base
    doc_index: int
    steps: tuple  # from the document down to the owner: ("field", attr, key) or ("item", index or key)
    owner: PolicyModel

    @property
    def document(self) -> Document:
        return self.base.policy.documents[self.doc_index]

    def describe(self, spec: FieldSpec) -> str:
        where = "".join(f".{s[2]}" if s[0] == "field" else f"[{s[1]!r}]" for s in self.steps)
        return f"{self.base.name}: {self.document.subject}{where}.{spec.key}"


def build_files(policy: PolicySet):
    """check -> lower -> emit -> render -> Kubernetes manifests, in memory: (files, None) or (None, diagnostics)
    when refused. The manifests count: fields such as a gateway's `replicas` change only them."""
    diags = check(policy)
    errors = [d for d in diags if d.is_error]
    if errors:
        return None, errors
    ir = lower(policy)
    files = render(emit(ir))
    kubernetes, problems = manifests(ir, files)
    if problems:
        return None, problems
    return {**files, **kubernetes, **analysis_warnings(diags)}, None


ANALYSIS_WARNINGS = "(analysis warnings)"
"""A pseudo-file of the build: the resilience analysis warnings (W6xx) meshc prints. Mesh `analysis` changes
only them, and they are output the user reads; other warnings are not counted (a field must change the
configuration)."""


def analysis_warnings(diags) -> dict[str, bytes]:
    found = sorted(d.render() for d in diags if d.code.startswith("W6"))
    return {ANALYSIS_WARNINGS: "\n".join(found).encode()} if found else {}


def load_base(name: str, directory: Path) -> Base:
    loaded = load(directory)
    errors = [d.render() for d in loaded.diagnostics if d.is_error]
    assert not errors, f"base {name} does not load: {errors}"
    files, diags = build_files(loaded.policy)
    assert files is not None, f"base {name} does not build: {[d.render() for d in diags]}"
    return Base(name, loaded.policy, files)


def _items(value: Any):
    """(steps, item) for a field value: the value itself, list items, or dict values."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield (("item", i),), item
    elif isinstance(value, dict):
        for k, item in value.items():
            yield (("item", k),), item
    else:
        yield (), value


def locations(spec: FieldSpec, bases: list[Base]) -> list[Location]:
    """Every object of the field's model in the bases, explicitly written ones first."""
    found: list[Location] = []
    for base in bases:
        for index, doc in enumerate(base.policy.documents):
            if not isinstance(doc, spec.document):
                continue
            current: list[tuple[tuple, Any]] = [((), doc)]
            for hop in spec.hops:
                current = [
                    (steps + (("field", hop.attr, hop.key),) + suffix, item)
                    for steps, obj in current
                    for suffix, item in _items(getattr(obj, hop.attr))
                    if isinstance(item, hop.model)
                ]
            found.extend(Location(base, index, steps, obj) for steps, obj in current)
    explicit = [loc for loc in found if spec.name in loc.owner.model_fields_set]
    return explicit + [loc for loc in found if spec.name not in loc.owner.model_fields_set]


def sparse(value: Any) -> Any:
    """A value as it would be written: models with only the fields that were given (so a check that asks
    whether a field was written sees the same as with the YAML), durations and endpoints as text."""
    if isinstance(value, PolicyModel):
        return value.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(value, (list, tuple)):
        return [sparse(v) for v in value]
    if isinstance(value, dict):
        return {k: sparse(v) for k, v in value.items()}
    if isinstance(value, (Duration, Endpoint)):
        return str(value)
    return value
