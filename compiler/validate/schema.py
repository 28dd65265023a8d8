"""Offline schema check with envoy-data-plane (betterproto2 messages).

Slow (seconds per thousand resources), so it runs in `meshc validate`, not
in `meshc build`.

Work-around, in this one place: envoy-data-plane 2.2.0 parses dict keys
through betterproto2's `safe_snake_case`, which turns `consecutive_5xx` into
`consecutive_5_xx` and so rejects every proto field whose name mixes digits
and letters (even its own `to_dict` output). While `_proto_field_names()` is
active, keys that already are snake_case are taken as the proto field name
they are; anything else goes through the library's own conversion.
tests/test_schema.py proves both the bug and the fix, so an upgrade that
fixes it upstream is noticed.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import threading
from dataclasses import dataclass
from typing import Iterator

import betterproto2
from betterproto2.casing import sanitize_name

_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_lock = threading.Lock()


@contextlib.contextmanager
def _proto_field_names() -> Iterator[None]:
    original = betterproto2.safe_snake_case

    def field_name(key: str) -> str:
        return sanitize_name(key) if _SNAKE.match(key) else original(key)

    with _lock:
        betterproto2.safe_snake_case = field_name
        try:
            yield
        finally:
            betterproto2.safe_snake_case = original


def message_class(type_name: str):
    """'envoy.config.cluster.v3.Cluster' -> the envoy-data-plane class (imports and registers it)."""
    package, _, name = type_name.rpartition(".")
    module = importlib.import_module(f"envoy_data_plane.{package}")
    return getattr(module, name)


def _register_any_types(data) -> None:
    """Import the module of every `@type` inside `data`, so `Any` can unpack it."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            url = node.get("@type")
            if isinstance(url, str) and "/" in url:
                try:
                    message_class(url.rsplit("/", 1)[1])
                except (ImportError, AttributeError):
                    pass  # reported by from_dict as an unregistered type
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


@dataclass(frozen=True)
class SchemaError:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def parse(type_name: str, data: dict):
    """Parse `data` into the Envoy message `type_name`; raises on unknown fields or wrong types."""
    cls = message_class(type_name)
    _register_any_types(data)
    with _proto_field_names():
        return cls.from_dict(data)


def check_message(type_name: str, data: dict, where: str) -> list[SchemaError]:
    try:
        parse(type_name, data)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # OverflowError: a duration past what Python's timedelta holds (a hand-edited "359999999996400000s")
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return [SchemaError(where, f"{type_name}: {message}")]
    return []


def check_discovery_response(data: dict, where: str, expected_type: str) -> list[SchemaError]:
    errors: list[SchemaError] = []
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        return [SchemaError(where, "not a discovery response (needs 'version_info' and a 'resources' list)")]
    for i, resource in enumerate(data["resources"]):
        name = resource.get("name", "?") if isinstance(resource, dict) else "?"
        at = f"{where}: resources[{i}] '{name}'"
        url = resource.get("@type", "") if isinstance(resource, dict) else ""
        if url.rsplit("/", 1)[-1] != expected_type:
            errors.append(SchemaError(at, f"expected @type {expected_type}, got {url!r}"))
            continue
        body = {k: v for k, v in resource.items() if k != "@type"}
        errors.extend(check_message(expected_type, body, at))
    return errors


def check_sidecar_dir(sidecar_dir, load_yaml) -> list[SchemaError]:
    """Schema-check one sidecar's output folder (bootstrap, listeners, clusters, route and secret files)."""
    name = sidecar_dir.name
    files = [("bootstrap.yaml", "envoy.config.bootstrap.v3.Bootstrap", False)]
    if (sidecar_dir / "listeners.yaml").exists():
        files.append(("listeners.yaml", "envoy.config.listener.v3.Listener", True))
    if (sidecar_dir / "clusters.yaml").exists():
        files.append(("clusters.yaml", "envoy.config.cluster.v3.Cluster", True))
    for path in sorted(sidecar_dir.glob("routes-*.yaml")):
        files.append((path.name, "envoy.config.route.v3.RouteConfiguration", True))
    for path in sorted(sidecar_dir.glob("sds-*.yaml")):
        files.append((path.name, "envoy.extensions.transport_sockets.tls.v3.Secret", True))
    errors: list[SchemaError] = []
    for file, type_name, is_response in files:
        where = f"{name}/{file}"
        try:
            data = load_yaml(sidecar_dir / file)
        except Exception as exc:  # noqa: BLE001 - a missing or unparsable file is a finding
            errors.append(SchemaError(where, f"cannot read: {exc}"))
            continue
        if not is_response:
            errors.extend(check_message(type_name, data, where))
            continue
        errors.extend(check_discovery_response(data, where, type_name))
        if file.startswith(("routes-", "sds-")) and len(data.get("resources") or []) != 1:
            errors.append(SchemaError(where, "a file-based xDS source needs exactly one resource per file"))
    return errors
