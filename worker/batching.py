"""Batching for concurrent callers: what several threads hand in meanwhile goes out as one.

A worker running the submit task on a thread pool has many messages in hand at once.
Each thread hands its job to the process's `Batcher` and waits; one flushing thread takes
whatever has gathered, up to a size, and runs it as one batch: one claim statement, one
POST to Runware, one `submitted` statement. Under light load a batch is a single job and
nothing waits; under heavy load batches grow while the previous one is in flight, so the
round trips per job fall exactly when they cost the most.

Each caller returns only once its batch has run, so a message is acknowledged after its
job was handled, as with one job per task; an exception that ends the batch is raised in
every caller of that batch.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Entry(Generic[Item]):
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Batcher(Generic[Item]):
    """Runs `handle` over batches of at most `max_size` items handed to `run`."""

    def __init__(self, handle: Callable[[list[Item]], None], max_size: int) -> None:
        self._handle = handle
        self._max_size = max_size
        self._pending: queue.SimpleQueue[_Entry[Item]] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._flusher_pid: int | None = None

    def run(self, item: Item) -> None:
        """Hand `item` in and wait until the batch that carried it has run."""
        entry = _Entry(item)
        self._ensure_flusher()
        self._pending.put(entry)
        entry.done.wait()
        if entry.error is not None:
            raise entry.error

    def _ensure_flusher(self) -> None:
        # threads do not survive a fork: a child that inherited this object starts its own
        if self._flusher_pid == os.getpid():
            return
        with self._start_lock:
            if self._flusher_pid != os.getpid():
                thread = threading.Thread(target=self._flush_forever, name="batcher", daemon=True)
                thread.start()
                self._flusher_pid = os.getpid()

    def _flush_forever(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < self._max_size:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
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
