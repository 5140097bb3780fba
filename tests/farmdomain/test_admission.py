"""Admission's order between tenants and inside one, and the adaptive limit."""

from __future__ import annotations

from collections import Counter

import pytest

from farmdomain.admission import AdaptiveLimit, FairShare, Waiting


def backlog(tenant: str, count: int, priority: int = 0) -> list[Waiting]:
    return [Waiting(tenant, f"{tenant}-{n}", priority) for n in range(count)]


def test_a_newcomer_is_admitted_at_once_despite_a_huge_backlog_ahead_of_it() -> None:
    share = FairShare()
    share.admit(backlog("a", 10_000), 500)  # a has been running alone for a while
    admitted = share.admit([*backlog("a", 10_000), *backlog("b", 100)], 20)
    assert Counter(job.tenant for job in admitted) == {"a": 10, "b": 10}


def test_weights_three_to_one_give_admissions_three_to_one() -> None:
    share = FairShare(weights={"a": 3.0, "b": 1.0})
    given: Counter[str] = Counter()
    for _ in range(50):
        given.update(job.tenant for job in share.admit([*backlog("a", 100), *backlog("b", 100)], 8))
    assert given == {"a": 300, "b": 100}


def test_a_tenant_back_from_idleness_banks_no_credit() -> None:
    share = FairShare()
    share.admit(backlog("b", 10), 10)
    share.admit(backlog("a", 1000), 500)  # b idle meanwhile
    admitted = share.admit([*backlog("a", 1000), *backlog("b", 1000)], 100)
    assert Counter(job.tenant for job in admitted) == {"a": 50, "b": 50}


def test_inside_a_tenant_higher_priority_goes_first() -> None:
    jobs = [Waiting("a", "low", 0, 1.0), Waiting("a", "high", 5, 0.0)]
    assert [job.job_id for job in FairShare().admit(jobs, 2)] == ["high", "low"]


def test_a_low_priority_job_that_waited_long_overtakes_fresh_high_priority_ones() -> None:
    jobs = [Waiting("a", "old-low", 0, 600.0), *backlog("a", 10, priority=5)]
    assert FairShare(aging_s=60.0).admit(jobs, 1)[0].job_id == "old-low"


def test_no_slots_or_no_work_admits_nothing() -> None:
    assert FairShare().admit(backlog("a", 5), 0) == []
    assert FairShare().admit([], 5) == []


def test_overload_halves_the_limit_and_acknowledgements_climb_back_to_the_cap() -> None:
    limit = AdaptiveLimit(cap=20)
    limit.overloaded(now=0.0)
    assert limit.allowed(0.0) == 10
    limit.overloaded(now=0.0)
    limit.overloaded(now=0.0)
    limit.overloaded(now=0.0)
    limit.overloaded(now=0.0)
    assert limit.allowed(0.0) == 1  # never below the floor
    limit.acknowledged(1000)
    assert limit.allowed(0.0) == 20  # never above the cap


def test_retry_after_admits_nothing_until_it_has_passed() -> None:
    limit = AdaptiveLimit(cap=20)
    limit.overloaded(now=100.0, retry_after_s=5.0)
    assert limit.free(in_flight=0, now=104.9) == 0
    assert limit.free(in_flight=3, now=105.0) == 7


def test_a_limit_that_cannot_work_names_the_field() -> None:
    with pytest.raises(ValueError, match="cap"):
        AdaptiveLimit(cap=0)
    with pytest.raises(ValueError, match="floor"):
        AdaptiveLimit(cap=5, floor=6)
