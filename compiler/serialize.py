"""Plain data -> pretty JSON text, which is also YAML.

Emitted files are JSON (a subset of YAML, so Envoy reads them as .yaml):
unambiguous types (no `on`/`no` surprises), stable, and cheap to produce.
Small flat objects stay on one line; everything else is indented by two.

A `Serializer` remembers the text of every container it has written, by
identity: the emitter reuses one dict for a resource that many sidecars
share, so each shared resource is serialised once per build.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring as _utf8  # C implementation
from json.encoder import encode_basestring_ascii as _ascii  # C implementation

# What YAML (Envoy reads these files as YAML) does not allow raw in a file: C1 controls, DEL, surrogates,
# U+FFFE/U+FFFF. JSON's own escapes already cover C0 controls, quote and backslash.
# Line and paragraph separators and the byte-order mark are escaped too: some YAML parsers take them for
# line breaks or a file's start.
_NOT_YAML_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def _str(s: str) -> str:
    """A JSON string literal. Non-ASCII is written as itself (the files are UTF-8): `\\u` escapes of
    characters outside the basic plane would be surrogate pairs, which YAML parsers (Envoy's) refuse."""
    if s.isascii():
        text = _ascii(s)
        return text if "\x7f" not in text else text.replace("\x7f", "\\u007f")
    return _NOT_YAML_PRINTABLE.sub(lambda m: "\\u%04x" % ord(m.group()), _utf8(s))

INLINE_WIDTH = 80


class Serializer:
    def __init__(self) -> None:
        self._memo: dict[int, tuple[object, str]] = {}

    def dumps(self, obj: object, indent: int = 0) -> str:
        """JSON text of `obj`; lines after the first are indented by `indent` spaces."""
        text = self._enc(obj)
        return text.replace("\n", "\n" + " " * indent) if indent else text

    def _enc(self, o: object) -> str:
        t = type(o)
        if t is str:
            return _str(o)
        if t is dict or t is list:
            hit = self._memo.get(id(o))
            if hit is not None:
                return hit[1]
            text = self._container(o)
            self._memo[id(o)] = (o, text)
            return text
        if o is True:
            return "true"
        if o is False:
            return "false"
        if o is None:
            return "null"
        if t is int:
            return int.__repr__(o)
        if t is float:
            return json.dumps(o)
        raise TypeError(f"cannot serialise {t.__name__}: {o!r}")

    def _container(self, o) -> str:
        if not o:
            return "{}" if type(o) is dict else "[]"
        if type(o) is dict:
            parts = [_str(k) + ": " + self._enc(v) for k, v in o.items()]
            open_, close = "{", "}"
        else:
            parts = [self._enc(v) for v in o]
            open_, close = "[", "]"
        flat = open_ + ", ".join(parts) + close
        if len(flat) <= INLINE_WIDTH and "\n" not in flat:
            return flat
        return open_ + "\n  " + ",\n  ".join(p.replace("\n", "\n  ") for p in parts) + "\n" + close
