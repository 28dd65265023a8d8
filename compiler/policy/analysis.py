"""Mesh `analysis`: the thresholds of the mesh-wide resilience analysis (compiler/check/resilience.py).

These settings change no Envoy file: they decide which warnings `meshc check` and `meshc build` print
about how retries and timeouts combine along call chains (W601-W604, see the README's "Resilience
analysis").
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from compiler.policy.base import PolicyModel


class Analysis(PolicyModel):
    """Thresholds of the resilience analysis."""

    max_retry_amplification: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 10
    """W601 when one request can become more tries than this of a service deep in the mesh: the product of
    the tries (1 + retries.attempts) of every hop of a call chain. 1 warns about any retried chain."""
