"""Policies -> output directory: write policy documents as YAML, compile them, read the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from compiler.build import BuildOptions, BuildResult, build
from compiler.write import write

from .util import HarnessError


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def policy_yaml(documents: Iterable[Any]) -> str:
    """Policy documents (models or plain dicts) as one multi-document YAML text.

    A model is written with the fields that were given, as a person would write it: a default
    written out explicitly can be refused where it would do nothing (e.g. E280 retry_budget).
    """
    docs = []
    for d in documents:
        if isinstance(d, dict):
            docs.append(d)
        else:
            docs.append({"kind": d.kind, **d.model_dump(mode="json", exclude_none=True, exclude_unset=True)})
    return yaml.safe_dump_all(docs, sort_keys=False)


def write_policy(policy_dir: Path, documents: Iterable[Any] | str, filename: str = "mesh.yaml") -> Path:
    """Write the policy (documents, or YAML text) as `policy_dir/filename`; returns the file."""
    policy_dir = Path(policy_dir)
    policy_dir.mkdir(parents=True, exist_ok=True)
    text = documents if isinstance(documents, str) else policy_yaml(documents)
    path = policy_dir / filename
    path.write_text(text)
    return path


def compile_policy(policy_dir: Path, out: Path, *, static: bool = False, **options: Any) -> BuildResult:
    """`meshc build POLICY_DIR -o OUT --config-root OUT [--static]`, in process.

    Other keyword arguments are further `BuildOptions` fields (e.g. `certs_root=...`
    for `--certs-root`); `config_root` defaults to OUT.
    Fails the test with the rendered diagnostics if the build has errors.
    Writing into an existing OUT updates it file by file, in the writer's steps (what a hot
    reload sees); what that meant for each sidecar is `result.rollout` (compiler.rollout.Rollout).
    """
    out = Path(out)
    options.setdefault("config_root", str(out))
    build_options = BuildOptions(static=static, **options)
    result = build(Path(policy_dir), build_options)
    if not result.ok:
        text = "\n".join(d.render(str(policy_dir)) for d in result.diagnostics)
        raise HarnessError(f"the test policy does not compile:\n{text}")
    result.rollout = write(result.files, out, build_options.settings)  # type: ignore[attr-defined]
    return result


def load_json_yaml(path: Path) -> Any:
    return yaml.load(Path(path).read_text(), Loader=_Loader)


def resource_names(path: Path) -> list[str]:
    """Names of the resources in a file-based xDS response (clusters.yaml, routes.yaml)."""
    return [r["name"] for r in (load_json_yaml(path) or {}).get("resources", [])]
