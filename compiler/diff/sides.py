"""The two sides of a diff: a policy directory, checked and built in memory, or one taken from git.

A side from git is extracted with `git archive` into a temporary folder (the user's checkout, index and
work tree are never touched) and named `REV:path` in everything printed, never by the temporary path.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from compiler.build import check_policies, paused_gc
from compiler.diagnostics import Diagnostic
from compiler.emit import emit
from compiler.ir import MeshIR
from compiler.kubernetes import manifests
from compiler.lower import LowerOptions, lower
from compiler.policy.resolved import Resolved
from compiler.render import DEFAULT_TEMPLATES, render
from compiler.sourcemap import SOURCEMAP, sourcemap_bytes


class SideError(Exception):
    """A side cannot be read (a missing directory, an unknown revision): bad usage, not a policy error."""


@dataclass
class Side:
    label: str
    """How diagnostics and the report name it: the directory as given, or `REV:path`."""
    diagnostics: list[Diagnostic] = field(default_factory=list)
    view: Resolved | None = None
    ir: MeshIR | None = None
    files: dict[str, bytes] | None = None

    @property
    def ok(self) -> bool:
        return self.view is not None and self.files is not None


def load_side(policy_dir: Path, label: str) -> Side:
    """Check and build one side in memory (nothing is written)."""
    if not policy_dir.is_dir():
        raise SideError(f"'{label}' is not a directory")
    with paused_gc():
        diags, view = check_policies(policy_dir)
        if view is None:
            return Side(label, diags)
        # compiler.build.build with default options, from the view just checked (not loaded twice)
        ir = lower(view, LowerOptions())
        files = render(emit(ir, static=False), DEFAULT_TEMPLATES)
        files[SOURCEMAP] = sourcemap_bytes(ir)
        kubernetes, problems = manifests(ir, files)
        if problems:  # found only while building (Kubernetes manifests)
            return Side(label, diags + problems)
        files.update(kubernetes)
        return Side(label, diags, view, ir, files)


def _git(cwd: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError as exc:
        raise SideError(f"cannot run git: {exc.strerror or exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SideError(f"git {args[0]}: {message[-1] if message else 'failed'}")
    return done.stdout


@dataclass(frozen=True)
class GitDir:
    top: Path
    """The repository's top folder."""
    prefix: str
    """The policy directory relative to it (`policies/canary`, or empty for the top)."""


def git_dir(policy_dir: Path) -> GitDir:
    """Where the policy directory is in its repository. It may be gone from the work tree (deleted since
    the revisions compared): the repository is then found from its nearest existing parent."""
    path = policy_dir.absolute()
    found = next((p for p in (path, *path.parents) if p.is_dir()), None)
    if found is None:
        raise SideError(f"'{policy_dir}' is not a directory")
    try:
        top = Path(_git(found, "rev-parse", "--show-toplevel").decode().strip())
    except SideError:
        raise SideError(f"'{policy_dir}' is not in a git repository") from None
    prefix = _git(found, "rev-parse", "--show-prefix").decode().strip().rstrip("/")
    rest = path.relative_to(found).as_posix()
    if rest != ".":
        prefix = f"{prefix}/{rest}" if prefix else rest
    if ".." in prefix.split("/"):
        raise SideError(f"'{policy_dir}' is not a directory")
    return GitDir(top, prefix)


def is_revision(cwd: Path, rev: str) -> bool:
    try:
        _git(cwd, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except SideError:
        return False
    return True


def extract(where: GitDir, rev: str, into: Path) -> Path:
    """The policy directory as it is at `rev`, extracted under `into`; SideError when it is not there."""
    if rev.startswith("-"):
        raise SideError(f"'{rev}' is not a revision")
    if not is_revision(where.top, rev):
        raise SideError(f"unknown revision '{rev}'")
    spec = f"{rev}:{where.prefix}" if where.prefix else f"{rev}:"
    try:
        data = _git(where.top, "archive", "--format=tar", spec)
    except SideError:
        raise SideError(f"'{where.prefix or '.'}' does not exist at {rev}") from None
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def git_sides(stack: ExitStack, policy_dir: Path, rev: str, rev2: str | None, shown: str) -> tuple[Side, Side]:
    """The two sides of `meshc diff --git REV [REV2] [POLICY_DIR]`; REV2 None: the working tree."""
    where = git_dir(policy_dir)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshc-diff-")))
    old_dir = extract(where, rev, tmp / "old")
    old = load_side(old_dir, f"{rev}:{shown}")
    if rev2 is None:
        new = load_side(policy_dir, shown)
    else:
        new = load_side(extract(where, rev2, tmp / "new"), f"{rev2}:{shown}")
    return old, new
