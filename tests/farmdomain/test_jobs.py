"""The job state machine of ARCHITECTURE.md: every edge it allows, and none it does not."""

from __future__ import annotations

import itertools

import pytest

from farmdomain.jobs import TERMINAL_STATES, TRANSITIONS, JobState, sources_of

Q, SI, SD = JobState.QUEUED, JobState.SUBMITTING, JobState.SUBMITTED
OK, FAIL, CANCEL = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED

ALLOWED = {
    (Q, SI),  # claim
    (Q, CANCEL),
    (Q, FAIL),  # deadline passed while queued
    (SI, SD),  # ack
    (SI, OK),  # a webhook beat the worker's "submitted" write
    (SI, FAIL),  # permanent error
    (SI, CANCEL),
    (SD, OK),
    (SD, FAIL),
    (SD, CANCEL),
}
FORBIDDEN = set(itertools.product(JobState, JobState)) - ALLOWED


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_edge_is_in_the_table(source: JobState, target: JobState) -> None:
    assert target in TRANSITIONS[source]
    assert source in sources_of(target)


@pytest.mark.parametrize(("source", "target"), sorted(FORBIDDEN))
def test_forbidden_edge_is_not_in_the_table(source: JobState, target: JobState) -> None:
    assert target not in TRANSITIONS[source]
    assert source not in sources_of(target)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_terminal_state_has_no_way_out(state: JobState) -> None:
    assert state.terminal
    assert TRANSITIONS[state] == frozenset()


def test_terminal_states_are_exactly_succeeded_failed_canceled() -> None:
    assert {s for s in JobState if s.terminal} == {OK, FAIL, CANCEL}


@pytest.mark.parametrize(
    ("target", "sources"),
    [
        (Q, set()),
        (SI, {Q}),
        (SD, {SI}),
        (OK, {SI, SD}),
        (FAIL, {Q, SI, SD}),
        (CANCEL, {Q, SI, SD}),
    ],
)
def test_sources_of_is_the_where_clause_of_each_compare_and_set(
    target: JobState, sources: set[JobState]
) -> None:
    assert sources_of(target) == sources


def test_no_state_leads_back_to_itself() -> None:
    assert all(state not in TRANSITIONS[state] for state in JobState)
