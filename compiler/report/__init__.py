"""Diagnostics for people and machines: one reporter per output format.

The diagnostics stay values (compiler/diagnostics.py); a reporter only renders
them. `meshc check` and `meshc build` take `--format`:

    text    the human lines on stderr, exactly as before (compiler/report/text.py)
    json    one JSON object on stdout: every diagnostic and the counts (json_report.py)
    sarif   SARIF 2.1.0 on stdout, for code scanning (sarif.py)
    github  GitHub Actions workflow commands on stdout: inline annotations (github.py)

A build of several policy directories (`--cases`) reports them all in one
document. Everything taken from the policies goes through `printable` in every
format, as in the text (no control characters, long values shortened).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from compiler.diagnostics import Diagnostic
from compiler.report import github, json_report, sarif, text
from compiler.report.common import Batch, find_srcroot

FORMATS = ("text", "json", "sarif", "github")
MACHINE = {"json": json_report.render, "sarif": sarif.render, "github": github.render}

__all__ = ["FORMATS", "Batch", "Reporter", "render"]


def render(fmt: str, batches: list[Batch], srcroot: Path | None = None) -> str:
    """The machine report of `batches` in `fmt` (json, sarif, github); paths in SARIF and GitHub annotations
    are relative to `srcroot` (default: the repository holding the working directory, else the working
    directory)."""
    return MACHINE[fmt](batches, find_srcroot(Path.cwd()) if srcroot is None else srcroot)


@dataclass
class Reporter:
    """What a command does with its diagnostics: `text` prints each directory's lines on stderr at once (as
    meshc always did); the machine formats gather every directory and print one document on stdout at
    `finish()` (nothing else goes to stdout), with the one-line count on stderr."""

    fmt: str = "text"
    out: TextIO | None = None
    err: TextIO | None = None
    batches: list[Batch] = field(default_factory=list)

    @property
    def machine(self) -> bool:
        return self.fmt != "text"

    def add(self, diags: list[Diagnostic], root: str) -> None:
        if self.machine:
            self.batches.append(Batch(root, tuple(diags)))
        else:
            for line in text.lines(diags, root):
                print(line, file=self.err or sys.stderr)

    def finish(self) -> None:
        if not self.machine:
            return
        document = render(self.fmt, self.batches)
        if document:
            print(document, file=self.out or sys.stdout)
        diags = [d for b in self.batches for d in b.diagnostics]
        summary = text.summary(diags)
        if summary:
            print(summary, file=self.err or sys.stderr)
