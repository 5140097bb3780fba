"""When a call is tried again, and after how long: 429 and 503 answers and failed
connections, waiting at least what the farm's Retry-After asks."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The wait a Retry-After header asks for, in delay-seconds or HTTP-date form."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Retries:
    """How a call is retried.

    Every call the clients make is safe to repeat: reads and cancel are idempotent, and a
    submission carries an idempotency key that every retry reuses, so a job whose answer
    was lost is found again, never queued twice.
    """

    attempts: int = 8
    statuses: frozenset[int] = frozenset({429, 503})
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # a Retry-After beyond this is not waited out: the call fails with the farm's answer
    max_retry_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retries.attempts must be at least 1")

    def delay_s(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1` after attempt `attempt` (from 1)
        answered `response` (None: the connection failed); None: do not retry."""
        if attempt >= self.attempts:
            return None
        if response is not None and response.status_code not in self.statuses:
            return None
        asked = None if response is None else retry_after_s(response)
        if asked is not None and asked > self.max_retry_after_s:
            return None
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** min(attempt - 1, 32))
        # full jitter spreads out clients that were refused together
        return max(asked or 0.0, random.uniform(0, ceiling))
