"""pydantic validation errors -> diagnostics that point into the policy file.

pydantic reports a `loc` per error; for the tagged union of kinds it starts
with the tag (`('Service', 'port')`). We strip that, find the position of the
path (or its nearest ancestor) and, for unknown fields, suggest the closest
known field of the model at that path.
"""

from __future__ import annotations

import re
import typing
from types import UnionType
from typing import Annotated, Any, Callable, get_args, get_origin

from pydantic import BaseModel, ValidationError

from compiler.diagnostics import Diagnostic, Source, did_you_mean, format_path
from compiler.policy import models, observability, route, security, traffic
from compiler.policy.base import PolicyModel
from compiler.policy.models import KINDS
from compiler.policy.types import _NAME_RE

# every model of the language by name: Python policy files construct nested ones (Version, RouteRule...) directly
MODELS: dict[str, type[BaseModel]] = {
    name: obj
    for module in (models, observability, route, security, traffic)
    for name, obj in vars(module).items()
    if isinstance(obj, type) and issubclass(obj, PolicyModel) and obj.__module__ == module.__name__
}


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (typing.Union, UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return _unwrap(inner[0])
    return tp


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that the last element of `loc` is a field of."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def subject_of(data: Any) -> str:
    if isinstance(data, dict):
        kind = data.get("kind")
        ident = data.get("name") or data.get("service")
        if isinstance(kind, str) and isinstance(ident, str):
            return f"{kind} '{ident}'"
        if isinstance(kind, str):
            return kind
    return ""


def diagnostics_from_validation(
    exc: ValidationError, data: Any, where: Callable[..., Source | None]
) -> list[Diagnostic]:
    """Turn one document's ValidationError into diagnostics, one per error.

    `where(loc)` is the position that names `loc` (its key); `where(loc, value=True)`
    the position of its value, for errors about the value.
    """
    kind = given = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str):  # `kind: [Mesh]` is no kind (and a list cannot be looked up)
        kind = None if kind is None else show(kind)
    named = f"'{kind}'" if isinstance(given, str) else f"{kind} (a {type(given).__name__}, not a name)"
    subject = subject_of(data)
    out: list[Diagnostic] = []
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if loc and kind in KINDS and loc[0] == kind:
            loc = loc[1:]
        errors.append((loc, err))
    # A misspelt field also makes the real one "missing"; the unknown-field
    # error already says "did you mean", so the missing one is only noise.
    suggested: set[tuple] = set()
    for loc, err in errors:
        if err["type"] == "extra_forbidden" and loc:
            suggestion = _suggest(kind, loc)
            if suggestion:
                suggested.add(loc[:-1] + (suggestion,))
    errors = _without_union_tags(kind, errors)
    for loc, err in errors:
        etype = err["type"]
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if etype == "union_tag_invalid":
            out.append(
                Diagnostic(
                    "E101",
                    f"unknown kind {named}{did_you_mean(kind, KINDS)}; expected one of {', '.join(KINDS)}",
                    where(("kind",), value=True),
                    "",
                    "kind",
                )
            )
            continue
        if etype in ("union_tag_not_found", "model_attributes_type", "model_type") and not loc:
            out.append(
                Diagnostic(
                    "E101",
                    f"every document needs a 'kind' field; expected one of {', '.join(KINDS)}",
                    where(()),
                )
            )
            continue
        path = format_path(loc)
        if etype == "extra_forbidden":
            known = _known_fields(kind, loc)
            hint = ""
            refused = _refused(kind, loc)
            if refused:
                hint = f" here: {refused}"  # a field the model leaves out on purpose (VersionTraffic.REFUSED)
            elif known is not None:
                hint = did_you_mean(loc[-1], known) or f" (known: {', '.join(known)})"
            out.append(Diagnostic("E102", f"unknown field '{loc[-1]}'{hint}", where(loc), subject, path))
        elif etype == "missing":
            if loc not in suggested:
                out.append(Diagnostic("E103", "required field is missing", where(loc), subject, path))
        else:
            is_key = bool(loc) and loc[-1] == "[key]"  # pydantic's marker for a bad mapping key (a version name)
            if is_key:
                loc = loc[:-1]
                path = format_path(loc)
            out.append(Diagnostic("E104", _describe(etype, msg, err), where(loc, value=not is_key), subject, path))
    return out


def _union_tags(model: type[BaseModel], loc: tuple) -> list[int]:
    """Positions in `loc` where pydantic names the member of a union it tried (`Metrics`, `literal[False]`)."""
    tags: list[int] = []
    tp: Any = model
    i = 0
    while i < len(loc):
        while get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        if get_origin(tp) in (typing.Union, UnionType):
            arms = [a for a in get_args(tp) if a is not type(None)]
            if len(arms) == 1:
                tp = arms[0]
                continue
            tags.append(i)
            tag = str(loc[i])
            tp = next((a for a in map(_unwrap, arms) if isinstance(a, type) and re.search(rf"\b{a.__name__}\b", tag)), None)
            i += 1
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if loc[i] in (n, f.alias)), None)
            if field is None:
                break
            tp = field.annotation
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            break
        i += 1
    return tags


def _without_union_tags(kind: Any, errors: list[tuple[tuple, dict]]) -> list[tuple[tuple, dict]]:
    """One value of a union type fails every member; report it as the member it was meant for.

    `metrics: {port: 0}` fails as `Metrics` (port out of range) and as `literal[False]`; the
    literal's "Input should be False" is noise when another member has something to say.
    The member names are dropped from the path.
    """
    if kind not in MODELS:
        return errors
    tagged = [(loc, err, _union_tags(MODELS[kind], loc)) for loc, err in errors]
    members: dict[tuple, set] = {}
    for loc, _, tags in tagged:
        for t in tags:
            members.setdefault(loc[:t], set()).add(loc[t])
    out = []
    for loc, err, tags in tagged:
        if any(str(loc[t]).startswith("literal[") and len(members[loc[:t]]) > 1 for t in tags):
            continue
        out.append((tuple(part for i, part in enumerate(loc) if i not in tags), err))
    return out


def _known_fields(kind: Any, loc: tuple) -> list[str] | None:
    model = _model_at(MODELS[kind], loc[:-1]) if kind in MODELS else None
    return sorted(model.model_fields) if model is not None else None


def _refused(kind: Any, loc: tuple) -> str | None:
    """Why the model at `loc` has no field `loc[-1]`, when it says (a `REFUSED` mapping: field -> reason)."""
    model = _model_at(MODELS[kind], loc[:-1]) if kind in MODELS else None
    return getattr(model, "REFUSED", {}).get(loc[-1]) if model is not None else None


def _suggest(kind: Any, loc: tuple) -> str | None:
    import difflib

    known = _known_fields(kind, loc)
    close = difflib.get_close_matches(str(loc[-1]), known or [], n=1, cutoff=0.6)
    return close[0] if close else None


_NUMBER_TYPES = {"int_type": int, "float_type": float}


def _describe(etype: str, msg: str, err: dict) -> str:
    value = err.get("input")
    if etype == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == _NAME_RE.pattern:
        return (
            f"invalid name {show(value)}: names become file paths and Envoy names, so use lowercase letters, "
            "digits and '-', starting with a letter (at most 63 characters)"
        )
    if etype == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == "^/":
        return f"a path must start with '/' (got {show(value)})"
    if etype in _NUMBER_TYPES and isinstance(value, str):
        try:
            _NUMBER_TYPES[etype](value)
        except ValueError:
            pass
        else:
            return f"{msg}, not the string {show(value)} (write the number without quotes)"
    if "input" in err and not isinstance(value, (dict, list)):
        shown = show(value)
        if shown not in msg:
            return f"{msg} (got {shown})"
    return msg


def show(value: Any) -> str:
    """`repr(value)`, for any value a Python policy can pass (Python will not print an int of 5,000 digits;
    a policy's own class can fail in `__repr__`)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value).bit_length() > 4000:
        return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    try:
        return repr(value)
    except BaseException:  # noqa: BLE001 - user code
        return f"a {type(value).__name__} that cannot be printed"
