"""The webhook recorder's batches: a body the store refuses fails only its own delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from farmdomain.errors import StoreUnavailable
from farmdomain.values import IncomingResult, ParsedBody, ResultOutcome
from farmweb.recorder import WebhookRecorder
from jobstore.protocol import Store
from jobstore.results import Recorded


class _RefusingStore:
    """Records every result but refuses, as a whole call, any call carrying `refused`."""

    def __init__(self, refused: Exception) -> None:
        self.refused = refused
        self.calls: list[int] = []

    def record_results(self, incoming: Sequence[IncomingResult], _source: str) -> list[Recorded]:
        self.calls.append(len(incoming))
        if any(result.image_uuid == "poison" for result in incoming):
            raise self.refused
        return [Recorded(ResultOutcome.ACCEPTED, result.task_uuid) for result in incoming]


def _body(image_uuid: str) -> ParsedBody:
    result = IncomingResult(
        f"task-{image_uuid}", image_uuid, "https://x/a.jpg", None, 1, None, None
    )
    return ParsedBody([result], [], {result.task_uuid})


async def _record_together(store: _RefusingStore, names: list[str]) -> list[Any]:
    recorder = WebhookRecorder(cast(Store, store), list, writers=1)
    try:
        # every body is waiting before the writer starts: they are written as one batch
        return await asyncio.gather(
            *(recorder.record(_body(name)) for name in names), return_exceptions=True
        )
    finally:
        recorder.close()


def test_a_body_the_store_refuses_fails_only_its_own_delivery() -> None:
    store = _RefusingStore(ValueError("A string literal cannot contain NUL (0x00) characters."))
    answers = asyncio.run(_record_together(store, ["a", "b", "poison", "c", "d"]))
    kinds = [type(a).__name__ for a in answers]
    assert kinds == ["BodyRecorded"] * 2 + ["ValueError"] + ["BodyRecorded"] * 2
    # the batch was tried once together, then each of its bodies alone
    assert store.calls == [5, 1, 1, 1, 1, 1]


def test_a_store_outage_fails_the_whole_batch_at_once() -> None:
    store = _RefusingStore(StoreUnavailable("the job store cannot be reached"))
    answers = asyncio.run(_record_together(store, ["a", "poison", "b"]))
    assert [type(a).__name__ for a in answers] == ["StoreUnavailable"] * 3
    assert store.calls == [3]
