"""A Route rule's `match`: the request conditions (path, methods, headers, cookies, query) and the callers a
rule is for, with the header-name and value types the rest of the Route kind shares (compiler/policy/route.py
re-exports them). Envoy matches them on the caller's sidecar, in `RouteMatch`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from compiler.policy.base import PolicyModel
from compiler.policy.caller import Caller, normalise
from compiler.policy.regex import MAX_PROGRAM_SIZE, check_regex, cookie_regex, program_size
from compiler.policy.types import Name, NonEmpty


Regex = Annotated[str, AfterValidator(check_regex)]
"""A regular expression in RE2 syntax (Envoy's), checked with RE2 itself, within Envoy's program-size limit.
It must match the whole value."""

HeaderName = Annotated[str, Field(pattern=r"^:?[a-z0-9!#$%&'*+.^_`|~-]+$")]
"""A lowercase HTTP header name (HTTP/2 and Envoy compare them in lowercase)."""

MAX_HEADER_BYTES = 16384
"""Envoy's `HeaderValue` limit on a header's name and value (bytes, UTF-8)."""


def _changeable(name: str) -> str:
    if name.startswith(":") or name == "host":
        raise ValueError(f"'{name}' cannot be changed: Envoy refuses to add, set or remove host and :-prefixed headers "
                         "(use rewrite.host for the Host)")
    return name


ChangeableHeaderName = Annotated[HeaderName, AfterValidator(_changeable)]
"""A header name a route may add, set or remove: not `host` nor a pseudo-header such as `:path`."""


def _header_value(value: str) -> str:
    bad = next((c for c in value if c in "\0\r\n"), None)
    if bad is not None:
        raise ValueError(f"a header value cannot hold {bad!r} (Envoy refuses NUL, CR and LF)")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_HEADER_BYTES:
        raise ValueError(f"a header value of more than {MAX_HEADER_BYTES} bytes (Envoy refuses it)")
    return value


HeaderValue = Annotated[str, AfterValidator(_header_value)]
"""A header value as written: meshc escapes `%` for Envoy, so `50%` is sent as `50%`."""

Method = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
NON_IDEMPOTENT_METHODS = ("CONNECT", "PATCH", "POST")
"""Not safe to retry (the first try may have had an effect): retried only with `retries.non_idempotent`."""


class _OneOf(PolicyModel):
    """A model that takes exactly one of the fields listed in `_choices`."""

    _choices: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in self._choices if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(self._choices)}")
        return self


# --------------------------------------------------------------------------
# match
# --------------------------------------------------------------------------


class PathMatch(_OneOf):
    """Exactly one of `prefix`, `exact`, `regex` (the regex must match the whole path)."""

    _choices = ("prefix", "exact", "regex")
    prefix: str | None = Field(default=None, pattern=r"^/", description="a path must start with '/'")
    """Paths that start with this text (Envoy `prefix`: `/api` also matches `/api2`; end it with `/` for a folder).
    Must start with `/`."""
    exact: str | None = Field(default=None, pattern=r"^/")
    """Exactly this path (the query string is not part of it). Must start with `/`."""
    regex: Regex | None = None


class HeaderMatch(_OneOf):
    """A request header by `exact` value, `prefix`, `regex`, or `present: true|false` (false: absent)."""

    _choices = ("exact", "prefix", "regex", "present")
    name: HeaderName
    """The header's name, in lowercase."""
    exact: str | None = None
    """The header's value is exactly this."""
    prefix: NonEmpty | None = None
    """Not empty (Envoy's StringMatcher refuses an empty prefix; `present: true` says "any value")."""
    regex: Regex | None = None
    present: bool | None = None
    """`true`: the header is there, with any value; `false`: the header is absent."""


class QueryMatch(_OneOf):
    """A query parameter by `exact` value, `prefix`, `regex`, or `present: true`."""

    _choices = ("exact", "prefix", "regex", "present")
    name: str = Field(min_length=1)
    """The query parameter's name."""
    exact: str | None = None
    """The parameter's value is exactly this."""
    prefix: NonEmpty | None = None
    """Not empty (Envoy's StringMatcher refuses an empty prefix; `present: true` says "any value")."""
    regex: Regex | None = None
    present: Literal[True] | None = None
    """`true`: the parameter is there, with any value."""


class CookieMatch(_OneOf):
    """A cookie by `exact` value or `regex` (Envoy matches the Cookie header)."""

    _choices = ("exact", "regex")
    name: str = Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    """The cookie's name."""
    exact: str | None = Field(default=None, pattern=r"^[^;,\s]*$")
    """The cookie's value is exactly this (no `;`, `,` or white space)."""
    regex: Regex | None = None

    @field_validator("exact", "regex")
    @classmethod
    def _fits_envoy(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The Cookie-header regex meshc emits around `name=value` must fit Envoy's RE2 program-size limit."""
        name = info.data.get("name")
        if value is not None and name is not None:
            exact, regex = (value, None) if info.field_name == "exact" else (None, value)
            if exact is not None or check_regex(regex):
                size = program_size(cookie_regex(name, exact, regex))
                if size > MAX_PROGRAM_SIZE:
                    raise ValueError(
                        f"too long: the Cookie-header regex meshc emits for it is an RE2 program of size {size}, "
                        f"over Envoy's limit of {MAX_PROGRAM_SIZE}"
                    )
        return value


class Match(PolicyModel):
    """All given conditions must hold. The default matches every request."""

    path: PathMatch = PathMatch(prefix="/")
    methods: list[Method] = []
    """Any of these methods (empty: any method)."""
    headers: list[HeaderMatch] = []
    """Request headers that must all match."""
    cookies: list[CookieMatch] = []
    """Cookies that must all match (Envoy matches them in the Cookie header)."""
    query: list[QueryMatch] = []
    """Query parameters that must all match."""
    callers: list[Union[Name, Caller]] = []
    """Only calls from these callers (any of them; empty: every caller): service names, or
    `{service, versions}` (compiler/policy/caller.py). The rule is left out of other callers' sidecars."""

    @field_validator("callers", mode="after")
    @classmethod
    def _callers(cls, value: list) -> list[Caller]:
        return normalise(value)
