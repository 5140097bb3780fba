"""Retry backoff: full jitter under an exponential cap, never shorter than Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from worker import tasks

SAMPLES = 2000


@pytest.fixture
def backoff_s() -> Callable[[int, float, float, float | None], float]:
    random.seed(1234)
    return tasks.backoff_s


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [
        (1, 1.0, 30.0, 1.0),
        (2, 1.0, 30.0, 2.0),
        (3, 1.0, 30.0, 4.0),
        (5, 1.0, 30.0, 16.0),
        (6, 1.0, 30.0, 30.0),
        (40, 1.0, 30.0, 30.0),
        (3, 0.25, 8.0, 1.0),
        (0, 1.0, 30.0, 1.0),
    ],
)
def test_backoff_stays_within_zero_and_the_capped_exponential(
    backoff_s: Callable[..., float], attempt: int, base: float, cap: float, ceiling: float
) -> None:
    samples = [backoff_s(attempt, base, cap, None) for _ in range(SAMPLES)]
    assert min(samples) >= 0.0
    assert max(samples) <= ceiling
    # full jitter spreads over the whole range, not a fixed value
    assert max(samples) > 0.9 * ceiling
    assert min(samples) < 0.1 * ceiling


@pytest.mark.parametrize("retry_after", [0.0, 0.5, 3.0, 100.0])
def test_backoff_is_never_below_retry_after(
    backoff_s: Callable[..., float], retry_after: float
) -> None:
    for attempt in (1, 2, 4, 8):
        ceiling = min(30.0, 2 ** (attempt - 1))
        for _ in range(SAMPLES // 4):
            delay = backoff_s(attempt, 1.0, 30.0, retry_after)
            assert delay >= retry_after
            assert delay <= max(retry_after, ceiling)


def test_backoff_of_a_huge_attempt_count_is_the_cap(backoff_s: Callable[..., float]) -> None:
    assert 0.0 <= backoff_s(5000, 1.0, 30.0, None) <= 30.0
