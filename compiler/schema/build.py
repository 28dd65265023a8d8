"""The policy models -> one JSON Schema (draft-07) of a policy document.

Walks the pydantic models' fields and type annotations (not pydantic's own JSON Schema output, which has
no schema for the language's text value types and would change shape with pydantic releases): every
model is a definition with `additionalProperties: false` (the models forbid unknown fields), its fields'
attribute docstrings as descriptions, Literals as enums, Field constraints as minimum/maximum/pattern,
defaults as meshc applies them. The document's `kind` picks the definition (`if`/`then` per kind), so
an editor reports errors of the kind written rather than of every kind at once.
"""

from __future__ import annotations

import types as pytypes
import typing
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import AfterValidator, BaseModel, TypeAdapter, WithJsonSchema
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from compiler.policy import models as policy_models
from compiler.policy.match import _OneOf
from compiler.policy.route import RouteRule
from compiler.policy.security import JwtProvider
from compiler.policy.traffic import HashOn
from compiler.schema.docs import class_doc, field_docs
from compiler.schema.values import validator_hint, value_type

DRAFT = "http://json-schema.org/draft-07/schema#"

EXACTLY_ONE: dict[type, tuple[str, ...]] = {
    RouteRule: ("to", "redirect", "respond"),
    JwtProvider: ("jwks", "jwks_file"),
    HashOn: ("header", "cookie", "source_ip"),
}
"""Models whose validator wants exactly one of these fields (besides every `_OneOf`, which lists its own)."""

_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
_BOUNDS = {annotated_types.Ge: ("minimum", "ge"), annotated_types.Le: ("maximum", "le"),
           annotated_types.Gt: ("exclusiveMinimum", "gt"), annotated_types.Lt: ("exclusiveMaximum", "lt")}
_LENGTH = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"), "object": ("minProperties",
                                                                                            "maxProperties")}


def _json_type(schema: dict) -> str | None:
    """The JSON type a schema's values have besides null (for `min_length`: characters or items)."""
    if "type" in schema:
        return schema["type"]
    kinds = {_json_type(arm) for arm in schema.get("anyOf", []) if arm.get("type") != "null"}
    return kinds.pop() if len(kinds) == 1 else None


def _constrain(schema: dict, key: str, value: Any) -> None:
    """Add one keyword; a second, different value of it (a pattern on a pattern) goes into `allOf`."""
    if key == "description":
        schema.setdefault("description", value)
    elif key not in schema or schema[key] == value:
        schema[key] = value
    elif {key: value} not in schema.get("allOf", []):
        schema.setdefault("allOf", []).append({key: value})


class SchemaBuilder:
    def __init__(self) -> None:
        self.definitions: dict[str, dict] = {}
        self._classes: dict[str, type] = {}

    # -- types --------------------------------------------------------------
    def of(self, tp: Any) -> dict:
        """The schema of a type annotation."""
        origin = get_origin(tp)
        if origin is Annotated:
            base, *metadata = get_args(tp)
            schema = self.of(base)
            for item in metadata:
                self._apply(schema, item)
            return schema
        if origin in (typing.Union, pytypes.UnionType):
            arms = [self.of(arm) for arm in get_args(tp)]
            return arms[0] if len(arms) == 1 else {"anyOf": arms}
        if origin is Literal:
            values = list(get_args(tp))
            schema: dict = {"const": values[0]} if len(values) == 1 else {"enum": values}
            kinds = {_SCALARS[type(v)] for v in values}
            if len(kinds) == 1:
                schema = {"type": kinds.pop(), **schema}
            return schema
        if origin in (list, tuple):
            return {"type": "array", "items": self.of(get_args(tp)[0])}
        if origin is dict:
            key, value = get_args(tp)
            names = {k: v for k, v in self.of(key).items() if k not in ("type", "description")}
            schema = {"type": "object"}
            if names:
                schema["propertyNames"] = names
            schema["additionalProperties"] = self.of(value)
            return schema
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return {"$ref": f"#/definitions/{self.model(tp)}"}
        known = value_type(tp)
        if known is not None:
            return known
        if tp in _SCALARS:
            return {"type": _SCALARS[tp]}
        raise TypeError(f"no JSON Schema for the policy type {tp!r}")  # a new kind of type: teach this module

    def _apply(self, schema: dict, item: Any) -> None:
        """Add what one piece of `Annotated` metadata says."""
        if isinstance(item, FieldInfo):
            for inner in item.metadata:
                self._apply(schema, inner)
            if item.description:
                _constrain(schema, "description", item.description)
                if any(getattr(inner, "pattern", None) for inner in item.metadata):
                    _constrain(schema, "patternErrorMessage", _expected(item.description))
            if isinstance(item.json_schema_extra, dict):
                for key, value in item.json_schema_extra.items():
                    _constrain(schema, key, value)
            return
        if isinstance(item, AfterValidator):
            hint = validator_hint(item.func)
            if "pattern" in schema and hint.get("pattern", schema["pattern"]) != schema["pattern"]:
                # a second pattern, with its own message: both go into allOf together
                extra = {k: hint.pop(k) for k in ("pattern", "patternErrorMessage") if k in hint}
                schema.setdefault("allOf", []).append(extra)
            for key, value in hint.items():
                _constrain(schema, key, value)
            return
        if isinstance(item, WithJsonSchema) and item.json_schema is not None:  # Percentage says its own schema
            schema.clear()
            schema.update(item.json_schema)
            return
        replaced = value_type(item)  # IPAddress is `Annotated[str, _IP]`
        if replaced is not None:
            schema.clear()
            schema.update(replaced)
            return
        for cls, (key, attr) in _BOUNDS.items():
            if isinstance(item, cls):
                _constrain(schema, key, getattr(item, attr))
                return
        if isinstance(item, (annotated_types.MinLen, annotated_types.MaxLen)):
            low, high = _LENGTH.get(_json_type(schema) or "", (None, None))
            key = low if isinstance(item, annotated_types.MinLen) else high
            if key:
                value = item.min_length if isinstance(item, annotated_types.MinLen) else item.max_length
                _constrain(schema, key, value)
            return
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            _constrain(schema, "pattern", pattern)
        # anything else (strict, frozen...) says nothing a JSON Schema can check

    # -- models -------------------------------------------------------------
    def model(self, cls: type[BaseModel]) -> str:
        """The definition's name of a model, built once."""
        name = cls.__name__
        if name in self._classes:
            if self._classes[name] is not cls:
                raise TypeError(f"two policy models are called {name}: {self._classes[name]} and {cls}")
            return name
        self._classes[name] = cls
        self.definitions[name] = {}  # placeholder: a model may (indirectly) contain itself
        docs = field_docs(cls)
        properties: dict[str, dict] = {}
        required: list[str] = []
        for field_name, info in cls.model_fields.items():
            key = info.alias or field_name
            schema = self.field(info, docs.get(field_name), is_kind=field_name == "kind")
            properties[key] = schema
            if info.is_required():
                required.append(key)
        schema: dict = {"title": name, "type": "object"}
        doc = class_doc(cls)
        if doc:
            schema["description"] = doc
        schema["properties"] = properties
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        choices = EXACTLY_ONE.get(cls)
        if choices is None and issubclass(cls, _OneOf):
            choices = cls.__private_attributes__["_choices"].default
        if choices:
            schema["oneOf"] = [
                {"required": [c], "properties": {c: {"not": {"type": "null"}}}} for c in choices
            ]
            schema["description"] = (schema.get("description", "") + f"\n\nGive exactly one of: "
                                     f"{', '.join(f'`{c}`' for c in choices)}.").lstrip()
        self.definitions[name] = schema
        return name

    def field(self, info: FieldInfo, doc: str | None, is_kind: bool = False) -> dict:
        """A model field's schema: its type and constraints, description and default.

        The description is the field's docstring, else its `Field(description=...)` or its type's (a Name
        says what a name may hold); a field of a model type also shows the model's own description.
        """
        typed = self.of(info.annotation)
        for item in info.metadata:
            self._apply(typed, item)
        if info.description and "pattern" in typed:  # a Name, or a field's Field(pattern=..., description=...)
            _constrain(typed, "patternErrorMessage", _expected(info.description))
        of_type = [typed.pop("description", None)] + [arm.pop("description", None) for arm in typed.get("anyOf", [])]
        described = doc or info.description or next((d for d in of_type if d), None)
        if is_kind:
            described = f"The kind of this document: `{typed['const']}`."
        schema: dict = {}
        if described:
            schema["description"] = described
        default = _default(info)
        if default is not PydanticUndefined and default is not None and not is_kind:
            schema["default"] = default
        if "$ref" in typed and len(typed) > 1:  # draft-07 ignores a $ref's siblings: keep constraints apart
            typed = {"allOf": [{"$ref": typed.pop("$ref")}], **typed}
        schema.update(typed)
        return schema


def _expected(description: str) -> str:
    """A type's description as the message an editor shows when its pattern fails: "Expected a DNS label..."."""
    first, _, rest = description.partition(" ")
    return f"Expected {first.lower()} {rest}" if first in ("A", "An") else description[:1].upper() + description[1:]


def _default(info: FieldInfo) -> Any:
    """The default as a policy would write it (JSON), or PydanticUndefined for a required field."""
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return PydanticUndefined
    else:
        value = info.default
    if value is None:
        return None
    return TypeAdapter(info.annotation).dump_python(value, mode="json", by_alias=True, exclude_none=True)


def document_schema() -> dict:
    """The JSON Schema of one policy document: any kind, chosen by `kind`."""
    builder = SchemaBuilder()
    kinds = policy_models.KINDS
    classes = {cls.model_fields["kind"].default: cls for cls in get_args(get_args(policy_models.PolicyDocument)[0])}
    assert sorted(classes) == sorted(kinds), (classes, kinds)
    branches = []
    for kind in kinds:
        ref = builder.model(classes[kind])
        branches.append({
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": {"$ref": f"#/definitions/{ref}"},
        })
    return _with_markdown({
        "$schema": DRAFT,
        "$comment": "Generated by `meshc schema` from the policy models (compiler/policy); do not edit by hand.",
        "title": "meshc policy document",
        "description": "One document of a meshc policy file (a file holds several, separated by `---`); "
        "`kind` says which: " + ", ".join(kinds) + ".",
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"description": "What this document declares.", "type": "string", "enum": list(kinds)},
        },
        "allOf": branches,
        "definitions": {name: builder.definitions[name] for name in sorted(builder.definitions)},
    })


def _with_markdown(node: Any, names: bool = False) -> Any:
    """Every description also as `markdownDescription`: the docs are Markdown (`code`, lists), which
    yaml-language-server and VS Code render on hover only from that keyword (a plain one is escaped).
    `names`: `node` maps property names to schemas (a field may be called `default`)."""
    if isinstance(node, list):
        return [_with_markdown(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        literal = not names and key in ("default", "const", "enum")
        out[key] = value if literal else _with_markdown(value, names=not names and key in ("properties", "definitions"))
        if not names and key == "description" and isinstance(value, str):
            out["markdownDescription"] = value
    return out
