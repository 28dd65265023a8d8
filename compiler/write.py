"""Stage 5, write: file contents -> the output directory, atomically.

Nothing touches the output directory until every file of the build exists in
memory, so a failed build leaves the previous output as it was.

- A new output directory is built next to its destination and renamed into
  place in one step.
- An existing one is updated file by file, each file by an atomic rename
  within its folder, in an order that keeps running sidecars consistent:
  clusters first, then routes (which may name the new clusters), then
  bootstraps, then the manifest. This is deliberate: a sidecar has
  `out/<service>/` mounted (a bind mount pins the folder itself), and Envoy
  watches for files *moved into* that folder; swapping the whole directory
  would be invisible to it. Unchanged files are not touched, so they do not
  trigger reloads.
- Files that the previous build wrote (per its manifest) and this one does
  not are removed; files meshc did not write (certificates, say) are left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path

MANIFEST = "manifest.json"
WRITERS = 8  # creating a file costs ~0.6 ms here, mostly waiting on the file system (the GIL is released)
def _rank(rel: str) -> int:
    """secrets, clusters, then routes (which may name new clusters), then bootstraps, then anything else."""
    name = Path(rel).name
    if name.startswith("sds-"):  # secrets before the clusters and listeners that use them
        return -1
    if name == "clusters.yaml":
        return 0
    if name.startswith("routes-"):
        return 1
    return 2 if name == "bootstrap.yaml" else 3


class WriteError(Exception):
    pass


def manifest_bytes(files: dict[str, bytes]) -> bytes:
    entries = {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}
    return (json.dumps({"files": entries}, indent=2) + "\n").encode()


def with_manifest(files: dict[str, bytes]) -> dict[str, bytes]:
    return {**files, MANIFEST: manifest_bytes(files)}


def _previous_files(out: Path) -> set[str] | None:
    try:
        return set(json.loads((out / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(files: dict[str, bytes], out: Path) -> None:
    """Write `files` (relative path -> bytes, without manifest) into `out`."""
    out = Path(out)
    everything = with_manifest(files)
    if not out.exists():
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
        return

    previous = _previous_files(out)
    if previous is None and any(out.iterdir()):
        raise WriteError(f"refusing to write into '{out}': it is not empty and has no {MANIFEST} from an earlier build")
    ordered = sorted(files.items(), key=lambda kv: (_rank(kv[0]), kv[0]))
    with ThreadPoolExecutor(WRITERS) as pool:
        for _, group in groupby(ordered, key=lambda kv: _rank(kv[0])):  # each rank completes before the next
            list(pool.map(lambda item: _update(out / item[0], item[1]), group))
    for rel in sorted((previous or set()) - set(files)):
        stale = out / rel
        if stale.is_file():
            stale.unlink()
            try:
                stale.parent.rmdir()  # only if now empty
            except OSError:
                pass
    _replace(out / MANIFEST, everything[MANIFEST])


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


def differences(files: dict[str, bytes], out: Path) -> list[str]:
    """What `write(files, out)` would change, as 'changed: x', 'missing: x', 'extra: x' lines."""
    out = Path(out)
    everything = with_manifest(files)
    lines = []
    for rel, data in everything.items():
        target = out / rel
        if not target.is_file():
            lines.append(f"missing: {rel}")
        elif target.read_bytes() != data:
            lines.append(f"changed: {rel}")
    for rel in sorted((_previous_files(out) or set()) - set(everything)):
        if (out / rel).is_file():
            lines.append(f"extra: {rel}")
    return lines
