"""Retry delays shared by the worker's tasks."""

from __future__ import annotations

import random


def backoff_s(attempt: int, base_s: float, cap_s: float, retry_after: float | None) -> float:
    """Full-jitter exponential backoff, never shorter than the server's Retry-After."""
    # the exponent is bounded: past the cap it changes nothing, and 2**1024 overflows a float
    ceiling = min(cap_s, base_s * 2 ** min(max(0, attempt - 1), 64))
    return max(retry_after or 0.0, random.uniform(0, ceiling))
