"""Stable output: moving lines in a policy rewrites no sidecar file.

Provenance in the output names a place by anchor (`routes.yaml#Route/reviews/rules[1]`),
never by line; the lines live in one file beside the output, `sourcemap.json`.
So adding a comment to every policy file and reordering the documents of a
multi-document file leaves every sidecar's files byte for byte as they were:
the writer does not even touch them (no reload, nothing for a reviewer to
read), and only `sourcemap.json` (and `manifest.json`, which lists its hash)
change. The source map must then point every anchor at the moved line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from compiler.build import build
from compiler.cli import main
from compiler.diagnostics import Source
from compiler.ir import MeshIR, Sidecar
from compiler.sourcemap import SOURCEMAP, sourcemap_bytes, sources

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted(p.name for p in (ROOT / "policies").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
COMMENT = "# a comment added above everything: every line below moves down by one\n"
ANCHOR = re.compile(r"[\w./-]+\.(?:ya?ml|py)#[^\"\s]+")
SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


def _documents(text: str) -> list[str]:
    """The documents of a YAML file (comments before a document stay with it), each ending in a newline."""
    return [d if d.endswith("\n") else d + "\n" for d in (d.lstrip("\n") for d in SEPARATOR.split(text)) if d.strip()]


def _moved_copy(src: Path, dest: Path) -> None:
    """`src` with a comment line on top of every file and the documents of every YAML file in reverse order."""
    shutil.copytree(src, dest)
    for path in sorted(dest.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            docs = _documents(path.read_text())
            path.write_text(COMMENT + "---\n".join(reversed(docs)))
        elif path.suffix == ".py":
            path.write_text(COMMENT + path.read_text())


def _tree(out: Path) -> dict[str, os.stat_result]:
    return {p.relative_to(out).as_posix(): p.stat() for p in sorted(out.rglob("*")) if p.is_file()}


def _sourcemap(out: Path) -> dict[str, str]:
    return json.loads((out / SOURCEMAP).read_text())["sources"]


def _line(policy_dir: Path, where: str) -> tuple[str, int]:
    """'shop.yaml:23:3' -> (the text of line 23 from column 3, 23)."""
    file, line, column = where.rsplit(":", 2)
    text = (policy_dir / file).read_text().splitlines()[int(line) - 1]
    return text[int(column) - 1 :], int(line)


@pytest.mark.parametrize("case", CASES)
def test_moving_lines_rewrites_no_sidecar_file(case: str, tmp_path: Path) -> None:
    first, moved, out = tmp_path / "first" / case, tmp_path / "moved" / case, tmp_path / "out"
    shutil.copytree(ROOT / "policies" / case, first)
    _moved_copy(first, moved)
    assert main(["build", str(first), "-o", str(out)]) == 0
    before = _tree(out)
    before_bytes = {rel: (out / rel).read_bytes() for rel in before}
    map_before = _sourcemap(out)

    assert main(["build", str(moved), "-o", str(out)]) == 0
    after = _tree(out)
    assert sorted(after) == sorted(before)
    changed = {rel for rel in before if (out / rel).read_bytes() != before_bytes[rel]}
    assert changed == {SOURCEMAP, "manifest.json"}
    sidecar_files = [rel for rel in before if "/" in rel]
    assert len(sidecar_files) >= 3
    for rel in sidecar_files:  # not rewritten at all: the same file, so no watch fires
        assert (after[rel].st_ino, after[rel].st_mtime_ns) == (before[rel].st_ino, before[rel].st_mtime_ns), rel

    # The same anchors, each pointing at the same text, now one line further down (or elsewhere, reordered).
    map_after = _sourcemap(out)
    assert sorted(map_after) == sorted(map_before)
    moved_lines = 0
    for anchor in map_before:
        text_before, line_before = _line(first, map_before[anchor])
        text_after, line_after = _line(moved, map_after[anchor])
        assert text_after == text_before, anchor
        moved_lines += line_after != line_before
        if not case.endswith("-py"):
            _points_at(moved, anchor, map_after[anchor])
    assert moved_lines > 0  # (a reversed document can land on its old line number again)


@pytest.mark.parametrize("case", CASES)
def test_every_anchor_in_the_output_is_in_the_source_map(case: str) -> None:
    result = build(ROOT / "policies" / case)
    assert result.ok
    mapped = json.loads(result.files[SOURCEMAP])["sources"]
    used = {a for rel, data in result.files.items() if rel != SOURCEMAP for a in ANCHOR.findall(data.decode())}
    assert used, "the output records no provenance"
    assert used <= set(mapped), sorted(used - set(mapped))
    assert not re.search(r"\.(?:ya?ml|py):\d", b"".join(d for r, d in result.files.items() if r != SOURCEMAP).decode())
    assert list(mapped) == sorted(mapped)


def _points_at(policy_dir: Path, anchor: str, where: str) -> None:
    """The YAML text at `where` is what `anchor` names: its key, its list item, or its document's first line."""
    file, path = anchor.split("#", 1)
    assert where.startswith(f"{file}:"), (anchor, where)
    text, line = _line(policy_dir, where)
    kind, name, *fields = path.split("/")
    last = fields[-1] if fields else ""
    if re.search(r"\[\d+\]$", last):  # a list item: right after its dash (or in a flow list)
        full = (policy_dir / file).read_text().splitlines()[line - 1]
        before = full[: len(full) - len(text)].rstrip()
        assert before.endswith(("-", "[", ",")), (anchor, where, full)
    elif last:  # a key
        assert re.match(rf"['\"]?{re.escape(last)}['\"]?\s*:", text), (anchor, where, text)
    else:  # the document: its first line, in the document of that kind and name
        lines = (policy_dir / file).read_text().splitlines()
        start = max([0] + [i + 1 for i, l in enumerate(lines[:line]) if SEPARATOR.match(l)])
        end = next((i for i in range(line, len(lines)) if SEPARATOR.match(lines[i])), len(lines))
        doc = lines[start:end]
        assert f"kind: {kind}" in doc and (f"name: {name}" in doc or f"service: {name}" in doc), (anchor, where)
        assert text == next(l for l in doc if l and not l.startswith("#")), (anchor, where)


@pytest.mark.parametrize("case", [c for c in CASES if not c.endswith("-py")])
def test_the_source_map_points_each_anchor_at_its_line(case: str) -> None:
    policy_dir = ROOT / "policies" / case
    result = build(policy_dir)
    mapped = json.loads(result.files[SOURCEMAP])["sources"]
    for anchor, where in mapped.items():
        _points_at(policy_dir, anchor, where)


def test_basic_anchors_and_lines() -> None:
    """The README's example, spelled out: the canary rule and the version it names."""
    mapped = json.loads(build(ROOT / "policies" / "basic").files[SOURCEMAP])["sources"]
    routes = (ROOT / "policies" / "basic" / "routes.yaml").read_text().splitlines()
    shop = (ROOT / "policies" / "basic" / "shop.yaml").read_text().splitlines()
    file, line, col = mapped["routes.yaml#Route/reviews/rules[1]"].split(":")
    assert routes[int(line) - 1].strip() == "- to: {v1: 90, v2: 10}" and col == "5"
    file, line, col = mapped["shop.yaml#Service/reviews/versions/v2"].split(":")
    assert shop[int(line) - 1].strip().startswith("v2: {endpoints:")
    file, line, col = mapped["shop.yaml#Service/ratings"].split(":")
    assert shop[int(line) - 1 :][:2] == ["kind: Service", "name: ratings"]


def test_diagnostics_keep_file_line_column() -> None:
    """Anchors are for the output; a diagnostic still prints where to look."""
    s = Source("shop.yaml", 24, 11, anchor="Route/reviews/rules[0]/to/v3")
    assert str(s) == "shop.yaml:24:11" and s.short == "shop.yaml#Route/reviews/rules[0]/to/v3"
    assert s == Source("shop.yaml", 24, 11)  # a position: the anchor is its name, not part of it
    assert Source("shop.yaml", 24, 11).short == "shop.yaml:24"  # no anchor (an IR built by hand): the line


def test_sourcemap_walks_shared_nodes_once_and_is_sorted() -> None:
    a = Source("b.yaml", 9, 1, anchor="Service/b")
    z = Source("a.yaml", 3, 2, anchor="Service/a")
    sidecar = dict(mesh="m", protocol="http", admin_address="127.0.0.1", admin_port=15000, config_dir="/etc/meshc")
    shared = [("b", a), ("a", z), ("c", a)]  # b and c share one Source object
    ir = MeshIR("m", tuple(Sidecar(service=n, listeners=(), clusters=(), source=s, **sidecar) for n, s in shared))
    assert set(sources(ir)) == {"b.yaml#Service/b", "a.yaml#Service/a"}
    assert sourcemap_bytes(ir) == (
        b'{\n  "sources": {\n    "a.yaml#Service/a": "a.yaml:3:2",\n    "b.yaml#Service/b": "b.yaml:9:1"\n  }\n}\n'
    )


def _every_source(value: object) -> set[str]:
    """All Sources below `value`, walking every field of every node (what `sources` prunes by annotation)."""
    if isinstance(value, Source):
        return {value.short}
    if isinstance(value, (tuple, list)):
        return set().union(*map(_every_source, value)) if value else set()
    if dataclasses.is_dataclass(value):
        return set().union(*(_every_source(getattr(value, f.name)) for f in dataclasses.fields(value)))
    return set()


@pytest.mark.parametrize("case", CASES)
def test_the_pruned_walk_finds_every_source(case: str) -> None:
    ir = build(ROOT / "policies" / case).ir
    assert set(sources(ir)) == _every_source(ir)
