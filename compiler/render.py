"""Envoy resources (data) -> file contents (bytes), per sidecar.

The bootstrap goes through the Jinja2 template, then is parsed back and
checked: a template that mangles a value fails the build, not the sidecar.
listeners.yaml, clusters.yaml and routes-<name>.yaml are file-based xDS
responses (`DiscoveryResponse`: version_info + typed resources; one route
configuration per file, as Envoy's file-based RDS requires).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2
import yaml

from compiler.emit import EnvoyMesh, SidecarConfig
from compiler.emit import names
from compiler.emit.common import TYPE_PREFIX
from compiler.serialize import Serializer

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_LISTENER_TYPE = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
_CLUSTER_TYPE = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
_ROUTE_TYPE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
_SECRET_TYPE = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"


class TemplateError(Exception):
    """A (user-supplied) template that does not render or renders something wrong."""


class Renderer:
    def __init__(self, templates: Path = DEFAULT_TEMPLATES):
        self.serializer = Serializer()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self.env.filters["json"] = self._json
        try:
            self.bootstrap = self.env.get_template("bootstrap.yaml.j2")
        except (jinja2.TemplateError, OSError, UnicodeDecodeError) as exc:  # the user's template: not UTF-8, unreadable
            raise TemplateError(f"cannot load bootstrap.yaml.j2 from {templates}: {exc}") from None
        self._typed: dict[int, tuple[dict, dict]] = {}

    def _json(self, value: object, indent: int = 0) -> str:
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()  # StrictUndefined: name the missing value
        return self.serializer.dumps(value, indent)

    def _with_type(self, resource: dict, type_url: str) -> dict:
        hit = self._typed.get(id(resource))
        if hit is None:
            hit = (resource, {"@type": type_url, **resource})
            self._typed[id(resource)] = hit
        return hit[1]

    def discovery_response(self, resources: list[dict], type_url: str) -> bytes:
        body = self.serializer.dumps([self._with_type(r, type_url) for r in resources], 2)
        version = hashlib.sha256(body.encode()).hexdigest()[:16]
        return f'{{\n  "version_info": "{version}",\n  "resources": {body}\n}}\n'.encode()

    def render_bootstrap(self, sc: SidecarConfig) -> bytes:
        try:
            text = self.bootstrap.render(p=sc.bootstrap)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"bootstrap.yaml.j2 failed for '{sc.service}': {exc}") from None
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:  # `{{ 1/0 }}` in the user's template
            raise TemplateError(f"bootstrap.yaml.j2 failed for '{sc.service}': {type(exc).__name__}: {exc}") from None
        _check_bootstrap(sc, text)
        return text.encode()

    def sidecar_files(self, sc: SidecarConfig, static: bool) -> dict[str, bytes]:
        files = {f"{sc.service}/{names.BOOTSTRAP_FILE}": self.render_bootstrap(sc)}
        if not static:
            files[f"{sc.service}/{names.LISTENERS_FILE}"] = self.discovery_response(sc.listeners, _LISTENER_TYPE)
            files[f"{sc.service}/{names.CLUSTERS_FILE}"] = self.discovery_response(sc.clusters, _CLUSTER_TYPE)
            for rc in sc.route_configs:
                files[f"{sc.service}/{names.routes_file(rc['name'])}"] = self.discovery_response([rc], _ROUTE_TYPE)
            for secret in sc.secrets:
                files[f"{sc.service}/{names.sds_file(secret['name'])}"] = self.discovery_response([secret], _SECRET_TYPE)
        return files


def _check_bootstrap(sc: SidecarConfig, text: str) -> None:
    """Parse the rendered bootstrap back; the structured values must arrive unchanged."""
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise TemplateError(f"bootstrap.yaml.j2 rendered invalid YAML for '{sc.service}': {exc}") from None
    p = sc.bootstrap
    try:
        static = doc.get("static_resources") or {}
        dynamic = doc.get("dynamic_resources") or {}
        ok = (
            doc["node"]["id"] == p.node_id
            and static.get("listeners", []) == p.listeners
            and static.get("clusters", []) == p.static_clusters
            and dynamic.get("cds_config") == p.cds_config
            and dynamic.get("lds_config") == p.lds_config
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise TemplateError(
            f"bootstrap.yaml.j2 rendered a bootstrap for '{sc.service}' whose node, listeners or clusters "
            "differ from what the compiler passed in"
        )


def render(mesh: EnvoyMesh, templates: Path = DEFAULT_TEMPLATES) -> dict[str, bytes]:
    """All files of a build, keyed by path relative to the output directory (sorted)."""
    renderer = Renderer(templates)
    files: dict[str, bytes] = {}
    for sc in mesh.sidecars:
        files.update(renderer.sidecar_files(sc, mesh.static))
    return dict(sorted(files.items()))
