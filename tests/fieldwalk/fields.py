"""Every field of every policy model, found in the pydantic models themselves.

`fields()` starts at the document kinds of `PolicyDocument` and follows each
field's annotation into nested models: optional values, list items, dict
values and union members. A field is named by its path from its document,
e.g. `Route.rules[].match.headers[].exact`; a model reached from two places
(a HeaderMatch in a route match and in a fault) is walked at both, because
each place is lowered by different code.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from pydantic import TypeAdapter
from pydantic.fields import FieldInfo

from compiler.policy import PolicyDocument
from compiler.policy.base import Document, PolicyModel

ADAPTER: TypeAdapter = TypeAdapter(PolicyDocument)
DOCUMENT_KINDS: tuple[type[Document], ...] = typing.get_args(typing.get_args(PolicyDocument)[0])


@dataclass(frozen=True)
class Hop:
    """One step from a document down to a nested model: the field, and the model found in its value."""

    attr: str
    key: str  # the field's name in YAML (its alias, e.g. `from`)
    model: type


@dataclass(frozen=True)
class FieldSpec:
    path: str  # Route.rules[].match.headers[].exact
    document: type[Document]
    hops: tuple[Hop, ...]  # document -> ... -> owner
    owner: type[PolicyModel]
    name: str
    key: str
    info: FieldInfo

    @property
    def annotation(self) -> Any:
        return self.info.annotation


def _strip(ann: Any) -> tuple[Any, list]:
    """`Annotated[T, ...]` -> (T, metadata)."""
    meta: list = []
    while typing.get_origin(ann) is typing.Annotated:
        args = typing.get_args(ann)
        ann, meta = args[0], meta + list(args[1:])
    return ann, meta


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (Union, types.UnionType)


def _models(ann: Any) -> list[tuple[type, str]]:
    """Policy models inside an annotation, each with how it is held: '' (the value), '[]' (list item), '{}' (dict value)."""
    ann, _ = _strip(ann)
    if isinstance(ann, type) and issubclass(ann, PolicyModel):
        return [(ann, "")]
    origin = typing.get_origin(ann)
    if origin is list or origin is tuple:
        return [(m, "[]") for m, _ in _models(typing.get_args(ann)[0])]
    if origin is dict:
        return [(m, "{}") for m, _ in _models(typing.get_args(ann)[1])]
    out: list[tuple[type, str]] = []
    for arg in typing.get_args(ann):
        out.extend(_models(arg))
    return out


def fields() -> list[FieldSpec]:
    """Every field of every policy model, by its path from a document kind."""
    out: list[FieldSpec] = []

    def walk(doc: type[Document], model: type[PolicyModel], prefix: str, hops: tuple[Hop, ...], seen: frozenset):
        for name, info in model.model_fields.items():
            key = info.alias or name
            path = f"{prefix}.{name}"
            out.append(FieldSpec(path, doc, hops, model, name, key, info))
            inner = _models(info.annotation)
            for sub, holder in inner:
                if sub in seen:  # a recursive model would be walked once
                    continue
                label = path + holder + (f"<{sub.__name__}>" if len(inner) > 1 else "")
                walk(doc, sub, label, hops + (Hop(name, key, sub),), seen | {sub})

    for doc in DOCUMENT_KINDS:
        walk(doc, doc, doc.__name__, (), frozenset({doc}))
    return out

