"""Value types of the policy language: names, ports, durations, endpoints.

Each is parsed once, at load time, into a typed value, so later stages never
re-parse strings.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import AfterValidator, Field, GetCoreSchemaHandler, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError, core_schema

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

Name = Annotated[
    str,
    Field(
        strict=True,
        pattern=_NAME_RE.pattern,
        description="A DNS label: lowercase letters, digits and '-', starting with a letter, "
        "at most 63 characters. Names become file paths and Envoy names, so nothing else is allowed.",
    ),
]
"""A DNS-label-like name (services, versions, the mesh)."""

Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
"""A TCP port, 1-65535."""

Percent = Annotated[int, Field(strict=True, ge=0, le=100)]
"""A whole percentage, 0-100."""

PER_MILLION = 10_000
"""Millionths in one percent: Envoy's finest fraction (`denominator: MILLION`) is 0.0001 %."""


def _percentage(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("percentage_type", "expected a number from 0 to 100, e.g. 10 or 0.1")
    if not 0 <= value <= 100:  # NaN fails too
        raise PydanticCustomError("percentage_range", "{value} is not a percentage from 0 to 100", {"value": value})
    if isinstance(value, float):
        if value != round(value, 4):
            raise PydanticCustomError(
                "percentage_decimals",
                "{value}: at most 4 decimals (Envoy counts in millionths: 0.0001 is one request in a million)",
                {"value": f"{value:.12f}".rstrip("0")},
            )
        if value.is_integer():
            return int(value)  # 10.0 is 10: whole percentages stay whole in the output
    return value


Percentage = Annotated[
    Union[int, float],
    PlainValidator(_percentage),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 100}),  # at most 4 decimals (checked here)
]
"""A percentage, 0-100, whole (`10`) or with up to 4 decimals (`0.1`, `0.0001`: one in a million).

Whole values are kept as `int` and emitted as Envoy `HUNDRED` fractions; others are `float` and emitted
in millionths (`MILLION`)."""


def per_million(percent: int | float) -> int:
    """A Percentage in millionths (exact: it has at most 4 decimals)."""
    return round(percent * PER_MILLION)


def is_whole(percent: int | float) -> bool:
    return isinstance(percent, int) or float(percent).is_integer()


def percent_text(percent: int | float) -> str:
    """`10`, `0.1`, `100.0001`: as written, without float noise."""
    return f"{percent:.4f}".rstrip("0").rstrip(".")


def _text_value_schema(cls, what: str, type_message: str):
    """pydantic schema for a value type written as text and parsed once by `cls.parse`."""

    def validate(value: Any):
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise PydanticCustomError(f"{what}_type", type_message)
        try:
            return cls.parse(value)
        except ValueError as exc:
            raise PydanticCustomError(f"{what}_format", str(exc)) from None

    return core_schema.no_info_plain_validator_function(
        validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
    )


_DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h)$")
MAX_DURATION_MS = 9_223_372_035_999
"""Envoy refuses a duration of 9,223,372,036 s or more (it converts durations to int64 nanoseconds),
well under protobuf's own maximum of 315,576,000,000 s."""
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


@dataclass(frozen=True, order=True)
class Duration:
    """A duration, written `250ms`, `2s`, `1m` or `1h`; stored as milliseconds."""

    ms: int

    @classmethod
    def parse(cls, text: str) -> "Duration":
        m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
        if not m:
            raise ValueError(f"invalid duration {text!r}: write a whole number with a unit, e.g. 250ms, 2s, 1m, 1h")
        ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
        if ms > MAX_DURATION_MS:
            raise ValueError(f"{text.strip()} is longer than Envoy accepts (at most {MAX_DURATION_MS // 1000}s, 292 years)")
        return cls(ms)

    def proto(self) -> str:
        """Protobuf JSON form, as Envoy reads it: '0.250s', '5s'."""
        seconds, millis = divmod(self.ms, 1000)
        return f"{seconds}s" if millis == 0 else f"{seconds}.{millis:03d}s"

    def __str__(self) -> str:
        for unit in ("h", "m", "s"):
            if self.ms % _UNIT_MS[unit] == 0 and self.ms:
                return f"{self.ms // _UNIT_MS[unit]}{unit}"
        return f"{self.ms}ms"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        return _text_value_schema(cls, "duration", "expected a duration string such as 250ms, 2s or 1m")


def _positive(value: Duration) -> Duration:
    if value.ms <= 0:
        raise ValueError("must be longer than 0 (Envoy refuses 0 here)")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
"""A duration Envoy requires to be greater than 0 (its proto says `gt: {}`)."""


def duration_at_least(floor_ms: int, why: str):
    """A Duration of at least `floor_ms` milliseconds (`why`: the Envoy rule)."""

    def check(value: Duration) -> Duration:
        if value.ms < floor_ms:
            raise ValueError(f"must be at least {Duration(floor_ms)}: {why}")
        return value

    return Annotated[Duration, AfterValidator(check)]


def duration_at_most(limit_ms: int, why: str):
    """A Duration of at most `limit_ms` milliseconds (`why`: the Envoy rule)."""

    def check(value: Duration) -> Duration:
        if value.ms > limit_ms:
            raise ValueError(f"must be at most {Duration(limit_ms)}: {why}")
        return value

    return Annotated[Duration, AfterValidator(check)]


def _one_line(text: str) -> str:
    bad = next((c for c in text if c in "\0\r\n"), None)
    if bad is not None:
        raise ValueError(f"cannot hold {bad!r} (Envoy refuses NUL, CR and LF here)")
    return text


OneLine = Annotated[str, AfterValidator(_one_line)]
"""Text Envoy puts into a request line or header (a rewritten path, a redirect): no NUL, CR or LF."""


def _not_empty(text: str) -> str:
    if not text:
        raise ValueError("cannot be empty (Envoy refuses it)")
    return text


NonEmpty = Annotated[str, AfterValidator(_not_empty)]
"""Text Envoy requires at least one character of."""


UINT32_MAX = 2**32 - 1
UInt32 = Annotated[int, Field(strict=True, ge=0, le=UINT32_MAX)]
"""A count Envoy keeps in a uint32 field: 0 to 4,294,967,295."""
PositiveUInt32 = Annotated[int, Field(strict=True, ge=1, le=UINT32_MAX)]
"""A count Envoy keeps in a uint32 field, at least 1."""


_HOST_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True, order=True)
class Endpoint:
    """`host:port` of one instance. The host is an IP address (IPv6 in brackets) or a DNS name."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        if not isinstance(text, str):
            raise ValueError("expected 'host:port'")
        m = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(\d+)$", text) or re.match(r"^([^:\[\]]+):(\d+)$", text)
        if not m:
            raise ValueError(f"invalid endpoint {text!r}: write host:port, e.g. 127.0.0.1:8080 or [::1]:8080")
        host, port = m.group(1), int(m.group(2))
        if not 1 <= port <= 65535:
            raise ValueError(f"invalid endpoint {text!r}: port {port} is outside 1-65535")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if ":" in host or not _HOST_RE.match(host):
                raise ValueError(f"invalid endpoint {text!r}: {host!r} is neither an IP address nor a DNS name") from None
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        return _text_value_schema(cls, "endpoint", "expected 'host:port'")


def _validate_ip(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("ip_type", "expected an IP address string")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise PydanticCustomError("ip_format", "'{value}' is not an IP address", {"value": value}) from None


class _IP:
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        return core_schema.no_info_plain_validator_function(_validate_ip)


IPAddress = Annotated[str, _IP]
"""An IPv4 or IPv6 address, normalised."""


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def is_wildcard(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified

