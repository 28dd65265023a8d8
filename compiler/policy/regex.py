"""Regular expressions as Envoy reads them: RE2 syntax, checked with RE2 itself (google-re2).

Envoy compiles every `safe_regex` with RE2 (default options, errors not logged) and refuses a regex
whose compiled program is larger than `re2.max_program_size.error_level`, 100 by default (the runtime
key meshc never sets). RE2's syntax is not Python's: no lookaround, no backreferences, no possessive
quantifiers, but `\\p{Greek}`, `\\z` and `(?i)` are fine; so Python's `re` is no judge.
"""

from __future__ import annotations

import re

import re2

MAX_PROGRAM_SIZE = 100
"""Envoy's default `re2.max_program_size.error_level`: a larger RE2 program is refused."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refusal to stderr


def program_size(pattern: str) -> int:
    """The size of the RE2 program Envoy compiles for `pattern` (raises ValueError if RE2 refuses it)."""
    try:
        return re2.compile(pattern, _OPTIONS).programsize
    except UnicodeEncodeError:
        raise ValueError("a regular expression with a lone surrogate character (not text Envoy can read)") from None
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"not a regular expression Envoy (RE2) accepts: {reason}") from None


def check_regex(pattern: str, limit: int = MAX_PROGRAM_SIZE) -> str:
    """`pattern` if Envoy accepts it as a `safe_regex`; ValueError saying why not."""
    if not pattern:
        raise ValueError("an empty regular expression (Envoy refuses it; use a prefix or exact match)")
    size = program_size(pattern)
    if size > limit:
        raise ValueError(f"an RE2 program of size {size}, over Envoy's limit of {MAX_PROGRAM_SIZE}: simplify it")
    return pattern


def literal(text: str) -> str:
    """`text` as an RE2 literal (Python's escaping of ASCII punctuation is valid RE2)."""
    return re.escape(text)


def cookie_regex(name: str, exact: str | None, regex: str | None) -> str:
    """The regex meshc emits for a cookie match: Envoy has no cookie matcher, so the whole Cookie header
    is matched around `name=value`. Its program grows with the name and value: a long exact value can
    make it exceed Envoy's limit, which the policy's CookieMatch refuses."""
    value = literal(exact) if exact is not None else f"(?:{regex})"
    return rf"(?:.*;\s*)?{literal(name)}={value}(?:;.*)?"


def fullmatch(pattern: str, text: str, ignore_case: bool = False) -> bool:
    """Whether Envoy's `safe_regex` `pattern` matches all of `text` (as RBAC does, `(?i:...)` when it
    ignores case). False for a pattern RE2 refuses (the policy's own check reports it)."""
    try:
        return re2.compile(f"(?i:{pattern})" if ignore_case else pattern, _OPTIONS).fullmatch(text) is not None
    except (re2.error, UnicodeEncodeError):
        return False
