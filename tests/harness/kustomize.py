"""The Kubernetes output as the manifest tests render it: built from a policy text, written to `out/`,
rendered by the real kustomize (kubectl's, no network) through the README's overlay (base + the user's
Deployments + the sidecar Component), and validated against the Kubernetes API schemas. No cluster.

- `build_files(tmp, text)`: the built files (asserting the build is clean); `build_policy` the result.
- `write_out(files, out)`, `overlay(tmp, out, deployments)`, `kustomize(overlay)`, and `render(tmp, files,
  deployments)` for all three; `validate(objects)` strict for every version in `VERSIONS`.
- `find(objects, kind, name, namespace)`: the one object of that kind and name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate  # test extra (pyproject.toml)
import pytest
import yaml

from compiler.build import BuildOptions, build

VERSIONS = ("1.31.0", "1.30.0")
"""README "Kubernetes output": the version stated, and the oldest the output is for (native sidecars and
the preStop `sleep` action are on by default from there)."""


def build_policy(tmp_path: Path, text: str, name: str = "policy", options: BuildOptions = BuildOptions()):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "mesh.yaml").write_text(text)
    return build(folder, options)


def build_files(tmp_path: Path, text: str, name: str = "policy") -> dict[str, bytes]:
    result = build_policy(tmp_path, text, name)
    assert result.ok, [d.render() for d in result.diagnostics]
    return result.files


def write_out(files: dict[str, bytes], out: Path) -> None:
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)


def kubectl() -> list[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed (its built-in kustomize renders the output): install it (apt-get install kubectl)")
    # Without any network: a network namespace of our own when we may make one (root), else as is.
    isolated = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    return ["unshare", "-n", kubectl] if isolated else [kubectl]


def kustomize(overlay: Path) -> list[dict]:
    done = subprocess.run([*kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def overlay(tmp_path: Path, out: Path, deployments: str) -> Path:
    """The README's overlay of `out/kubernetes/` with the user's `deployments`."""
    folder = tmp_path / "overlay"
    folder.mkdir()
    (folder / "deployments.yaml").write_text(deployments)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n- {os.path.relpath(out / 'kubernetes', folder)}\n- deployments.yaml\n"
        f"components:\n- {os.path.relpath(out / 'kubernetes' / 'sidecar', folder)}\n"
    )
    return folder


def render(tmp_path: Path, files: dict[str, bytes], deployments: str) -> list[dict]:
    """`files` written to `tmp_path/out`, rendered through the overlay with `deployments`."""
    out = tmp_path / "out"
    write_out(files, out)
    return kustomize(overlay(tmp_path, out, deployments))


def validate(objects: list[dict], versions: tuple[str, ...] = VERSIONS) -> None:
    for version in versions:
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError


def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    """The one object of `kind` named `name` (in `namespace`, when given)."""
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, (kind, name, [(o["kind"], o["metadata"]["name"]) for o in objects])
    return hits[0]
