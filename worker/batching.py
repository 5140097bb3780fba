"""Batching for concurrent callers: what several threads hand in meanwhile goes out as one.

A worker running the submit task on a thread pool has many messages in hand at once.
Each thread hands its jobs to the process's `Batcher` and waits; a flushing thread takes
whatever has gathered, up to a size, and runs it as one batch: one claim statement, one
POST to Runware, one `submitted` statement. Under light load a batch is a single job and
nothing waits; under heavy load batches grow while the previous ones are in flight, so the
round trips per job fall exactly when they cost the most.

A second flusher starts only on a full batch: while one batch is in flight, what arrives
gathers into the next instead of going out in small pieces, and only when Runware answers
too slowly for one flusher to keep up do full batches go out side by side. With `f`
flushers, batches of `n` and a round trip of `t` seconds, a process submits up to
f * n / t jobs a second.

Each caller returns only once the batches that carried its items have run, so a message
is acknowledged after its jobs were handled, as with one job per task; an exception that
ends a batch is raised in every caller with an item in it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Entry(Generic[Item]):
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Batcher(Generic[Item]):
    """Runs `handle` over batches of at most `max_size` items handed to `run` or `run_all`,
    on up to `flushers` threads at once."""

    def __init__(
        self, handle: Callable[[list[Item]], None], max_size: int, flushers: int = 1
    ) -> None:
        self._handle = handle
        self._max_size = max_size
        self._flushers = flushers
        # groups of entries handed in together, each at most max_size long
        self._pending: deque[list[_Entry[Item]]] = deque()
        self._pending_items = 0
        self._flushing = 0
        self._changed = threading.Condition()
        self._flusher_pid: int | None = None

    def run(self, item: Item) -> None:
        """Hand `item` in and wait until the batch that carried it has run."""
        self.run_all([item])

    def run_all(self, items: Sequence[Item]) -> None:
        """Hand `items` in together and wait until every batch carrying one has run; the
        first error of those batches is raised.

        Items handed in together stay together, in batches of `max_size`.
        """
        entries = [_Entry(item) for item in items]
        with self._changed:
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

    def _ensure_flushers(self) -> None:
        # threads do not survive a fork: a child that inherited this object starts its own
        if self._flusher_pid != os.getpid():
            self._flushing = 0
            for number in range(self._flushers):
                threading.Thread(
                    target=self._flush_forever, name=f"batcher-{number}", daemon=True
                ).start()
            self._flusher_pid = os.getpid()

    def _may_start(self) -> bool:
        if not self._pending_items:
            return False
        return self._flushing == 0 or self._pending_items >= self._max_size

    def _flush_forever(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(self._may_start)
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

    def _flush(self, batch: list[_Entry[Item]]) -> None:
        try:
            self._handle([entry.item for entry in batch])
        except BaseException as exc:
            # every waiter must wake and learn why, whatever ended the batch
            for entry in batch:
                entry.error = exc
        finally:
            for entry in batch:
                entry.done.set()
