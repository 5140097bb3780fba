"""Batching for concurrent callers: what several threads hand in meanwhile goes out as one.

A worker running the submit task on a thread pool has many messages in hand at once, and
a producer process may have many threads submitting. Each thread hands its items to the
process's `Batcher` and waits; a flushing thread takes whatever has gathered, up to a
size, and runs it as one batch: for the worker one claim statement, one POST to Runware
and one `submitted` statement; for a producer one transaction and one message. Under
light load a batch is a single item and nothing waits; under heavy load batches grow
while the previous ones are in flight, so the round trips per item fall exactly when
they cost the most.

A second flusher starts only on a full batch: while one batch is in flight, what arrives
gathers into the next instead of going out in small pieces, and only when Runware answers
too slowly for one flusher to keep up do full batches go out side by side. With `f`
flushers, batches of `n` and a round trip of `t` seconds, a process submits up to
f * n / t jobs a second.

Each caller returns only once the batches that carried its items have run, with its own
items' results, so a message is acknowledged after its jobs were handled, as with one job
per task; an exception that ends a batch is raised in every caller with an item in it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Entry(Generic[Item, Result]):
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    # empty until its batch has run: a Result may itself be None
    outcome: list[Result] = field(default_factory=list)
    error: BaseException | None = None


class Batcher(Generic[Item, Result]):
    """Runs `handle` over batches of at most `max_size` items handed to `run` or `run_all`,
    on up to `flushers` threads at once; `handle` returns a result for each item, in order."""

    def __init__(
        self,
        handle: Callable[[list[Item]], Sequence[Result]],
        max_size: int,
        flushers: int = 1,
        name: str = "batcher",
    ) -> None:
        self._handle = handle
        self._name = name
        self._max_size = max_size
        self._flushers = flushers
        # groups of entries handed in together, each at most max_size long
        self._pending: deque[list[_Entry[Item, Result]]] = deque()
        self._pending_items = 0
        self._flushing = 0
        self._changed = threading.Condition()
        self._flusher_pid: int | None = None
        self._closed = False

    def run(self, item: Item) -> Result:
        """Hand `item` in and wait until the batch that carried it has run; its result."""
        [result] = self.run_all([item])
        return result

    def run_all(self, items: Sequence[Item]) -> list[Result]:
        """Hand `items` in together and wait until every batch carrying one has run; their
        results, in order, or the first error of those batches.

        Items handed in together stay together, in batches of `max_size`.
        """
        entries: list[_Entry[Item, Result]] = [_Entry(item) for item in items]
        with self._changed:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._ensure_flushers()
            for start in range(0, len(entries), self._max_size):
                self._pending.append(entries[start : start + self._max_size])
            self._pending_items += len(entries)
            self._changed.notify_all()
        for entry in entries:
            entry.done.wait()
        for entry in entries:
            if entry.error is not None:
                raise entry.error
        return [entry.outcome[0] for entry in entries]

    def close(self) -> None:
        """Stop the flushers once what was handed in has run; `run` refuses from now on."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _ensure_flushers(self) -> None:
        # threads do not survive a fork: a child that inherited this object starts its own
        if self._flusher_pid != os.getpid():
            self._flushing = 0
            for number in range(self._flushers):
                threading.Thread(
                    target=self._flush_forever, name=f"{self._name}-{number}", daemon=True
                ).start()
            self._flusher_pid = os.getpid()

    def _may_start(self) -> bool:
        if not self._pending_items:
            return self._closed
        return self._flushing == 0 or self._pending_items >= self._max_size or self._closed

    def _flush_forever(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(self._may_start)
                if not self._pending_items:
                    return  # closed, and nothing left to run
                batch = self._pending.popleft()
                while self._pending and len(batch) + len(self._pending[0]) <= self._max_size:
                    batch = batch + self._pending.popleft()
                self._pending_items -= len(batch)
                self._flushing += 1
            try:
                self._flush(batch)
            finally:
                with self._changed:
                    self._flushing -= 1
                    self._changed.notify_all()

    def _flush(self, batch: list[_Entry[Item, Result]]) -> None:
        try:
            results = self._handle([entry.item for entry in batch])
            for entry, result in zip(batch, results, strict=True):
                entry.outcome.append(result)
        except BaseException as exc:
            # every waiter must wake and learn why, whatever ended the batch
            for entry in batch:
                entry.error = exc
        finally:
            for entry in batch:
                entry.done.set()
