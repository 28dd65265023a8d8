"""Nothing is ignored: every field of every policy model changes the emitted config or is refused.

The fields are not listed here: tests/fieldwalk/ finds them in the pydantic
models themselves (every document kind, every nested model, list and dict
items, union members), so a field added tomorrow is walked tomorrow. For
each field the walk finds the places where its model occurs in a base policy
(the example cases under policies/, plus tests/fieldwalk/bases/ for what no
example uses), changes the field to other valid values derived from its type,
rebuilds in memory and compares every file of the build:

- changed: the build differs (and two one-of swaps differ from each other);
- refused: the build stops with an error that points into the policy;
- nested: a model that is always there (`Mesh.defaults`); its own fields are walked;
- ignored: a valid value that builds and changes nothing -- the bug this test exists for.

A field passes when at one place every valid candidate changes the build or is
refused (a field may rightly do nothing in one policy: a Mesh default that every
Service overrides). No Envoy runs here; the whole walk takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fieldwalk as fw
from compiler.policy.base import Document, PolicyModel

ROOT = Path(__file__).resolve().parent.parent
BASE_DIRS = sorted(d for d in (ROOT / "policies").iterdir() if d.is_dir() and d.name != "basic-py") + sorted(
    d for d in (ROOT / "tests" / "fieldwalk" / "bases").iterdir() if d.is_dir()
)
"""Every example case (basic-py is basic in Python: the same places) and the walk's own bases."""


def _other_jwks(spec: fw.FieldSpec, loc: fw.Location) -> list[fw.Candidate]:
    if loc.owner.jwks is None:
        return []
    keys = json.loads(loc.owner.jwks)
    keys["keys"][0]["kid"] = keys["keys"][0].get("kid", "") + "-walk"
    return [fw.Candidate("the first key with another kid", json.dumps(keys))]


def _other_destination(spec: fw.FieldSpec, loc: fw.Location) -> list[fw.Candidate]:
    to = loc.owner.to or {}
    if len(to) < 2:
        return []
    (a, wa), (b, wb) = list(to.items())[:2]
    shift = 1 if wa > 0 else -1
    return [fw.Candidate(f"move {shift}% from {a} to {b}", {**to, a: wa - shift, b: wb + shift})]


def _other_default_version(spec: fw.FieldSpec, loc: fw.Location) -> list[fw.Candidate]:
    svc = loc.owner
    return [fw.Candidate(f"-> {v}", v) for v in svc.version_names if v != svc.effective_default_version]


def _other_log_target(spec: fw.FieldSpec, loc: fw.Location) -> list[fw.Candidate]:
    log = loc.owner
    if log.to == "file":
        return [fw.Candidate("file -> stdout (without its path)", "stdout", clear=("path",))]
    return [fw.Candidate("stdout -> file", "file", whole=_set_path(loc, "/var/log/walk.log"))]


def _set_path(loc: fw.Location, path: str):
    def edit(docs: list[dict]) -> list[dict]:
        node = docs[loc.doc_index]
        for step in loc.steps:
            node = node.setdefault(step[2], {}) if step[0] == "field" else node[step[1]]
        node.update({"to": "file", "path": path})
        return docs

    return edit


OVERRIDES = {
    # An inline JWKS is a JSON document: a changed string is no longer one, so change the key set instead.
    "RequestAuthentication.providers[].jwks": _other_jwks,
    # Weights add up to 100: any single change is refused (E210), so move a point between two versions.
    "Route.rules[].to": _other_destination,
    # Any name but one of the service's versions is refused (E211): pick another version.
    "Service.default_version": _other_default_version,
    # `to: file` needs a path and `to: stdout` refuses one: switch both together.
    "AccessLog.to": _other_log_target,
}
"""Field path (or Model.field, for every place of a model) -> candidates, where a mutation derived
from the type is meaningless. Every entry says why."""

EXEMPT: dict[str, str] = {}
"""Field path -> why it needs no mutation. Keep this rare: every entry is a field nobody proves."""


def _discriminator(spec: fw.FieldSpec) -> bool:
    """`kind` of each document: it chooses the model itself, so another value is another document."""
    return spec.name == "kind" and spec.owner is spec.document


SPECS = fw.fields()
WALKED = [s for s in SPECS if s.path not in EXEMPT and not _discriminator(s)]
VERDICTS: dict[str, fw.Verdict] = {}


@pytest.fixture(scope="module")
def walk():
    bases = [fw.load_base(d.name, d) for d in BASE_DIRS]
    return bases, fw.Pool(SPECS, bases)


def _verdict(spec: fw.FieldSpec, walk) -> fw.Verdict:
    if spec.path not in VERDICTS:
        bases, pool = walk
        override = OVERRIDES.get(spec.path) or OVERRIDES.get(f"{spec.owner.__name__}.{spec.name}")
        make = (lambda s, loc: override(s, loc)) if override else (lambda s, loc: fw.candidates(s, loc, pool))
        VERDICTS[spec.path] = fw.judge(spec, fw.locations(spec, bases), make)
    return VERDICTS[spec.path]


@pytest.mark.parametrize("path", [s.path for s in WALKED])
def test_field_takes_effect_or_is_refused(path, walk):
    verdict = _verdict(next(s for s in WALKED if s.path == path), walk)
    assert verdict.outcome in ("changed", "refused", "nested"), (
        "this field can be changed without changing the build (or could not be changed at all):\n" + verdict.report()
    )


def test_every_field_is_walked_or_exempt(walk):
    """The coverage guard: a summary of the walk, and no field left without a mutation that ran."""
    summary: dict[str, list[str]] = {}
    for spec in WALKED:
        summary.setdefault(_verdict(spec, walk).outcome, []).append(spec.path)
    exempt = [s.path for s in SPECS if s.path in EXEMPT or _discriminator(s)]
    print(
        f"\n{len(SPECS)} fields: {len(WALKED)} walked "
        + ", ".join(f"{len(v)} {k}" for k, v in sorted(summary.items()))
        + f"; {len(exempt)} exempt ({', '.join(exempt)})"
    )
    unproved = {k: v for k, v in summary.items() if k not in ("changed", "refused", "nested")}
    assert not unproved, f"fields not proved: {unproved}"
    paths = {s.path for s in SPECS} | {f"{s.owner.__name__}.{s.name}" for s in SPECS}
    stale = sorted((set(EXEMPT) | set(OVERRIDES)) - paths)
    assert not stale, f"exemptions or overrides for fields that no longer exist: {stale}"
    assert all(reason.strip() for reason in EXEMPT.values())


def test_the_walk_reaches_every_policy_model():
    """Every model the policy language exports is reached from a document kind (else its fields are never walked)."""
    import compiler.policy as policy

    exported = {
        obj for obj in vars(policy).values()
        if isinstance(obj, type) and issubclass(obj, PolicyModel) and obj not in (PolicyModel, Document)
    }
    reached = {s.owner for s in SPECS}
    assert exported - reached == set()
    assert {s.document for s in SPECS} == set(fw.DOCUMENT_KINDS)


def test_the_bases_survive_the_round_trip(walk):
    """Rewriting a base through its models, changing nothing, builds the very same files (so a difference is the field's)."""
    bases, _ = walk
    for base in bases:
        rebuilt = fw.revalidate(base.policy.documents, [fw.sparse(d) for d in base.policy.documents])
        assert rebuilt is not None, base.name
        files, errors = fw.build_files(rebuilt)
        assert errors is None and files == base.files, base.name


def test_the_walk_catches_an_ignored_field(walk, monkeypatch):
    """Make the compiler drop one field on purpose: the walk must call it ignored."""
    bases, pool = walk
    spec = next(s for s in SPECS if s.path == "Route.rules[].retries.backoff.max")
    real = fw.build_files

    def forgetful(policy):
        docs = []
        for doc in policy.documents:
            if doc.kind == "Route":
                data = fw.sparse(doc)
                for rule in data["rules"]:
                    if isinstance(rule.get("retries"), dict):
                        rule["retries"].get("backoff", {}).pop("max", None)
                doc = fw.ADAPTER.validate_python(data)
            docs.append(doc)
        return real(type(policy)(tuple(docs)))

    monkeypatch.setattr(fw.trials, "build_files", forgetful)
    forgetting = [fw.Base(b.name, b.policy, forgetful(b.policy)[0]) for b in bases]
    verdict = fw.judge(spec, fw.locations(spec, forgetting), lambda s, loc: fw.candidates(s, loc, pool))
    assert verdict.outcome == "ignored", verdict.report()
