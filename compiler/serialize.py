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
from json.encoder import encode_basestring_ascii as _str  # C implementation

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
