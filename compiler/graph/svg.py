"""DOT -> SVG with Graphviz's `dot` (Debian package `graphviz`), when it is installed."""

from __future__ import annotations

import shutil
import subprocess

PACKAGE = "graphviz"


class SvgError(Exception):
    """`dot` is missing or failed: a message for the user, not a meshc bug."""


def to_svg(dot_text: str, timeout: float = 60) -> str:
    exe = shutil.which("dot")
    if exe is None:
        raise SvgError(
            f"--format svg needs Graphviz's `dot`, which is not installed (Debian/Ubuntu: apt-get install "
            f"{PACKAGE}); or use --format dot and render it elsewhere"
        )
    try:
        done = subprocess.run(
            [exe, "-Tsvg"], input=dot_text.encode(), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SvgError(f"`dot -Tsvg` did not finish in {timeout:g}s") from None
    if done.returncode != 0:
        raise SvgError(f"`dot -Tsvg` failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()
