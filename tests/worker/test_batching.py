"""Batched submission: the batcher's contract, and one POST carrying several jobs against a
real store and the simulator as Runware."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from core.jobs import JobState
from simulator.testing import SimulatorHandle
from worker.batching import Batcher
from worker.context import ProcessContext

PARAMS: dict[str, Any] = {"positivePrompt": "a salt cathedral", "width": 1536, "height": 1024}


def test_items_handed_in_while_a_batch_runs_go_out_together_once_each() -> None:
    first_running, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def handle(items: list[int]) -> None:
        batches.append(items)
        if len(batches) == 1:
            first_running.set()
            release.wait(10)

    batcher: Batcher[int] = Batcher(handle, max_size=4)
    first = threading.Thread(target=batcher.run, args=(0,))
    first.start()
    assert first_running.wait(10)
    returned: list[int] = []
    callers = [
        threading.Thread(target=lambda i=i: (batcher.run(i), returned.append(i)))
        for i in range(1, 10)
    ]
    for caller in callers:
        caller.start()
    # every caller waits while the first batch holds the flusher
    assert not any(c.join(0.2) or not c.is_alive() for c in callers)
    release.set()
    for thread in (first, *callers):
        thread.join(10)
    assert sorted(returned) == list(range(1, 10))
    assert batches[0] == [0]
    assert sorted(i for batch in batches[1:] for i in batch) == list(range(1, 10))
    assert all(len(batch) <= 4 for batch in batches)
    assert len(batches) == 1 + 3  # nine waiting items in batches of at most four


def test_an_error_that_ends_a_batch_is_raised_in_each_of_its_callers() -> None:
    def handle(items: list[str]) -> None:
        if "bad" in items:
            raise RuntimeError("store gone")

    batcher: Batcher[str] = Batcher(handle, max_size=8)
    with pytest.raises(RuntimeError, match="store gone"):
        batcher.run("bad")
    batcher.run("good")  # the flusher survives the failed batch


def test_items_handed_in_together_stay_together_in_batches_of_the_size() -> None:
    batches: list[list[int]] = []
    batcher: Batcher[int] = Batcher(batches.append, max_size=4, flushers=3)
    batcher.run_all(list(range(10)))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_second_flusher_starts_only_on_a_full_batch() -> None:
    running = threading.Semaphore(0)
    release = threading.Event()
    batches: list[list[int]] = []

    def handle(items: list[int]) -> None:
        batches.append(items)
        running.release()
        release.wait(10)

    batcher: Batcher[int] = Batcher(handle, max_size=3, flushers=2)
    threads = [threading.Thread(target=batcher.run, args=(0,))]
    threads[0].start()
    assert running.acquire(timeout=10)  # the first batch is in flight
    # two items wait for it: too few for a batch of their own, so the idle flusher waits
    threads += [threading.Thread(target=batcher.run, args=(i,)) for i in (1, 2)]
    for thread in threads[1:]:
        thread.start()
    assert not running.acquire(timeout=0.3)
    # a third makes a full batch, which the idle flusher sends beside the first
    threads.append(threading.Thread(target=batcher.run, args=(3,)))
    threads[-1].start()
    assert running.acquire(timeout=10)
    assert sorted(batches[1]) == [1, 2, 3]
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(batches) == 2


def _create(context: ProcessContext, count: int, params: dict[str, Any] = PARAMS) -> list[str]:
    return [
        context.store.create_job(params, tenant="acme", deadline_s=600)[0].id for _ in range(count)
    ]


def test_one_post_carries_the_batch_and_each_job_is_judged_on_its_own(
    contexts: Callable[[bool], ProcessContext],
    sim: SimulatorHandle,
    worker_app: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import tasks  # noqa: PLC0415 -- imported after worker.app is set up

    context = contexts(False)
    monkeypatch.setattr(tasks, "process_context", lambda: context)
    good = _create(context, 4)
    # bypasses our own validation, as a rule Runware tightened later would
    (bad,) = _create(context, 1, PARAMS | {"width": 100})
    already_claimed = good[0]
    assert context.store.claim(already_claimed, 0) is not None
    requests_before = sim.stats()["requests"]

    tasks.submit_batch([(job_id, 0) for job_id in [*good, bad]])

    assert sim.stats()["requests"] == requests_before + 1
    assert sim.stats()["tasks_accepted"] == 3
    states = {job_id: context.store.get(job_id).state for job_id in [*good, bad]}
    # a redelivered message for a job already claimed elsewhere claims and sends nothing
    assert states[already_claimed] is JobState.SUBMITTING
    assert [states[job_id] for job_id in good[1:]] == [JobState.SUBMITTED] * 3
    failed = context.store.get(bad)
    assert (failed.state, failed.failure_reason, failed.failure_parameter) == (
        JobState.FAILED,
        "validation",
        "width",
    )
    history = context.store.get(good[1], details=True).events
    acknowledged = [e for e in history if e.kind == "acknowledged"]
    assert acknowledged[0].detail["batch"] == 4


def test_a_batch_near_the_budget_refuses_only_the_jobs_that_do_not_fit(
    contexts: Callable[[bool], ProcessContext],
    sim: SimulatorHandle,
    worker_app: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import tasks  # noqa: PLC0415 -- imported after worker.app is set up

    context = contexts(True)  # $0.10 a day; each job is estimated at $0.045
    monkeypatch.setattr(tasks, "process_context", lambda: context)
    job_ids = _create(context, 3)

    tasks.submit_batch([(job_id, 0) for job_id in job_ids])

    states = [context.store.get(job_id).state for job_id in job_ids]
    assert states == [JobState.SUBMITTED, JobState.SUBMITTED, JobState.FAILED]
    assert context.store.get(job_ids[2]).failure_code == "dailyBudgetExceeded"
    assert sim.stats()["tasks_accepted"] == 2
