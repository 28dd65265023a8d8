"""The text format: one line per diagnostic, `file:line:column: error[CODE]: subject path: message`, sorted,
then the counts when there are errors. Printed on stderr, exactly as `meshc check` always printed it."""

from __future__ import annotations

from compiler.diagnostics import Diagnostic


def lines(diags: list[Diagnostic], root: str) -> list[str]:
    out = [d.render(root) for d in sorted(diags, key=Diagnostic.sort_key)]
    count = summary(diags)
    return out + [count] if count else out


def summary(diags: list[Diagnostic]) -> str:
    """`2 error(s), 1 warning(s); nothing written`, or "" without errors (warnings alone fail nothing)."""
    errors = sum(d.is_error for d in diags)
    if not errors:
        return ""
    return f"{errors} error(s), {len(diags) - errors} warning(s); nothing written"
