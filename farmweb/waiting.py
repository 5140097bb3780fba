"""GET /v1/jobs/{id}?wait=: requests held until their job is terminal, without each one
polling the store. One watcher per web process reads the states of every job being waited
on in a single query per tick, and wakes the requests whose job finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from farmdomain.jobs import TERMINAL_STATES
from jobstore.schema import jobs

log = structlog.get_logger(__name__)

# the longest a request may be held; a client waiting longer asks again
MAX_WAIT_S = 60.0
# how often the watcher reads the states: the most a terminal job's answer lags
TICK_S = 0.1

StatesReader = Callable[[Sequence[str]], set[str]]


def terminal_among(engine: Engine) -> StatesReader:
    """The ids of `job_ids` whose jobs are terminal, in one query."""
    terminal = [state.value for state in TERMINAL_STATES]

    def read(job_ids: Sequence[str]) -> set[str]:
        query = select(jobs.c.id).where(jobs.c.id.in_(job_ids), jobs.c.state.in_(terminal))
        with engine.connect() as conn:
            return set(conn.execute(query).scalars())

    return read


class TerminalWatch:
    """Wakes waiting requests when their job turns terminal; one per web process."""

    def __init__(self, read: StatesReader, tick_s: float = TICK_S) -> None:
        self._read = read
        self._tick_s = tick_s
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def wait(self, job_id: str, timeout_s: float) -> None:
        """Return once `job_id` is terminal, or after `timeout_s`, whichever is first."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(woken)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())
        try:
            await asyncio.wait_for(woken, timeout_s)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiting.get(job_id, [])
            if woken in waiters:
                waiters.remove(woken)
            if not waiters:
                self._waiting.pop(job_id, None)

    async def _watch(self) -> None:
        while self._waiting:
            await asyncio.sleep(self._tick_s)
            try:
                finished = await run_in_threadpool(self._read, list(self._waiting))
            # a store that is away delays the wake-up; each request still ends at its timeout
            except SQLAlchemyError as exc:
                log.warning("wait.store_unreachable", error=type(exc).__name__)
                continue
            for job_id in finished:
                for woken in self._waiting.pop(job_id, []):
                    if not woken.done():
                        woken.set_result(None)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
