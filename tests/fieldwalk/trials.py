"""Rebuild a base with one candidate applied, and judge a field by what its candidates did.

A candidate passes when the build's files differ from the base's or the
build is refused with an error that has a position in the policy. A field
takes effect when, at one place, every valid candidate passes (and two
one-of swaps do not give the same files); it is ignored when a valid
candidate builds the very same files.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Literal

from pydantic import ValidationError

from compiler.policy import PolicySet
from compiler.policy.base import Document
from fieldwalk.fields import ADAPTER, FieldSpec, _models
from fieldwalk.places import Base, Location, build_files, sparse
from fieldwalk.values import Candidate, one_of_group

Outcome = Literal["changed", "refused", "unchanged", "invalid", "unpositioned", "crashed"]


@dataclass
class Trial:
    location: str
    candidate: str
    outcome: Outcome
    detail: str = ""
    swapped: bool = False  # set instead of the one-of sibling that was set
    files: dict[str, bytes] | None = field(default=None, repr=False)


def revalidate(originals: tuple[Document, ...], data: list[dict]) -> PolicySet | None:
    docs = []
    for old, raw in zip(originals, data):
        try:
            new = ADAPTER.validate_python(raw)
        except ValidationError:
            return None
        new.attach_source(old.source, dict(old._positions))
        docs.append(new)
    return PolicySet(tuple(docs))


def mutated(spec: FieldSpec, loc: Location, cand: Candidate) -> PolicySet | None:
    """The base with the candidate applied, or None when the models refuse it (not a valid value)."""
    originals = loc.base.policy.documents
    data = [sparse(d) for d in originals]
    if cand.whole is not None:
        edited = cand.whole(data)
        return None if edited is None else revalidate(originals, edited)
    node, obj = data[loc.doc_index], originals[loc.doc_index]
    for step in loc.steps:
        if step[0] == "field":
            obj = getattr(obj, step[1])
            if step[2] not in node:  # left at its default: write the default out
                node[step[2]] = sparse(obj)
            node = node[step[2]]
        else:
            obj, node = obj[step[1]], node[step[1]]
    node[spec.key] = copy.deepcopy(cand.value)
    for other in cand.clear:
        node[spec.owner.model_fields[other].alias or other] = None
    return revalidate(originals, data)


def trial(spec: FieldSpec, loc: Location, cand: Candidate) -> Trial:
    where = loc.describe(spec)
    policy = mutated(spec, loc, cand)
    if policy is None and cand.whole is None and not cand.clear and getattr(loc.owner, spec.name) is None:
        group = one_of_group(spec.owner, spec.name, loc)
        if group:  # a one-of model: set this field instead of the one that is set
            cand = Candidate(f"{cand.label} instead of {', '.join(group)}", cand.value, group)
            policy = mutated(spec, loc, cand)
    if policy is None:
        return Trial(where, cand.label, "invalid")
    result = _run(where, cand, policy, loc.base)
    result.swapped = bool(cand.clear)
    return result


def _run(where: str, cand: Candidate, policy: PolicySet, base: Base) -> Trial:
    try:
        files, errors = build_files(policy)
    except Exception as exc:  # noqa: BLE001 - a crash is a finding, reported with the field
        return Trial(where, cand.label, "crashed", f"{type(exc).__name__}: {exc}")
    if files is None:
        unpositioned = [d for d in errors if d.source is None or d.source.line <= 0]
        if unpositioned:
            return Trial(where, cand.label, "unpositioned", unpositioned[0].render())
        return Trial(where, cand.label, "refused", errors[0].render())
    if files == base.files:
        return Trial(where, cand.label, "unchanged")
    changed = sorted(k for k in set(files) | set(base.files) if files.get(k) != base.files.get(k))
    return Trial(where, cand.label, "changed", ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else ""), files=files)


@dataclass
class Verdict:
    spec: FieldSpec
    outcome: Literal["changed", "refused", "nested", "ignored", "untested", "broken"]
    trials: list[Trial]
    note: str = ""

    def report(self) -> str:
        lines = [f"{self.spec.path}: {self.outcome}{' (' + self.note + ')' if self.note else ''}"]
        for t in self.trials:
            lines.append(f"    {t.location}: {t.candidate}: {t.outcome}{' - ' + t.detail if t.detail else ''}")
        return "\n".join(lines)


def _dedupe(cands: list[Candidate]) -> list[Candidate]:
    out, seen = [], []
    for c in cands:
        ident = (repr(c.value), c.clear, c.label if c.whole is not None else None)
        if ident not in seen:
            seen.append(ident)
            out.append(c)
    return out


def judge(
    spec: FieldSpec,
    locs: list[Location],
    make: Callable[[FieldSpec, Location], list[Candidate]],
    limit: int = 25,
) -> Verdict:
    """The field takes effect if, at some location, every valid candidate changes the build or is refused,
    and candidates that change it change it differently (two values of a field are two outputs)."""
    tried: list[Trial] = []
    refused: Verdict | None = None
    for loc in locs[:limit]:
        trials = [trial(spec, loc, c) for c in _dedupe(make(spec, loc))]
        tried.extend(trials)
        broken = [t for t in trials if t.outcome in ("crashed", "unpositioned")]
        if broken:
            return Verdict(spec, "broken", trials, "a candidate crashed the compiler or was refused without a position")
        ran = [t for t in trials if t.outcome != "invalid"]
        if not ran:
            continue
        changed = [t for t in ran if t.outcome == "changed" and t.swapped]
        same = [
            (a, b) for i, a in enumerate(changed) for b in changed[i + 1:] if a.files == b.files
        ]
        if all(t.outcome in ("changed", "refused") for t in ran) and not same:
            for t in trials:
                t.files = None
            if any(t.outcome == "changed" for t in ran):
                return Verdict(spec, "changed", trials)
            refused = refused or Verdict(spec, "refused", trials)  # look on for a place where it changes the build
    for t in tried:
        t.files = None
    if refused is not None:
        return refused
    if not any(t.outcome != "invalid" for t in tried):
        if locs and _models(spec.annotation) and all(holder == "" for _, holder in _models(spec.annotation)):
            return Verdict(spec, "nested", [], "a model that cannot be left out; its fields are walked one by one")
        note = "no location in any base" if not locs else "no candidate was a valid value"
        return Verdict(spec, "untested", tried[:12], note)
    return Verdict(spec, "ignored", [t for t in tried if t.outcome != "invalid"][:12])
