"""What the machine formats say about meshc itself: its version and, per code, a title and help."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def tool_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("meshc")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


def explain_command(code: str) -> str:
    return f"meshc explain-code {code}"


def code_help(code: str) -> tuple[str, str, str]:
    """(title, help text, help Markdown) of a code: from the code catalog (`meshc explain-code`) when it
    has the code, else a pointer to `meshc explain-code` and the README's table of codes."""
    entry = None
    try:
        from compiler import codes

        entry = codes.entry(code)
    except (ImportError, ValueError):  # no catalog, or an entry it cannot read (its own tests catch that)
        entry = None
    pointer = f"Run `{explain_command(code)}` for what it means, an example and its fix."
    if entry is None:
        text = f"meshc diagnostic {code}. See the table of codes in meshc's README (Meaning checks)."
        return f"meshc {code}", text, text
    return entry.title, f"{entry.title}. {pointer}", entry.markdown or f"{entry.title}\n\n{pointer}"
