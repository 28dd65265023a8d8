"""Small builders shared by the resource emitters."""

from __future__ import annotations

from compiler.diagnostics import Source

TYPE_PREFIX = "type.googleapis.com/"


def typed(type_name: str, **fields) -> dict:
    """An `Any`-typed config: `{"@type": "type.googleapis.com/<type_name>", ...}`."""
    return {"@type": TYPE_PREFIX + type_name, **fields}


def socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def provenance(source: Source, **extra: str) -> dict:
    """`metadata.filter_metadata.meshc`: the policy place a resource came from, by anchor (no line: see sourcemap.json)."""
    return {"filter_metadata": {"meshc": {"source": source.short, **extra}}}


def file_source(path: str, directory: str) -> dict:
    """A file-based xDS config source, reloaded when a file is moved into `directory`."""
    return {
        "path_config_source": {"path": path, "watched_directory": {"path": directory}},
        "resource_api_version": "V3",
    }
