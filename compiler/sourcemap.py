"""The source map: from the provenance the output records back to policy lines.

Emitted resources name where they came from by a stable anchor
(`routes.yaml#Route/reviews/rules[1]`, see `Source.anchor`), never by line,
so editing comments or reordering documents rewrites no sidecar file.
`sourcemap.json`, beside `manifest.json` in the output folder, is the one
file that holds the lines:

    {"sources": {"routes.yaml#Route/reviews/rules[1]": "routes.yaml:9:5", ...}}

It is built from the IR (every `Source` any node holds, shared nodes once,
following only the fields whose annotations can lead to a Source), so it names
every anchor the emitters can write, and its keys are sorted.
"""

from __future__ import annotations

import dataclasses
import json
import typing

from compiler.diagnostics import Source
from compiler.ir import MeshIR

SOURCEMAP = "sourcemap.json"


def sources(ir: MeshIR) -> dict[str, Source]:
    """Every Source in the IR, by the provenance string the output records (`Source.short`)."""
    found: dict[str, Source] = {}
    seen: set[int] = set()
    stack: list[object] = [ir]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is Source:
            key = value.short
            if key not in found or value < found[key]:  # one anchor, one place; ties resolved the same way every time
                found[key] = value
        elif kind is tuple or kind is list:
            stack.extend(value)
        else:
            names = _FIELDS.get(kind)
            if names is None:
                names = _FIELDS[kind] = _source_fields(kind)
            if names and id(value) not in seen:  # shared nodes (a dependency's clusters, routes) are walked once
                seen.add(id(value))
                stack.extend(getattr(value, name) for name in names)
    return found


_FIELDS: dict[type, tuple[str, ...]] = {}
"""Per IR class, the fields that can lead to a Source (none for leaves: strings, numbers, durations)."""


def _source_fields(cls: type) -> tuple[str, ...]:
    if not dataclasses.is_dataclass(cls):
        return ()
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve: walk the field anyway
        hints = {}
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in hints or _reaches_source(hints[f.name], set()))


def _reaches_source(tp: object, visiting: set[type]) -> bool:
    """Whether a value of annotation `tp` can hold a Source (in itself, an item or a field, at any depth)."""
    if tp is Source:
        return True
    if typing.get_origin(tp) is typing.Literal:
        return False
    args = typing.get_args(tp)
    if args:  # X | None, tuple[X, ...], Union[...]
        return any(_reaches_source(a, visiting) for a in args if a is not Ellipsis)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp not in visiting:
        visiting.add(tp)
        try:
            hints = typing.get_type_hints(tp)
        except Exception:  # noqa: BLE001 - unknown: assume it may
            return True
        return any(_reaches_source(h, visiting) for h in hints.values())
    return False


def sourcemap_bytes(ir: MeshIR) -> bytes:
    """`sourcemap.json`: anchor -> `file:line:column`, sorted by anchor."""
    entries = {key: str(src) for key, src in sorted(sources(ir).items())}
    return (json.dumps({"sources": entries}, indent=2, ensure_ascii=False) + "\n").encode()
