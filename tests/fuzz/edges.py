"""Edge values the policy models accept, as Hypothesis strategies, and the drawing context `Gen`.

Every risky value is drawn through `Gen.edge(tag, safe, risky)`: the tag records which edge a mesh used
(so a failure can be traced to it) and lets `known_open.KNOWN_OPEN` switch a branch off in the bounded
slice of `make test`, visibly, instead of deleting it from the generator.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from hypothesis import strategies as st

from fuzz.known_open import known_open

UINT32_MAX = 2**32 - 1
PROTO_DURATION_MAX_S = 315_576_000_000  # google.protobuf.Duration's largest seconds


@dataclass
class Gen:
    """One draw of a mesh: Hypothesis' `draw`, the edge tags used, and whether known-open edges are allowed."""

    draw: Callable[[st.SearchStrategy], Any]
    include_open: bool = True
    only: str | None = None
    """When set, the one tag (or tag prefix) whose risky values are drawn: isolates an edge's failures."""
    used: set[str] = field(default_factory=set)
    odds: int | None = None
    """When set (see `rarely`), risky values come about once in odds+1 draws instead of about one in nine."""

    def edge(self, tag: str, safe: st.SearchStrategy, risky: st.SearchStrategy):
        """A value from `safe`, or (sometimes) from `risky`, recording `tag` when the risky one is used."""
        if (known_open(tag) and not self.include_open) or (self.only and not tag.startswith(self.only)):
            return self.draw(safe)
        if self.only or (rare(self, self.odds) if self.odds else self.draw(st.integers(0, 11)) == 0):
            self.used.add(tag)  # rare enough that most meshes build and reach Envoy
            return self.draw(risky)
        return self.draw(safe)

    @contextmanager
    def rarely(self, odds: int = 47):
        """Risky values rarer inside: for parts drawn many times per mesh (a version's settings, the newer
        connection fields), so that adding them does not drive most meshes into positioned errors."""
        before, self.odds = self.odds, odds
        try:
            yield self
        finally:
            self.odds = before

    def maybe(self, strategy: st.SearchStrategy, p_none: int = 2):
        """None (left out of the policy) or a value: `p_none` in 1+p_none draws are None."""
        return None if self.draw(st.integers(0, p_none)) else self.draw(strategy)

    def bool(self) -> bool:
        return self.draw(st.booleans())


def rare(g: Gen, n: int) -> bool:
    """True about once in n+1 draws. Hypothesis favours the first of `sampled_from`, so the rare case goes last
    (`integers(0, n) == 0` would be true far more often: 0 is its simplest value)."""
    return g.draw(st.sampled_from([False] * n + [True]))


# -- durations -------------------------------------------------------------------------------------------

def duration_text(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def durations(lo_ms: int = 1, hi_ms: int = 60_000) -> st.SearchStrategy[str]:
    """Ordinary durations in a range, written as the language writes them."""
    return st.integers(lo_ms, hi_ms).map(duration_text)


ENVOY_DURATION_MAX_S = 9_223_372_035  # Envoy keeps durations as int64 nanoseconds

EDGE_DURATIONS = st.sampled_from(
    ["0ms", "0s", "1ms", "49ms", "50ms", "51ms", "999ms", "1s", f"{UINT32_MAX}ms", f"{UINT32_MAX + 1}ms",
     f"{UINT32_MAX + 1}s", f"{ENVOY_DURATION_MAX_S}s", f"{ENVOY_DURATION_MAX_S + 1}s", "2562047h",
     f"{PROTO_DURATION_MAX_S}s", f"{PROTO_DURATION_MAX_S + 1}s", "99999999999999h"]
)
"""Zero, 1 ms, around 50 ms, uint32 milliseconds, Envoy's and protobuf's largest durations and beyond."""

EDGE_COUNTS = st.sampled_from([1, 2, 2**31 - 1, 2**31, UINT32_MAX - 1, UINT32_MAX, UINT32_MAX, UINT32_MAX + 1, 2**63 - 1,
                               2**64, 10**30])
"""Positive integers at and around uint32/int64 boundaries (pool limits, token counts)."""

EDGE_NON_NEGATIVE = st.sampled_from([0, 1, 2**31, UINT32_MAX, UINT32_MAX, UINT32_MAX + 1, 2**64])


# -- strings ---------------------------------------------------------------------------------------------

EMOJI = "\U0001F600\U0001F680\U00010348"  # outside the basic plane (surrogate pairs in JSON escapes)
ODD_TEXT = st.sampled_from(
    ["", " ", "%", "%s%d%%", "100%", "caf\u00e9", "\u03bb\u03b1\u03bc\u03b2\u03b4\u03b1", "\U0001F600",
     f"tag-{EMOJI}", "a\rb", "a\nb", "a\x00b", "\t", "\u200b", "\ufeff", "'\"\\", "{{ x }}", "${HOME}",
     "x" * 300, "\U0001F680" * 100]
)
"""Text Envoy or YAML may trip on: empty, `%` (Envoy format strings), non-BMP, CR/LF/NUL, long."""

PLAIN_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="%"), min_size=1, max_size=12)
"""Printable ASCII but `%` (an Envoy format string in header values: an edge of its own), never empty."""

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10).map(lambda s: "x" + s)
"""Safe in every name-like place (header names, cookie names, query names, tag keys)."""

UNICODE_TEXT = st.text(min_size=0, max_size=20)
"""Any text Hypothesis likes (no surrogates): control characters, combining marks, astral planes."""


def text(g: Gen, tag: str, safe: st.SearchStrategy = PLAIN_TEXT) -> str:
    return g.edge(tag, safe, st.one_of(ODD_TEXT, UNICODE_TEXT))


# -- regexes ---------------------------------------------------------------------------------------------

SAFE_REGEXES = st.sampled_from(["/api/.*", "/v[0-9]+/items", "[a-z]+", "foo|bar", "/(a|b)/c", ".*"])

RE2_ONLY = st.sampled_from([r"\p{Greek}+", r"(?i)x", r"x\z", r"\pL+", r"[[:alpha:]]+", r"(?U)a+"])
"""Valid RE2 (Envoy accepts them); Python's `re` does not know some of them."""

PYTHON_ONLY = st.sampled_from([r"(?=a)a", r"(?!b)a", r"(?<=a)b", r"(a)\1", r"(?P<n>a)(?P=n)", r"a++", r"a*+"])
"""Python syntax RE2 refuses: lookaround, backreferences, possessive quantifiers."""

BIG_REGEXES = st.sampled_from(["a{1000}", "(" + "|".join(f"w{i}" for i in range(200)) + ")", "x" * 2000,
                               "[a-z]{100}[0-9]{100}", ""])
"""Programs beyond Envoy's RE2 size limit of 100, and the empty regex."""


def regex(g: Gen, tag: str) -> str:
    kind = g.draw(st.integers(0, 2))
    risky = [RE2_ONLY, PYTHON_ONLY, BIG_REGEXES][kind]
    return g.edge(f"{tag}.{['re2-only', 'python-only', 'big'][kind]}", SAFE_REGEXES, risky)
