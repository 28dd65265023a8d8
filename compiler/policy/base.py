"""The base of every policy model: strict pydantic plus source positions.

pydantic drops positions (it rebuilds plain values), so each top-level
document carries a separate index `field path -> Source`, filled by the loader.
`where(path)` answers with the nearest recorded ancestor, so a check can point
at `rules[0].to.v3` even if only `rules[0]` was recorded. Every Source they
return also names the requested place itself (`Source.anchor`:
`Route/reviews/rules[0]/to/v3`), whatever line it falls back to: that name is
the provenance the output records, stable when lines move.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from compiler.diagnostics import Source, anchor_of

# Set by the Python loader while it executes a policy file: (absolute path, relative name).
PYTHON_POLICY_FILE: ContextVar[tuple[str, str] | None] = ContextVar("PYTHON_POLICY_FILE", default=None)


IN_MEMORY = Source("<in-memory>", 0, 0)
"""The source of policy objects that were not loaded from a file (built by a program or a test)."""


class PolicyModel(BaseModel):
    """Strict, closed, immutable: unknown fields are errors, values are not coerced silently.

    Objects built in a Python policy file remember the line that built them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    _source: Source | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        current = PYTHON_POLICY_FILE.get()
        if current is None or self._source is not None:
            return
        abs_path, rel = current
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename == abs_path:
                self._source = Source(rel, frame.f_lineno, 1)
                return
            frame = frame.f_back


class Document(PolicyModel):
    """A top-level policy object (one YAML document or one Python object)."""

    _positions: dict[tuple, Source] = PrivateAttr(default_factory=dict)

    # -- positions ---------------------------------------------------------
    def attach_source(self, source: Source, positions: dict[tuple, Source]) -> None:
        self._source = source
        self._positions = positions

    def anchor(self, *path: Any) -> str:
        """The stable name of `path` in this document: `Kind/name/field/key[i]...`."""
        return anchor_of(self.kind, getattr(self, "name", None) or getattr(self, "service", None), path)

    @property
    def source(self) -> Source:
        """Where this object was written; objects built in memory (not from a policy file) say so."""
        return replace(self._source or IN_MEMORY, anchor=self.anchor())

    def where(self, *path: Any) -> Source:
        """Position of `path`: recorded (YAML), else the innermost object built on its own line (Python).

        The line may be an ancestor's; the anchor always names `path` itself.
        """
        anchor = self.anchor(*path)
        parts = tuple(path)
        while parts:
            hit = self._positions.get(parts)
            if hit is not None:
                return replace(hit, anchor=anchor)
            parts = parts[:-1]
        best = self.source
        node: Any = self
        for part in path:
            try:
                node = node[part] if isinstance(node, (dict, list, tuple)) else getattr(node, part)
            except (KeyError, IndexError, AttributeError, TypeError):
                break
            if isinstance(node, PolicyModel) and node._source is not None:
                best = node._source
        return replace(best, anchor=anchor)

    @property
    def subject(self) -> str:
        """How diagnostics name this object, e.g. "Route 'reviews'"."""
        ident = getattr(self, "name", None) or getattr(self, "service", None)
        return f"{self.kind} '{ident}'" if ident else str(self.kind)
