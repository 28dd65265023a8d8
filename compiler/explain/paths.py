"""What a sidecar's HTTP listener does to a request path before routes and filters see it (Mesh `paths`).

Envoy's `path_with_escaped_slashes_action` first (`%2F`/`%5C` in any case: 400, a 307 to the decoded path,
decoded, or kept), then `normalize_path` (escaped unreserved characters decoded, `\\` read as `/`, dot
segments, `%2E` included, resolved) and `merge_slashes`. The query string is left as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.ir import PathNormalization

_ESCAPED_SLASH = re.compile(r"%2f|%5c", re.IGNORECASE)
_UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Normalised:
    path: str  # the path (with its query) every later step sees
    status: int | None  # 400 (reject) or 307 (redirect): the listener answers
    note: str


def _decode_unreserved(path: str) -> str:
    def one(m):
        ch = chr(int(m.group(1), 16))
        return ch if ch.isascii() and (ch.isalnum() or ch in "-._~") else m.group(0)  # other escapes kept as written

    return _UNRESERVED.sub(one, path)


def _resolve(path: str) -> str:
    path = _decode_unreserved(path).replace("\\", "/")
    out: list[str] = []
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    resolved = "/" + "/".join(out)
    return re.sub(r"/{2,}", "/", resolved)


def normalise(paths: PathNormalization, target: str) -> Normalised:
    path, sep, query = target.partition("?")
    mode = paths.escaped_slashes
    escaped = bool(_ESCAPED_SLASH.search(path))
    if escaped and mode == "reject":
        return Normalised(target, 400, f"escaped slash in {path}: refused (escaped_slashes: reject)")
    if escaped and mode in ("redirect", "decode"):
        decoded = _ESCAPED_SLASH.sub(lambda m: "/" if m.group(0).lower() == "%2f" else "\\", path)
        new = _resolve(decoded) + sep + query
        if mode == "redirect":
            return Normalised(new, 307, f"escaped slash in {path}: redirected to {new} (escaped_slashes: redirect)")
        return Normalised(new, None, f"escaped slashes decoded: {path} -> {new} (escaped_slashes: decode)")
    new = _resolve(path) + sep + query
    if new != target:
        return Normalised(new, None, f"normalised {path} -> {_resolve(path)} (dot segments, merged slashes)")
    return Normalised(target, None, "")
