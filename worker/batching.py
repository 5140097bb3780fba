"""Batching for concurrent callers: what several threads hand in meanwhile goes out as one.

A worker running the submit task on a thread pool has many messages in hand at once.
Each thread hands its jobs to the process's `Batcher` and waits; a flushing thread takes
whatever has gathered, up to a size, and runs it as one batch: one claim statement, one
POST to Runware, one `submitted` statement. Under light load a batch is a single job and
nothing waits; under heavy load batches grow while the previous ones are in flight, so the
round trips per job fall exactly when they cost the most.

Several flushers run at once, so one slow POST does not hold up the process: with `f`
flushers, batches of `n` and a Runware round trip of `t` seconds, a process submits up
to f * n / t jobs a second.

Each caller returns only once the batches that carried its items have run, so a message
is acknowledged after its jobs were handled, as with one job per task; an exception that
ends a batch is raised in every caller with an item in it.
"""

from __future__ import annotations

import os
import queue
import threading
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
        self._pending: queue.SimpleQueue[list[_Entry[Item]]] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
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
        self._ensure_flushers()
        for start in range(0, len(entries), self._max_size):
            self._pending.put(entries[start : start + self._max_size])
        for entry in entries:
            entry.done.wait()
        for entry in entries:
            if entry.error is not None:
                raise entry.error

    def _ensure_flushers(self) -> None:
        # threads do not survive a fork: a child that inherited this object starts its own
        if self._flusher_pid == os.getpid():
            return
        with self._start_lock:
            if self._flusher_pid != os.getpid():
                for number in range(self._flushers):
                    threading.Thread(
                        target=self._flush_forever, name=f"batcher-{number}", daemon=True
                    ).start()
                self._flusher_pid = os.getpid()

    def _flush_forever(self) -> None:
        carried: list[_Entry[Item]] = []
        while True:
            batch = carried or self._pending.get()
            carried = []
            while len(batch) < self._max_size:
                try:
                    group = self._pending.get_nowait()
                except queue.Empty:
                    break
                if len(batch) + len(group) > self._max_size:
                    carried = group  # the next batch of this flusher starts with it
                    break
                batch = batch + group
            self._flush(batch)

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
