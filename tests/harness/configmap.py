"""ConfigMap and Secret volumes as kubelet writes them (its AtomicWriter), and where their content comes from.

A projected volume folder looks like this (kubelet, `kubernetes.io~configmap`):

    <dir>/..2025_01_01_12_00_00.123456789/clusters.yaml    the payload, one timestamped folder per version
    <dir>/..data -> ..2025_01_01_12_00_00.123456789         the one symlink that is swapped
    <dir>/clusters.yaml -> ..data/clusters.yaml             what the container opens

An update writes the new timestamped folder, creates `..data_tmp` pointing at
it, renames `..data_tmp` over `..data` (one atomic step: a reader sees the old
set or the new set, never a mix), adds links for new keys, removes the old
folder and the links of keys that went. Envoy's watched directory sees the
rename as a file moved into the directory it watches.

`configmap_data(out, service)` reads what kubelet would project for a sidecar:
the ConfigMap `meshc-<service>` of `out/kubernetes/<service>/configmap.yaml`
(data keys = file names, values = the exact text) when the build wrote it, else
the files of `out/<service>/` (same content, before the manifests existed).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

from .policy import load_json_yaml
from .util import HarnessError

DATA = "..data"
DATA_TMP = "..data_tmp"


def project(volume: Path, payload: dict[str, bytes], mode: int = 0o644) -> bool:
    """Write `payload` (file name -> bytes) into `volume` as kubelet does; False when nothing changed."""
    volume = Path(volume)
    volume.mkdir(parents=True, exist_ok=True)
    for name in payload:
        if "/" in name or name.startswith(".."):
            raise HarnessError(f"not a valid ConfigMap key: {name!r}")
    old_dir = current(volume)
    if old_dir is not None and _read_dir(old_dir) == payload:
        return False
    stamp = dt.datetime.now(dt.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    new_dir = volume / stamp
    for i in range(2, 100):
        if not new_dir.exists():
            break
        new_dir = volume / f"{stamp}{i}"
    new_dir.mkdir(mode=0o755)
    for name, data in sorted(payload.items()):
        f = new_dir / name
        f.write_bytes(data)
        f.chmod(mode)
    tmp_link = volume / DATA_TMP
    tmp_link.unlink(missing_ok=True)
    os.symlink(new_dir.name, tmp_link)
    os.rename(tmp_link, volume / DATA)  # the one atomic step
    for name in payload:
        link = volume / name
        if not link.is_symlink():
            os.symlink(f"{DATA}/{name}", link)
    if old_dir is not None:
        old_names = {p.name for p in old_dir.iterdir()}
        shutil.rmtree(old_dir)
        for name in old_names - set(payload):
            (volume / name).unlink(missing_ok=True)
    return True


def current(volume: Path) -> Path | None:
    """The timestamped folder `..data` points at (None before the first projection)."""
    link = Path(volume) / DATA
    return (Path(volume) / os.readlink(link)) if link.is_symlink() else None


def current_payload(volume: Path) -> dict[str, bytes]:
    folder = current(volume)
    return _read_dir(folder) if folder is not None else {}


def _read_dir(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def configmap_data(out: Path, service: str, name: str | None = None) -> dict[str, bytes]:
    """What kubelet projects for `service`'s sidecar: its ConfigMap's data (checked to be named `name`), else
    the files of out/<service>/."""
    out = Path(out)
    manifest = out / "kubernetes" / service / "configmap.yaml"
    if manifest.is_file():
        doc = load_json_yaml(manifest)
        if (doc or {}).get("kind") != "ConfigMap":
            raise HarnessError(f"{manifest}: not a ConfigMap")
        if name is not None and doc["metadata"]["name"] != name:
            raise HarnessError(f"{manifest}: ConfigMap '{doc['metadata']['name']}', the pod mounts '{name}'")
        data = doc.get("data") or {}
        binary = doc.get("binaryData") or {}
        if binary:
            raise HarnessError(f"{manifest}: binaryData is not expected in a sidecar's ConfigMap: {sorted(binary)}")
        return {k: v.encode() for k, v in data.items()}
    folder = out / service
    if not folder.is_dir():
        raise HarnessError(f"no output for sidecar '{service}' in {out}")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
