"""Other valid values for a field, derived from its type.

ints moved by one within their bounds, bools flipped, another Literal option,
durations doubled and halved, endpoints and addresses moved, strings changed,
names renamed (consistently across the whole policy, and not), optional
values switched on (with a value seen elsewhere in the bases) or off, list
and dict items added, dropped and changed. The pydantic models then decide
which of them are valid: an invalid candidate is skipped, never counted.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic.fields import FieldInfo

from compiler.policy.base import PolicyModel
from compiler.policy.types import _IP, _NAME_RE, Duration, Endpoint
from fieldwalk.fields import DOCUMENT_KINDS, FieldSpec, _is_union, _strip
from fieldwalk.places import Base, Location, locations, sparse


@dataclass(frozen=True)
class Candidate:
    """Another value for the field (as written in YAML), or a change of the whole policy."""

    label: str
    value: Any = None
    clear: tuple[str, ...] = ()  # sibling fields set to null with it (one-of models)
    whole: Callable[[list[dict]], list[dict] | None] | None = None  # edits every document's data


def _is_name(meta: list) -> bool:
    return any(getattr(m, "pattern", None) == _NAME_RE.pattern for m in _metadata(meta))


def _is_ip(meta: list) -> bool:
    return any(m is _IP for m in _metadata(meta))


def _metadata(meta: list) -> list:
    """Flatten FieldInfo objects in Annotated metadata into their constraint objects."""
    out: list = []
    for m in meta:
        if isinstance(m, FieldInfo):
            out.extend(m.metadata)
        else:
            out.append(m)
    return out


def _bounds(meta: list) -> tuple[int | None, int | None]:
    lo = hi = None
    for m in _metadata(meta):
        lo = getattr(m, "ge", lo) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", hi) if getattr(m, "le", None) is not None else hi
    return lo, hi


def _other_ip(address: str) -> str:
    if address in ("0.0.0.0", "::"):  # every interface: the other family's, so it stays every interface
        return "::" if address == "0.0.0.0" else "0.0.0.0"
    if ":" in address:
        return "::2" if address != "::2" else "::3"
    parts = address.split(".")
    parts[-1] = str((int(parts[-1]) + 1) % 250 + 1)
    return ".".join(parts)


def rename_everywhere(old: str, new: str) -> Callable[[list[dict]], list[dict]]:
    """Every name (a value typed `Name`, or a mapping key typed `Name`) equal to `old`, in every document,
    becomes `new`: a consistent rename, which leaves other strings that happen to be equal alone."""

    def model_of(data: dict) -> type | None:
        return next((k for k in DOCUMENT_KINDS if k.model_fields["kind"].default == data.get("kind")), None)

    def swap(ann: Any, node: Any, meta: list = ()) -> Any:
        ann, more = _strip(ann)
        meta = list(meta) + more
        if _is_union(ann):
            arms = [a for a in typing.get_args(ann) if _holds(_strip(a)[0], node)]
            return swap(arms[0], node, meta) if arms else node
        if isinstance(ann, type) and issubclass(ann, PolicyModel) and isinstance(node, dict):
            out = dict(node)
            for name, info in ann.model_fields.items():
                key = info.alias or name
                if key in out:
                    out[key] = swap(info.annotation, out[key], info.metadata)
            return out
        if typing.get_origin(ann) is list and isinstance(node, list):
            return [swap(typing.get_args(ann)[0], v) for v in node]
        if typing.get_origin(ann) is dict and isinstance(node, dict):
            key_ann, value_ann = typing.get_args(ann)
            named = _is_name(_strip(key_ann)[1])
            return {(new if named and k == old else k): swap(value_ann, v) for k, v in node.items()}
        if isinstance(node, str) and node == old and _is_name(meta):
            return new
        return node

    return lambda docs: [swap(model_of(d), d) for d in docs]


class Pool:
    """Values seen anywhere in the bases, by (model, field): samples for fields that are unset at a location."""

    def __init__(self, specs: list[FieldSpec], bases: list[Base]):
        self.values: dict[tuple[type, str], list] = {}
        self.instances: dict[type, list] = {}
        for spec in specs:
            for loc in locations(spec, bases):
                seen = self.instances.setdefault(spec.owner, [])
                if sparse(loc.owner) not in seen:
                    seen.append(sparse(loc.owner))
                value = getattr(loc.owner, spec.name)
                if value is None:
                    continue
                dumped = sparse(value)
                bucket = self.values.setdefault((spec.owner, spec.name), [])
                if dumped not in bucket:
                    bucket.append(dumped)

    def of(self, spec: FieldSpec) -> list:
        return list(self.values.get((spec.owner, spec.name), []))


def _sample(ann: Any, meta: list, spec: FieldSpec, pool: Pool) -> list:
    """Valid-looking values of a type, from nothing (the field is unset where it is mutated)."""
    ann, more = _strip(ann)
    meta = meta + more
    if ann is type(None):
        return [None]
    if typing.get_origin(ann) is Literal:
        return list(typing.get_args(ann))
    if ann is bool:
        return [True, False]
    if ann is int:
        lo, hi = _bounds(meta)
        start = lo if lo is not None else 1
        return [start + 1 if hi is None or start + 1 <= hi else start]
    if ann is float:
        return [0.5]  # a fractional percentage (Percentage)
    if ann is Duration:
        return ["1700ms", "2300ms"]  # not a round default anywhere
    if ann is Endpoint:
        return ["127.0.0.1:18001"]
    if isinstance(ann, type) and issubclass(ann, PolicyModel):
        seen = [v for v in pool.of(spec) if isinstance(v, dict)]
        return copy.deepcopy(seen + [v for v in pool.instances.get(ann, []) if v not in seen])
    if typing.get_origin(ann) is list:
        return [[v] for v in _sample(typing.get_args(ann)[0], [], spec, pool)[:1]]
    if typing.get_origin(ann) is dict:
        return [{}]
    if ann is str:
        if _is_ip(meta):
            return ["127.0.0.9"]
        seen = [v for v in pool.of(spec) if isinstance(v, str)]
        return seen + ["/x", "x"]
    return [copy.deepcopy(v) for v in pool.of(spec)]


def _variants(ann: Any, meta: list, current: Any, spec: FieldSpec, pool: Pool) -> list[Candidate]:
    """Other values of type `ann` than `current` (written as in YAML)."""
    ann, more = _strip(ann)
    meta = meta + more
    if _is_union(ann):
        return _union_variants(ann, meta, current, spec, pool)
    if typing.get_origin(ann) is Literal:
        return [Candidate(f"{current!r} -> {o!r}", o) for o in typing.get_args(ann) if o != current]
    if ann is bool:
        return [Candidate(f"{current} -> {not current}", not current)]
    if ann is int:
        lo, hi = _bounds(meta)
        picks = [v for v in (current + 1, current - 1) if (hi is None or v <= hi) and (lo is None or v >= lo)]
        return [Candidate(f"{current} -> {v}", v) for v in picks]
    if ann is float:
        return [Candidate(f"{current} -> {round(current / 2, 4)}", round(current / 2, 4))]
    if ann is Duration:
        ms = Duration.parse(current).ms
        out = [Candidate(f"{current} -> {ms * 2 or 1000}ms", f"{ms * 2 or 1000}ms")]
        if ms >= 2:
            out.append(Candidate(f"{current} -> {ms // 2}ms", f"{ms // 2}ms"))
        return out
    if ann is Endpoint:
        ep = Endpoint.parse(current)
        other = Endpoint(ep.host, ep.port + 1 if ep.port < 65535 else ep.port - 1)
        return [Candidate(f"{ep} -> {other}", str(other))]
    if ann is str:
        return _str_variants(meta, current, spec, pool)
    if typing.get_origin(ann) is list:
        return _list_variants(typing.get_args(ann)[0], current, spec, pool)
    if typing.get_origin(ann) is dict:
        return _dict_variants(typing.get_args(ann)[1], current, spec, pool)
    if isinstance(ann, type) and issubclass(ann, PolicyModel):
        return []  # a model that is there: its own fields are walked one by one
    raise TypeError(f"{spec.path}: no mutation for type {ann!r}; add an override in tests/test_every_field.py")


def _union_variants(ann: Any, meta: list, current: Any, spec: FieldSpec, pool: Pool) -> list[Candidate]:
    """Other values of the member that holds `current`, and values of every other member (null included)."""
    out: list[Candidate] = []
    for arm in typing.get_args(ann):
        arm_type, _ = _strip(arm)
        if _holds(arm_type, current):
            if current is not None:
                out.extend(_variants(arm, meta, current, spec, pool))
        elif arm_type is type(None):
            out.append(Candidate("null", None))
        else:
            out.extend(Candidate(f"set {v!r}", v) for v in _sample(arm, meta, spec, pool))
    return out


def _str_variants(meta: list, current: str, spec: FieldSpec, pool: Pool) -> list[Candidate]:
    if _is_ip(meta):
        return [Candidate(f"{current} -> {_other_ip(current)}", _other_ip(current))]
    out = []
    if _is_name(meta):
        new = (current + "x") if len(current) < 63 else current[:-1] + "x"
        out.append(Candidate(f"rename {current!r} -> {new!r} everywhere", whole=rename_everywhere(current, new)))
    out.append(Candidate(f"{current!r} -> {current + 'x'!r}", current + "x"))
    out.append(Candidate(f"{current!r} -> {current + '/x'!r}", current + "/x"))
    out += [Candidate(f"{current!r} -> {v!r}", v) for v in pool.of(spec) if isinstance(v, str) and v != current]
    return out


def _list_variants(item: Any, current: list, spec: FieldSpec, pool: Pool) -> list[Candidate]:
    """Drop the last item, rename or change it, add a copy of it or an item seen elsewhere, or take another list seen."""
    items = list(current)
    item_type = _strip(item)[0]
    out = []
    if items:
        out.append(Candidate(f"drop item {items[-1]!r}", items[:-1]))
        if _is_name(_strip(item)[1]):
            old = items[-1]
            out.append(Candidate(f"rename {old!r} -> {old + 'x'!r} everywhere", whole=rename_everywhere(old, old + "x")))
        for c in _variants(item, [], items[-1], spec, pool)[:1]:
            if c.whole is None:
                out.append(Candidate(f"last item: {c.label}", items[:-1] + [c.value]))
        if isinstance(items[-1], dict) and isinstance(item_type, type) and issubclass(item_type, PolicyModel):
            twin = copy.deepcopy(items[-1])
            if isinstance(twin.get("name"), str):  # items named by `name` (providers): the twin has its own
                twin["name"] += "2"
            out.append(Candidate("add a copy of the last item", items + [twin]))
    extra = next((v for v in _sample(item, [], spec, pool) if not isinstance(v, list) and v not in items), None)
    if extra is not None:
        out.append(Candidate(f"add item {extra!r}", items + [extra]))
    seen = next((v for v in pool.of(spec) if v != current), None)
    if seen is not None:
        out.append(Candidate(f"-> {seen!r}", seen))
    return out


def _dict_variants(value_ann: Any, current: dict, spec: FieldSpec, pool: Pool) -> list[Candidate]:
    """Drop the last key, rename it, change its value; an empty mapping gets one seen elsewhere (or an item)."""
    mapping = dict(current)
    if not mapping:
        seen = next((v for v in pool.of(spec) if v), None)
        return [Candidate(f"-> {seen!r}", seen)] if seen else [Candidate("add an item", {"x-meshc-walk": "walk"})]
    last = list(mapping)[-1]
    rest = {k: v for k, v in mapping.items() if k != last}
    out = [
        Candidate(f"drop key {last!r}", rest),
        Candidate(f"key {last!r} -> {last + 'x'!r}", {**rest, last + "x": mapping[last]}),
    ]
    for c in _variants(value_ann, [], mapping[last], spec, pool)[:1]:
        if c.whole is None:
            out.append(Candidate(f"value of {last!r}: {c.label}", {**rest, last: c.value}))
    return out


def _holds(arm: Any, value: Any) -> bool:
    """Whether a dumped or model value belongs to a union arm."""
    arm, _ = _strip(arm)
    if arm is type(None):
        return value is None
    if typing.get_origin(arm) is Literal:
        return any(value == o and type(value) is type(o) for o in typing.get_args(arm))
    if isinstance(arm, type) and issubclass(arm, PolicyModel):
        return isinstance(value, (arm, dict))
    if arm in (Duration, Endpoint):
        return isinstance(value, (arm, str))
    origin = typing.get_origin(arm) or arm
    return isinstance(value, origin) and not (origin is int and isinstance(value, bool))


def candidates(spec: FieldSpec, loc: Location, pool: Pool) -> list[Candidate]:
    current = sparse(getattr(loc.owner, spec.name))
    return _variants(spec.annotation, list(spec.info.metadata), current, spec, pool)


def one_of_group(owner: type[PolicyModel], name: str, loc: Location) -> tuple[str, ...]:
    """Siblings that are set where this field is not (a one-of model): cleared when the field is set."""
    return tuple(
        other
        for other, info in owner.model_fields.items()
        if other != name and getattr(loc.owner, other) is not None and _is_union(_strip(info.annotation)[0])
        and type(None) in typing.get_args(_strip(info.annotation)[0])
    )

