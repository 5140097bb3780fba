"""The asyncio client: one httpx.AsyncClient, with its connection pool, per AsyncClient."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from fluxfarm_client import _operations as ops
from fluxfarm_client._errors import DownloadError
from fluxfarm_client._http import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    ImageSink,
    Send,
    retrying,
    same_origin,
)
from fluxfarm_client._models import Callback, Job, JobPage, JobState
from fluxfarm_client._operations import Call, Fetch, Sleep, Step
from fluxfarm_client._retry import Retries

T = TypeVar("T")
States = JobState | str | Sequence[JobState | str] | None


class AsyncClient:
    """Submits and follows one tenant's jobs over the farm's HTTP API.

    Make one per event loop and share it; close it (`await aclose()`), or use it as an
    async context manager. `token` is the tenant's bearer token (`fluxfarm token create`);
    without one, only a farm running open on loopback answers.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: Retries | None = None,
        max_image_bytes: int = ops.DEFAULT_MAX_IMAGE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retries = retries or Retries()
        self.max_image_bytes = max_image_bytes
        self._token = token
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=self.timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the API ----------------------------------------------------------------------

    async def submit(
        self,
        request: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        callback_url: str | None = None,
        priority: int | None = None,
    ) -> Job:
        """Queue one FLUX.2 [pro] request; the job as queued (or as it stands, when the
        idempotency key named it before). Without a key, one is made for this call.
        Inside the tenant a higher `priority` is admitted first (the farm's default: 0)."""
        return await self._run(
            ops.submit(request, idempotency_key, deadline_s, callback_url, priority)
        )

    async def submit_many(
        self,
        requests: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        callback_url: str | None = None,
        priority: int | None = None,
    ) -> builtins.list[Job]:
        """Queue several requests together, all or none; the jobs, in order."""
        return await self._run(
            ops.submit_many(requests, idempotency_key, deadline_s, callback_url, priority)
        )

    async def get(self, job_id: str) -> Job:
        return await self._run(ops.get(job_id))

    async def list(
        self,
        *,
        state: States = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        idempotency_key: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the tenant's jobs, newest first; pass `next_cursor` for the next."""
        return await self._run(
            ops.list_jobs(state, created_after, created_before, idempotency_key, limit, cursor)
        )

    async def iter_jobs(
        self,
        *,
        state: States = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        idempotency_key: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Job]:
        """Every job `list` finds, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list(
                state=state,
                created_after=created_after,
                created_before=created_before,
                idempotency_key=idempotency_key,
                limit=page_size,
                cursor=cursor,
            )
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def wait(self, job_id: str, timeout: float) -> Job:
        """The job once terminal, without polling; WaitTimedOut after `timeout` seconds."""
        return await self._run(ops.wait(job_id, timeout))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job that is not terminal yet; a terminal job comes back unchanged."""
        return await self._run(ops.cancel(job_id))

    async def callbacks(self, job_id: str) -> builtins.list[Callback]:
        """The job's callback events and every delivery attempt of each."""
        return await self._run(ops.callbacks(job_id))

    async def download(self, job_id: str, directory: Path | str) -> builtins.list[Path]:
        """Save the job's images as directory/<job id>/<imageUUID>.<ext>, each checked
        against the sha256 the farm recorded for it, when it gives one."""
        return await self._run(ops.download(job_id, Path(directory)))

    # -- carrying out an operation's steps --------------------------------------------

    async def _run(self, operation: Generator[Any, Any, T]) -> T:
        outcome: Any = None
        try:
            while True:
                outcome = await self._do(operation.send(outcome))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _do(self, step: Step | Send) -> Any:
        if isinstance(step, Call):
            return await self._run(retrying(step, self.retries, self.timeout))
        if isinstance(step, Send):
            return await self._send(step)
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        return await self._fetch(step)

    def _auth(self) -> dict[str, str]:
        return {} if self._token is None else {"Authorization": f"Bearer {self._token}"}

    async def _send(self, send: Send) -> httpx.Response | httpx.TransportError:
        try:
            return await self._http.request(
                send.method,
                send.path,
                json=send.json,
                params=send.params,
                headers=self._auth(),
                timeout=send.timeout,
            )
        except httpx.TransportError as exc:
            return exc

    async def _fetch(self, fetch: Fetch) -> Path:
        sink = ImageSink(fetch.url, fetch.stem, fetch.sha256, self.max_image_bytes)
        headers = self._auth() if same_origin(fetch.url, self._http.base_url) else {}
        try:
            async with self._http.stream(
                "GET", fetch.url, headers=headers, follow_redirects=True
            ) as response:
                sink.start(response)
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
            return sink.finish()
        except httpx.HTTPError as exc:
            sink.abort()
            raise DownloadError(fetch.url, f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            sink.abort()
            raise
