"""The catalog of diagnostic codes: what each means, an example that raises it and its fix.

One Markdown file per code, `compiler/codes/catalog/<CODE>.md`, readable as it is on GitHub:

    # E209: unknown version in a Route's `to`

    What it means and why Envoy or meshc refuses it (one or more paragraphs).

    ## Example

    `shop.yaml`:

    ```yaml
    kind: Mesh
    ...
    ```

    ## Fix

    `routes.yaml`:

    ```yaml
    ...
    ```

    One sentence on the fix.

The example is a policy directory: each fenced block is one file, named by the `` `file`: `` line
just before it. The fix lists the files that change (the others stay as in the example).
tests/test_code_catalog.py writes the example into a folder, runs the checker and expects the code;
then the fixed folder, which must raise neither this code nor any error. By default the check is
`meshc check`; a line `Checked with: `meshc build ...`` in the example section runs a build with
those options instead (codes found while building the output), and a line
`Not checked by the tests: <reason>` marks an example the tests cannot run (keep those few).

`meshc explain-code CODE` prints an entry (compiler/commands/explain_code.py).
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

CATALOG = Path(__file__).resolve().parent / "catalog"
CODE = re.compile(r"[EW]\d{3}")

_TITLE = re.compile(r"# ([EW]\d{3}): (.+)")
_FILE = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*)`:")
_FENCE = re.compile(r"```([a-z]*)")
_CHECKED_WITH = re.compile(r"Checked with: `meshc (check|build)((?: [^`]*)?)`\.?")
_NOT_CHECKED = re.compile(r"Not checked by the tests: (.+)")


class CatalogError(ValueError):
    """An entry that does not follow the format (a meshc bug: the tests read every entry)."""


@dataclass(frozen=True)
class Entry:
    code: str
    title: str
    about: str
    """What it means and why (Markdown paragraphs before `## Example`)."""
    example: dict[str, str]
    """File name -> content of the example policy directory."""
    fix: dict[str, str]
    """The files that change, file name -> corrected content."""
    fix_note: str
    """The prose of the fix section (the sentence on the fix)."""
    example_note: str = ""
    """Prose of the example section besides its files (what the example shows, how it is checked)."""
    command: tuple[str, ...] = ("check",)
    """How the tests run the example: ("check",) or ("build", *options)."""
    not_checked: str = ""
    """Why the tests cannot run this example ("" when they do)."""
    markdown: str = field(default="", repr=False)

    @property
    def severity(self) -> str:
        return "warning" if self.code.startswith("W") else "error"

    @property
    def fixed(self) -> dict[str, str]:
        """The whole policy directory after the fix."""
        return {**self.example, **self.fix}

    def as_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "explanation": self.about,
            "example": {
                "files": [{"name": n, "content": c} for n, c in sorted(self.example.items())],
                "note": self.example_note,
            },
            "fix": {
                "files": [{"name": n, "content": c} for n, c in sorted(self.fix.items())],
                "note": self.fix_note,
            },
            "command": ["meshc", *self.command],
            "checked_by_tests": not self.not_checked,
            "not_checked_because": self.not_checked,
        }


def _sections(text: str, code: str) -> tuple[str, str, str, str]:
    lines = text.splitlines()
    title = _TITLE.fullmatch(lines[0].strip()) if lines else None
    if not title or title.group(1) != code:
        raise CatalogError(f"{code}: the first line must be '# {code}: <title>'")
    parts: dict[str, list[str]] = {"": []}
    current = ""
    fenced = False
    for line in lines[1:]:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            current = line[3:].strip()
            if current in parts:
                raise CatalogError(f"{code}: two sections '{current}'")
            parts[current] = []
            continue
        parts[current].append(line)
    if list(parts) != ["", "Example", "Fix"]:
        raise CatalogError(f"{code}: sections must be '## Example' then '## Fix' (found {list(parts)[1:]})")
    return title.group(2).strip(), "\n".join(parts[""]).strip(), "\n".join(parts["Example"]), "\n".join(parts["Fix"])


def _files(code: str, section: str, what: str) -> tuple[dict[str, str], list[str]]:
    """The fenced files of a section and its other (prose) lines."""
    files: dict[str, str] = {}
    prose: list[str] = []
    lines = section.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.fullmatch(line.strip()):
            j = len(prose) - 1
            while j >= 0 and not prose[j].strip():
                j -= 1
            name = _FILE.fullmatch(prose[j].strip()) if j >= 0 else None
            if not name:
                raise CatalogError(f"{code}: {what}: a fenced block without a '`file`:' line before it")
            del prose[j:]
            end = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == "```"), None)
            if end is None:
                raise CatalogError(f"{code}: {what}: a fenced block is not closed")
            if name.group(1) in files:
                raise CatalogError(f"{code}: {what}: two blocks for {name.group(1)}")
            files[name.group(1)] = "\n".join(lines[i + 1 : end]) + "\n"
            i = end + 1
            continue
        prose.append(line)
        i += 1
    return files, prose


def parse(code: str, text: str) -> Entry:
    title, about, example_text, fix_text = _sections(text, code)
    example, prose = _files(code, example_text, "Example")
    fix, fix_prose = _files(code, fix_text, "Fix")
    command: tuple[str, ...] = ("check",)
    not_checked = ""
    notes = []
    for line in prose:
        if m := _CHECKED_WITH.fullmatch(line.strip()):
            command = (m.group(1), *shlex.split(m.group(2)))
        elif m := _NOT_CHECKED.fullmatch(line.strip()):
            not_checked = m.group(1).strip()
        else:
            notes.append(line)
    if not about:
        raise CatalogError(f"{code}: no explanation before '## Example'")
    note = "\n".join(fix_prose).strip()
    if not note:
        raise CatalogError(f"{code}: the fix section needs a sentence on the fix")
    example_note = re.sub(r"\n{3,}", "\n\n", "\n".join(notes)).strip()
    return Entry(code, title, about, example, fix, note, example_note, command, not_checked, text)


def codes() -> list[str]:
    """Every code the catalog documents, sorted."""
    return sorted(p.stem for p in CATALOG.glob("*.md") if CODE.fullmatch(p.stem))


def entry(code: str) -> Entry | None:
    path = CATALOG / f"{code}.md"
    if not CODE.fullmatch(code) or not path.is_file():
        return None
    return parse(code, path.read_text(encoding="utf-8"))


def entries() -> list[Entry]:
    return [e for e in map(entry, codes()) if e is not None]


def suggestions(word: str) -> list[str]:
    """Codes close to a mistyped one (`e218`, `E2l8`, `E281` -> neighbours)."""
    known = codes()
    upper = word.strip().upper()
    if upper in known:
        return [upper]
    close = difflib.get_close_matches(upper, known, n=3, cutoff=0.6)
    return close


def as_text(e: Entry) -> str:
    """A terminal rendering: the Markdown's prose, each file's content indented under its name."""
    out = [f"{e.code} ({e.severity}): {e.title}", "", *e.about.splitlines(), "", "Example:"]

    def files(items: dict[str, str]) -> None:
        for name, content in items.items():
            out.extend(["", f"  {name}:", ""])
            out.extend(f"    {line}".rstrip() for line in content.rstrip("\n").splitlines())

    if e.example_note:
        out.extend(["", *e.example_note.splitlines()])
    files(e.example)
    if e.command != ("check",):
        out.extend(["", f"Reported by `meshc {' '.join(e.command)}`."])
    out.extend(["", "Fix:"])
    files(e.fix)
    out.extend(["", *e.fix_note.splitlines()])
    return "\n".join(out).rstrip() + "\n"
