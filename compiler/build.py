"""The pipeline, end to end: load -> check -> lower -> emit -> render.

Pure apart from reading the policy files: returns the files of the build
(or the diagnostics that stopped it); writing is the caller's step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compiler.check import check
from compiler.diagnostics import Diagnostic
from compiler.emit import emit
from compiler.ir import MeshIR
from compiler.load import load
from compiler.lower import LowerOptions, lower
from compiler.render import DEFAULT_TEMPLATES, render


@dataclass(frozen=True)
class BuildOptions:
    static: bool = False
    """Everything inline in bootstrap.yaml (no clusters.yaml / routes-*.yaml)."""
    templates: Path = DEFAULT_TEMPLATES
    config_root: str | None = None
    """Sidecar S reads its files from `<config_root>/S` (default: the Mesh's `config_dir`)."""


@dataclass
class BuildResult:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    ir: MeshIR | None = None
    files: dict[str, bytes] | None = None

    @property
    def ok(self) -> bool:
        return self.files is not None


def check_policies(policy_dir: Path) -> tuple[list[Diagnostic], object]:
    loaded = load(policy_dir)
    diags = list(loaded.diagnostics)
    if any(d.is_error for d in diags):
        return diags, None
    diags.extend(check(loaded.policy))
    if any(d.is_error for d in diags):
        return diags, None
    return diags, loaded.policy


def build(policy_dir: Path, options: BuildOptions = BuildOptions()) -> BuildResult:
    diags, policy = check_policies(policy_dir)
    if policy is None:
        return BuildResult(diags)
    ir = lower(policy, LowerOptions(config_root=options.config_root))
    files = render(emit(ir, static=options.static), options.templates)
    return BuildResult(diags, ir, files)
