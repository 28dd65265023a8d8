"""Diagnostics: what every stage reports instead of raising.

A user error is a `Diagnostic` value with a stable code, a position in the
policy source and the field path it concerns. Stages collect them and return
them all at once; only the CLI decides how to print them and what exit code
follows. Internal bugs are ordinary Python exceptions and are never dressed up
as diagnostics: the CLI reports one as "internal error: this is a meshc bug"
and exits 3. Every rendered line goes through `printable` (policy text is
escaped and long names shortened there, once, for every code).

Codes (stable, documented in the README):
  E0xx  loading (YAML syntax, aliases, duplicate keys, tags, unreadable files, Python policy files)
  E1xx  typing (unknown kind/field, wrong type, out-of-range values)
  E2xx  meaning (references, duplicates, weights, port clashes)
  W2xx  warnings from the meaning checks (the build still succeeds)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, order=True)
class Source:
    """A position in a policy file (1-based line and column) and, when known, its stable name.

    `file` is relative to the policy directory (that is what provenance in the
    output records); diagnostics prefix it with the directory the user named
    and print `file:line:column`.

    `anchor` names the place without its line: the document's `Kind/name`
    and the field path, map keys after `/` and list positions as `[i]`
    (`Route/reviews/rules[1]`, `Service/reviews/versions/v2`). It is what the
    output records (`short`), so moving lines (a comment, reordered documents)
    changes no emitted file; `sourcemap.json` beside the output maps each
    anchor back to its line. Equality and order are the position only.
    """

    file: str
    line: int
    column: int = 1
    anchor: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @property
    def short(self) -> str:
        """Provenance as recorded in emitted files: `file#Kind/name/path`, or `file:line` without an anchor."""
        return f"{self.file}#{self.anchor}" if self.anchor else f"{self.file}:{self.line}"


def anchor_of(kind: str, ident: str | None, path: tuple = ()) -> str:
    """('Route', 'reviews', ('rules', 1, 'to', 'v2')) -> 'Route/reviews/rules[1]/to/v2'."""
    out = f"{kind}/{ident}" if ident else str(kind)
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f"/{part}"
    return out


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    source: Source | None = None
    subject: str = ""  # e.g. "Route 'reviews'"
    path: str = ""  # field path inside the subject, e.g. "rules[0].to"
    severity: Severity = Severity.ERROR
    refs: tuple[Source | None, ...] = ()
    """Other positions the message names, as `{0}`, `{1}`...: rendered like `source`
    (with the same directory prefix), so both read as paths the user can open."""

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @staticmethod
    def _location(source: Source, root: str) -> str:
        file = f"{root.rstrip('/')}/{source.file}" if root else source.file
        return f"{file}:{source.line}:{source.column}"

    def render(self, root: str = "") -> str:
        """`file:line:column: error[E104]: subject path: message`. What came from the policies (subject, path,
        message) is escaped and shortened; the locations only escaped, so that an editor can open them."""
        where = f"{printable(self._location(self.source, root), shorten=False)}: " if self.source is not None else ""
        what = " ".join(p for p in (self.subject, self.path) if p)
        what = f"{printable(what)}: " if what else ""
        message = printable(self.message)
        for i, ref in enumerate(self.refs):
            at = printable(self._location(ref, root), shorten=False) if ref is not None else "?"
            message = message.replace(f"{{{i}}}", at)
        return f"{where}{self.severity.value}[{self.code}]: {what}{message}"

    def sort_key(self) -> tuple:
        src = self.source or Source("", 0, 0)
        return (src.file, src.line, src.column, self.code, self.message)


@dataclass
class Diagnostics:
    """An ordered collection that stages append to."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, diag: Diagnostic) -> None:
        self.items.append(diag)

    def extend(self, diags) -> None:
        self.items.extend(diags)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.is_error]

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)


MAX_RUN = 200
"""Longest stretch of a printed line between two quotes or spaces: longer ones are cut in the middle."""
MAX_TEXT = 1000
"""Longest subject, path or message (of many short words): longer ones keep their start and end."""
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LONG_RUN = re.compile(rf"[^'\s]{{{MAX_RUN + 1},}}|'[^']{{{MAX_RUN + 1},}}'")


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    point = ord(ch)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def _shorten(match: re.Match) -> str:
    run = match.group(0)
    keep = MAX_RUN - 1
    return f"{run[: keep - keep // 4]}…{run[len(run) - keep // 4 :]}"


def printable(text: str, shorten: bool = True) -> str:
    """`text` safe to print on a terminal: text from policies (names, values, a Python policy's messages)
    can hold escape sequences, CR/LF or 100,000 characters. Every character Python does not call
    printable (control and format characters, line separators, lone surrogates) is shown escaped
    (`\\x1b`, `\\n`, `\\u202e`); a quoted or unbroken stretch longer than MAX_RUN keeps its start
    and end around an ellipsis, and so does a text longer than MAX_TEXT (`shorten=False`: escape only).
    Used for every diagnostic line and every error the CLI prints."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
    if shorten and len(text) > MAX_RUN:
        text = _LONG_RUN.sub(_shorten, text)
        if len(text) > MAX_TEXT:  # many short words (a value of 100,000 'a b c ...')
            text = f"{text[: MAX_TEXT - 200]}…{text[-199:]}"
    return text


def format_path(path: tuple) -> str:
    """('rules', 0, 'to', 'v3') -> 'rules[0].to.v3'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, candidates) -> str:
    """' (did you mean 'x'?)' when a close candidate exists, else ''."""
    import difflib

    close = difflib.get_close_matches(str(word), sorted(map(str, candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
