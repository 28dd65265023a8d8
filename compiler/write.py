"""Stage 5, write: file contents -> the output directory, atomically.

Nothing touches the output directory until every file of the build exists in
memory, so a failed build leaves the previous output as it was.

- A new output directory is built next to its destination and renamed into
  place in one step.
- An existing one is updated file by file, each file by an atomic rename
  within its folder, in the steps of `compiler.rollout.steps` (what a change
  needs lands before what uses it; what it removes goes last), pausing
  `settle` seconds between steps so every running sidecar has applied one
  step before the next lands. This is deliberate: a sidecar has
  `out/<service>/` mounted (a bind mount pins the folder itself), and Envoy
  watches for files *moved into* that folder; swapping the whole directory
  would be invisible to it. Unchanged files are not touched, so they do not
  trigger reloads.
- Files that the previous build wrote (per its manifest) and this one does
  not are removed; files meshc did not write (certificates, say) are left.
- manifest.json lists every file with its sha256, the build's settings that
  decide where sidecars read files (`settings`), and what the last write meant
  for each running sidecar (`rollout`: added, removed, unchanged, reload, or
  restart and why). A write that changes nothing leaves it as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compiler.rollout import Rollout, changes, steps

MANIFEST = "manifest.json"
WRITERS = 8  # creating a file costs ~0.6 ms here, mostly waiting on the file system (the GIL is released)
SETTLE = 1.0
"""Seconds between two write steps: Envoy applies a moved-in file within milliseconds; this leaves room."""


class WriteError(Exception):
    pass


def manifest_bytes(files: dict[str, bytes], settings: dict | None = None, rollout: Rollout | None = None) -> bytes:
    doc: dict = {"files": {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}}
    if settings:
        doc["settings"] = dict(sorted(settings.items()))
    doc["rollout"] = (rollout or Rollout(changes(None, files))).as_json()
    return (json.dumps(doc, indent=2) + "\n").encode()


def with_manifest(files: dict[str, bytes], settings: dict | None = None) -> dict[str, bytes]:
    """The files of a fresh output folder (every sidecar added)."""
    return {**files, MANIFEST: manifest_bytes(files, settings)}


def read_manifest(out: Path) -> dict | None:
    """The previous build's manifest, or None when there is none (or it is unreadable)."""
    try:
        doc = json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else None


def _recorded(manifest: dict | None) -> tuple:
    """What a manifest says about the output itself (its `rollout` part is history)."""
    return (None, None) if manifest is None else (manifest.get("files"), manifest.get("settings"))


def _previous_files(out: Path) -> set[str] | None:
    doc = read_manifest(out)
    return None if doc is None else set(doc["files"])


def _read_previous(out: Path, previous: set[str]) -> dict[str, bytes]:
    old = {}
    for rel in previous:
        try:
            old[rel] = (out / rel).read_bytes()
        except OSError:
            pass  # gone: it will be written again
    return old


def check_paths(files: dict[str, bytes]) -> None:
    """Refuse a relative path that would land outside the output folder (defence in depth: names are
    validated long before, but a path is what decides where bytes go)."""
    for rel in files:
        if (
            not isinstance(rel, str)
            or not rel
            or rel.startswith("/")
            or "\\" in rel
            or "\0" in rel
            or any(p in ("", ".", "..") for p in rel.split("/"))
            or os.path.isabs(rel)
        ):
            raise WriteError(f"refusing to write {rel!r}: the path would leave the output folder")


def write(files: dict[str, bytes], out: Path, settings: dict | None = None, settle: float = SETTLE) -> Rollout:
    """Write `files` (relative path -> bytes, without manifest) into `out`; returns what it meant per sidecar.

    Raises WriteError for a path outside `out` (nothing is written then) and when the file system refuses."""
    check_paths(files)
    try:
        return _write(files, Path(out), settings, settle)
    except OSError as exc:
        what = f"'{exc.filename}'" if isinstance(exc.filename, str) else f"into '{out}'"
        raise WriteError(f"cannot write {what}: {exc.strerror or exc}") from exc


def _write(files: dict[str, bytes], out: Path, settings: dict | None, settle: float) -> Rollout:
    if not out.exists():
        everything = with_manifest(files, settings)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.meshc-", dir=out.parent))
        try:
            os.chmod(tmp, 0o755)
            for folder in sorted({(tmp / rel).parent for rel in everything}):
                folder.mkdir(parents=True, exist_ok=True, mode=0o755)
            with ThreadPoolExecutor(WRITERS) as pool:
                list(pool.map(lambda item: (tmp / item[0]).write_bytes(item[1]), everything.items()))
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Rollout(changes(None, files))

    previous = _previous_files(out)
    if previous is None and any(out.iterdir()):
        raise WriteError(f"refusing to write into '{out}': it is not empty and has no {MANIFEST} from an earlier build")
    old = _read_previous(out, previous or set())
    rollout = Rollout(changes(old, files))
    plan = steps(old, files)
    with ThreadPoolExecutor(WRITERS) as pool:
        for i, step in enumerate(plan):
            if i:
                time.sleep(settle)  # let every sidecar apply the previous step first
            list(pool.map(lambda item: _update(out / item[0], item[1]), sorted(step.items())))
    removed = sorted((previous or set()) - set(files))
    for rel in removed:
        stale = out / rel
        if stale.is_file():
            stale.unlink()
            try:
                stale.parent.rmdir()  # only if now empty
            except OSError:
                pass
    if plan or removed or _recorded(read_manifest(out)) != _recorded(json.loads(manifest_bytes(files, settings))):
        _replace(out / MANIFEST, manifest_bytes(files, settings, rollout))  # a write that changed nothing keeps it
    return rollout


def _update(target: Path, data: bytes) -> None:
    """Replace `target` unless it already holds `data` (an unchanged file must not trigger a reload)."""
    if not (target.is_file() and target.read_bytes() == data):
        _replace(target, data)


def _replace(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def differences(files: dict[str, bytes], out: Path, settings: dict | None = None) -> list[str]:
    """What `write(files, out)` would change, as 'changed: x', 'missing: x', 'extra: x' lines.

    The manifest counts by its files and settings; its `rollout` part is history, not output."""
    check_paths(files)
    out = Path(out)
    lines = []
    for rel, data in files.items():
        target = out / rel
        if not target.is_file():
            lines.append(f"missing: {rel}")
        elif target.read_bytes() != data:
            lines.append(f"changed: {rel}")
    manifest = read_manifest(out)
    if manifest is None:
        lines.append(f"missing: {MANIFEST}")
    elif _recorded(manifest) != _recorded(json.loads(manifest_bytes(files, settings))):
        lines.append(f"changed: {MANIFEST}")
    for rel in sorted((_previous_files(out) or set()) - set(files)):
        if (out / rel).is_file():
            lines.append(f"extra: {rel}")
    return lines
