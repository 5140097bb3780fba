"""The client rides out refusals and lost answers without queueing a job twice: a 429
storm from the real rate limit, answers lost after the job was created, a farm that is
not up yet; and it waits what Retry-After asks."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from fluxfarm.processes import Farm, free_port
from fluxfarm_client import AsyncClient, Client, RateLimited, Retries
from fluxfarm_client._retry import retry_after_s
from tests.fluxfarm_client.conftest import REQUEST, WebFactory
from tests.http_servers import serve_asgi

_REJECTED_RATE = re.compile(
    r'fluxfarm_requests_rejected_total\{reason="rate",surface="api"\} (\S+)'
)


def _rate_refusals(web_url: str) -> float:
    found = _REJECTED_RATE.search(httpx.get(f"{web_url}/metrics", timeout=10).text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.integration
def test_a_429_storm_is_ridden_out_without_duplicate_jobs(bare_web: WebFactory) -> None:
    web = bare_web(api_rate_per_s=20, api_rate_burst=5)
    requests = [{**REQUEST, "seed": i} for i in range(80)]
    with Client(web.url) as farm, ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(farm.submit, requests))

    async def submit_all() -> list[str]:
        async with AsyncClient(web.url) as farm:
            more = [{**REQUEST, "seed": 1000 + i} for i in range(40)]
            return [job.id for job in await asyncio.gather(*map(farm.submit, more))]

    async_ids = asyncio.run(submit_all())

    assert _rate_refusals(web.url) > 0  # the storm happened
    assert [job.request["seed"] for job in jobs] == list(range(80))
    assert len({job.id for job in jobs} | set(async_ids)) == 120
    assert web.job_count() == 120


@pytest.mark.integration
def test_a_refusal_that_outlasts_the_retries_is_raised_typed(bare_web: WebFactory) -> None:
    web = bare_web(api_rate_per_s=0.01, api_rate_burst=1)
    with Client(web.url, retries=Retries(attempts=2, max_retry_after_s=1)) as farm:
        farm.submit(REQUEST)
        with pytest.raises(RateLimited) as refused:
            farm.submit(REQUEST)
    assert refused.value.status_code == 429
    assert refused.value.errors[0].rule == "rate"
    assert web.job_count() == 1


class LosingProxy:
    """Forwards to the farm, but answers the first POST of each idempotency key 503 after
    the farm has handled it: the job exists, and the client never heard so."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.keys: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as upstream:
            answer = await upstream.request(
                request.method,
                request.url.path,
                params=request.query_params,
                content=body,
                headers={"content-type": request.headers.get("content-type", "")},
            )
        response: Response = Response(
            answer.content, answer.status_code, media_type="application/json"
        )
        if request.method == "POST":
            key = orjson.loads(body)["idempotencyKey"]
            with self._lock:
                self.keys[key] += 1
                first = self.keys[key] == 1
            if first:
                response = JSONResponse(
                    {"errors": [{"field": "proxy", "rule": "up", "message": "lost"}]},
                    503,
                    headers={"Retry-After": "0"},
                )
        await response(scope, receive, send)


@pytest.mark.integration
def test_an_answer_lost_after_the_job_was_created_is_retried_into_the_same_job(
    bare_web: WebFactory,
) -> None:
    web = bare_web()
    proxy = LosingProxy(web.url)
    with serve_asgi(proxy) as proxied, Client(proxied) as farm:
        single = [farm.submit({**REQUEST, "seed": i}) for i in range(5)]
        batch = farm.submit_many([{**REQUEST, "seed": 100 + i} for i in range(3)])

    # every call was sent twice under one key, and each request is one job
    assert sorted(proxy.keys.values()) == [2] * 6
    assert len({job.id for job in [*single, *batch]}) == 8
    assert web.job_count() == 8


@pytest.mark.integration
def test_a_farm_that_is_not_up_yet_is_waited_for(bare_web: WebFactory) -> None:
    web = bare_web()
    port = free_port()
    late = Farm(web.settings, log_dir=web.settings.data_dir / "late-logs").__enter__()

    def start_later() -> None:
        time.sleep(1.0)
        late.start_web(port, name="late-web")

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        with Client(
            f"http://127.0.0.1:{port}", retries=Retries(attempts=60, max_backoff_s=1)
        ) as farm:
            job = farm.submit(REQUEST)
        starter.join()
        assert web.store.get(job.id).request == REQUEST
        assert web.job_count() == 1
    finally:
        starter.join()
        late.stop()


def _answer(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return httpx.Response(status, headers=headers)


def test_retry_after_is_read_in_seconds_and_as_a_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_s(_answer(429, "7")) == 7.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s(_answer(503, later), now) == 30.0
    assert retry_after_s(_answer(503, "soon")) is None
    assert retry_after_s(_answer(503)) is None


def test_retries_wait_at_least_retry_after_and_stop_where_they_should() -> None:
    retries = Retries(attempts=3, max_retry_after_s=60)
    assert retries.delay_s(1, _answer(429, "5")) is not None
    assert (retries.delay_s(1, _answer(429, "5")) or 0) >= 5
    assert retries.delay_s(1, None) is not None  # the connection failed: try again
    assert retries.delay_s(3, _answer(503)) is None  # out of attempts
    assert retries.delay_s(1, _answer(500)) is None  # not a status worth repeating
    assert retries.delay_s(1, _answer(422)) is None
    assert retries.delay_s(1, _answer(429, "3600")) is None  # longer than we would wait
    with pytest.raises(ValueError, match="attempts"):
        Retries(attempts=0)
