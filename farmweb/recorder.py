"""Webhook bodies written to the store in batches, from the web process's event loop.

Runware POSTs one webhook per image, so a busy farm receives many at once. Each receiver
awaits its body's outcomes here; a writer takes every body waiting (up to a batch) and
records them with one store call, a single statement on PostgreSQL, while the next bodies
gather. Alone, a body is written at once; under load, the store's round trips and commits
per image fall as the batches grow. The wait costs no thread: only the writers hold one,
each with a pooled connection. The writers' threads are their own, so webhooks never queue
behind the job API's calls for the shared thread pool.

Before a batch is written, each body's claims are judged against what the store knows of
its task (farmdomain.claims), with one read for the whole batch: a body refused there gets
its WebhookRejected and the others are written.

Every receiver gets its own body's outcomes or the error that ended its batch: a store
outage ends the whole batch, any other error only the body that caused it; a receiver
whose client left still has its body written, since Runware will send it again anyway and
recording is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from farmdomain import metrics
from farmdomain.claims import ClaimRules
from farmdomain.errors import WebhookRejected
from farmdomain.request_schema import MODEL_ID
from farmdomain.values import BodyRecorded, ParsedBody, ResultOutcome, utcnow
from farmweb import outage
from jobstore.bodies import record_many
from jobstore.claims import task_facts
from jobstore.protocol import Store

_Waiting = tuple[ParsedBody, "asyncio.Future[BodyRecorded]"]
# told of every batch once it is committed (copy requests hang here)
AfterRecording = Callable[[Sequence[ParsedBody], Sequence[BodyRecorded]], None]


# each body as the farm believes it, or why it is refused
Judge = Callable[[Sequence[ParsedBody]], list[ParsedBody | WebhookRejected]]


def _nothing(_bodies: Sequence[ParsedBody], _done: Sequence[BodyRecorded]) -> None:
    pass


def judged_by_claims(
    store: Store, rules: ClaimRules, clock: Callable[[], datetime] = utcnow
) -> Judge:
    """A Judge holding each body to `rules` against the store's facts of its task."""

    def judge(bodies: Sequence[ParsedBody]) -> list[ParsedBody | WebhookRejected]:
        facts = task_facts(store.engine, {task for body in bodies for task in body.task_uuids})
        now = clock()
        seen: dict[str, set[str]] = {}
        judged: list[ParsedBody | WebhookRejected] = []
        for body in bodies:
            # the receiver lets through only bodies naming the task of their URL (or none)
            task = next(iter(body.task_uuids), "")
            try:
                judged.append(rules.judge(body, facts.get(task), now, seen.setdefault(task, set())))
            except WebhookRejected as exc:
                judged.append(exc)
        return judged

    return judge


class WebhookRecorder:
    """Records parsed webhook bodies in batches of up to `max_batch`, on `writers`
    threads at most."""

    def __init__(
        self,
        store: Store,
        judge: Judge,
        max_batch: int = 100,
        writers: int = 2,
        after: AfterRecording = _nothing,
    ) -> None:
        self._store = store
        self._judge = judge
        self._after = after
        self._max_batch = max_batch
        self.writers = writers
        self._busy_writers = 0
        self._waiting: list[_Waiting] = []
        # the loop keeps only weak references to tasks: these keep the writers alive
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = ThreadPoolExecutor(writers, thread_name_prefix="webhook-writer")

    async def record(self, body: ParsedBody) -> BodyRecorded:
        """Write `body` with whatever else is waiting; what it did."""
        outcome: asyncio.Future[BodyRecorded] = asyncio.get_running_loop().create_future()
        self._waiting.append((body, outcome))
        if self._busy_writers < self.writers:
            self._busy_writers += 1
            task = asyncio.create_task(self._write_while_waiting())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shielded: a receiver cancelled by its client's disconnect leaves the future to
        # its writer, which still sets it
        return await asyncio.shield(outcome)

    async def _write_while_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write(batch)
        finally:
            self._busy_writers -= 1

    async def _write(self, batch: list[_Waiting]) -> None:
        bodies = [body for body, _ in batch]
        try:
            outcomes = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._record_many, bodies
            )
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, outage.STORE_DOWN):
                # one body the store refuses must not fail the others it was batched with:
                # each is written again alone, and only the one at fault gets the error
                for waiting in batch:
                    await self._write([waiting])
                return
            # each receiver answers for itself (a 503 asks Runware to deliver again)
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), own in zip(batch, outcomes, strict=True):
            if isinstance(own, WebhookRejected):
                future.set_exception(own)
            else:
                future.set_result(own)

    def _record_many(self, bodies: list[ParsedBody]) -> list[BodyRecorded | WebhookRejected]:
        judged = self._judge(bodies)
        believed = [body for body in judged if not isinstance(body, WebhookRejected)]
        done = record_many(self._store, believed, "webhook")
        _count_unconfirmed(believed, done)
        self._after(believed, done)
        recorded = iter(done)
        return [body if isinstance(body, WebhookRejected) else next(recorded) for body in judged]

    def close(self) -> None:
        """Let the writer threads go once their batches are written."""
        self._threads.shutdown(wait=True)


def _count_unconfirmed(bodies: Sequence[ParsedBody], done: Sequence[BodyRecorded]) -> None:
    """Add the unconfirmed costs of the results these bodies stored now."""
    unconfirmed = metrics.metrics().unconfirmed_spend.labels(MODEL_ID)
    for body, recorded in zip(bodies, done, strict=True):
        for result, outcome in zip(body.results, recorded.outcomes, strict=False):
            if outcome is ResultOutcome.ACCEPTED and result.unconfirmed_cost_usd:
                unconfirmed.inc(float(result.unconfirmed_cost_usd))
