"""Kubernetes objects (plain data) -> YAML text that kubectl and kustomize read, the same every build.

- Keys: `apiVersion`, `kind`, `metadata`, `name` first (as people write manifests), then sorted; so the
  text depends on the data only, never on the order it was built in.
- Multi-line strings (a ConfigMap's files) are literal blocks (`|`), so a pull request shows which
  lines of a sidecar file changed.
- Strings that would read as another type (`"true"`, `"15090"`) are quoted.

A ConfigMap's `data` is written here (`_literal`): a sidecar file meshc renders is printable ASCII
text ending in one newline, which a literal block holds exactly by construction; at a thousand
services the files are hundreds of megabytes, which a YAML library would take seconds to emit. Any
other value goes through PyYAML and is parsed back and compared: text that would not mean exactly the
file fails the build instead of reaching a cluster. Everything else is small plain data (strings,
numbers, booleans, lists, maps), which PyYAML writes.
"""

from __future__ import annotations

import functools

import yaml

_FIRST = ("apiVersion", "kind", "metadata", "name")
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DATA_INDENT = "    "
_EMPTY_VALUE = ": ''\n"


class _ManifestDumper(_Dumper):  # type: ignore[misc, valid-type]
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


def _dict(dumper: yaml.SafeDumper, value: dict) -> yaml.MappingNode:
    keys = [k for k in _FIRST if k in value] + sorted(k for k in value if k not in _FIRST)
    return dumper.represent_mapping("tag:yaml.org,2002:map", [(k, value[k]) for k in keys])


_ManifestDumper.add_representer(str, _str)
_ManifestDumper.add_representer(dict, _dict)


class SerializeError(Exception):
    """A manifest whose YAML text would not read back as the object meshc built (a bug, not user error)."""


def _yaml(documents: list, explicit_start: bool = False, check: bool = False) -> str:
    text = yaml.dump_all(
        documents, Dumper=_ManifestDumper, default_flow_style=False, allow_unicode=True,
        width=2**31 - 1, indent=2, explicit_start=explicit_start,
    )
    if check and list(yaml.load_all(text, Loader=_Loader)) != list(documents):
        raise SerializeError("a Kubernetes manifest does not read back as written")
    return text


def _literal(text: str) -> str | None:
    """`|` and the text's lines indented for a ConfigMap `data` value, when a literal block holds it exactly:
    printable ASCII lines without trailing spaces, the first not indented, ending in exactly one newline
    (clip chomping keeps it). None otherwise."""
    if not (text.isascii() and text.endswith("\n") and not text.endswith("\n\n")):
        return None
    if text[0] in " \n" or " \n" in text or not text.replace("\n", "").isprintable():
        return None
    body = _DATA_INDENT + text[:-1].replace("\n", "\n" + _DATA_INDENT) + "\n"
    blank = "\n" + _DATA_INDENT + "\n"
    while blank in body:  # an empty line stays empty (no trailing spaces)
        body = body.replace(blank, "\n\n")
    return "|\n" + body


@functools.lru_cache(maxsize=256)  # the same few file names in every ConfigMap
def _key(key: str) -> str:
    """A map key as YAML (quoted when it would read as another type)."""
    return _yaml([{key: ""}], check=True).removesuffix(_EMPTY_VALUE)


def _data(data: dict[str, str]) -> str:
    out = ["data:\n"]
    for key in sorted(data):
        block = _literal(data[key])
        if block is None:  # through PyYAML, checked
            text = _yaml([{key: data[key]}], check=True).removesuffix("...\n")  # PyYAML ends a `|+` document so
            out.append("".join(f"  {line}\n" if line else "\n" for line in text.splitlines()))
        else:
            out.append(f"  {_key(key)}: {block}")
    return "".join(out)


def dumps(*documents: dict) -> bytes:
    """One or more objects as a YAML stream (documents separated by `---`)."""
    parts = []
    for doc in documents:
        data = doc.get("data") if doc.get("kind") == "ConfigMap" else None
        head = {k: v for k, v in doc.items() if k != "data"} if data is not None else doc
        text = _yaml([head], explicit_start=len(documents) > 1)
        if data is not None:
            assert all(k in _FIRST for k in head), "a ConfigMap's data must come last"
            text += _data(data)
        parts.append(text)
    return "".join(parts).encode()
