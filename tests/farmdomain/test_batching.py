"""The batcher's contract: concurrent callers' items go out together, each caller gets its
own items' results, and an error reaches every caller of its batch."""

from __future__ import annotations

import threading

import pytest

from farmdomain.batching import Batcher


def test_items_handed_in_while_a_batch_runs_go_out_together_once_each() -> None:
    first_running, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def handle(items: list[int]) -> list[None]:
        batches.append(items)
        if len(batches) == 1:
            first_running.set()
            release.wait(10)
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(handle, max_size=4)
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
    def handle(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("store gone")
        return [item.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(handle, max_size=8)
    with pytest.raises(RuntimeError, match="store gone"):
        batcher.run("bad")
    assert batcher.run("good") == "GOOD"  # the flusher survives the failed batch


def test_items_handed_in_together_stay_together_in_batches_of_the_size() -> None:
    batches: list[list[int]] = []

    def handle(items: list[int]) -> list[int]:
        batches.append(items)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(handle, max_size=4, flushers=3)
    assert batcher.run_all(list(range(10))) == [item * 10 for item in range(10)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_second_flusher_starts_only_on_a_full_batch() -> None:
    running = threading.Semaphore(0)
    release = threading.Event()
    batches: list[list[int]] = []

    def handle(items: list[int]) -> list[None]:
        batches.append(items)
        running.release()
        release.wait(10)
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(handle, max_size=3, flushers=2)
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


def test_a_closed_batcher_runs_what_it_holds_and_refuses_more() -> None:
    batcher: Batcher[int, int] = Batcher(
        lambda items: [i + 1 for i in items], max_size=4, flushers=2, name="closing"
    )
    assert batcher.run(1) == 2
    # taken before closing: a closed flusher may be gone by the time threads are listed
    flushers = [t for t in threading.enumerate() if t.name.startswith("closing-")]
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.run(2)
    assert len(flushers) == 2
    for thread in flushers:
        thread.join(5)
    assert not any(thread.is_alive() for thread in flushers)
