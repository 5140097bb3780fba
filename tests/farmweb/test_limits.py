"""Rate limits per bearer token, shared by every web process through Redis, with
RateLimit-* headers; made-up tokens gain nothing; X-Request-Id on every answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmdomain.settings import Settings
from fluxfarm.processes import Farm as Processes
from fluxfarm.processes import free_port
from jobstore.api_tokens import ApiTokenStore
from jobstore.migrations import upgrade
from jobstore.store import JobStore
from tests.security.conftest import Farm, make_farm

VALID = {"request": {"positivePrompt": "a lighthouse", "width": 512, "height": 512}}


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    yield from make_farm(tmp_path)


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[Farm]:
    yield from make_farm(tmp_path, api_rate_per_s=0.001, api_rate_burst=3)


def _remaining(response: httpx.Response) -> int:
    return int(response.headers["ratelimit-remaining"])


def test_each_token_has_its_own_bucket_and_the_headers_count_it_down(tight: Farm) -> None:
    acme, globex = tight.bearer("acme"), tight.bearer("globex")
    answers = [tight.http.get("/v1/spend", headers=acme) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [_remaining(a) for a in answers] == [2, 1, 0, 0]
    assert {a.headers["ratelimit-limit"] for a in answers} == {"3"}
    assert int(answers[0].headers["ratelimit-reset"]) >= 1
    assert int(answers[3].headers["retry-after"]) >= 1
    assert answers[3].json()["errors"][0]["rule"] == "rate"
    # the same address, another token: a bucket of its own
    assert tight.http.get("/v1/spend", headers=globex).status_code == 200


def test_made_up_tokens_run_out_of_failures_and_known_tokens_go_on(tight: Farm) -> None:
    acme = tight.bearer("acme")
    assert tight.http.get("/v1/spend", headers=acme).status_code == 200
    fresh = [
        tight.http.get("/v1/spend", headers={"Authorization": f"Bearer ffk_{uuid.uuid4().hex}"})
        for _ in range(5)
    ]
    assert [a.status_code for a in fresh] == [401, 401, 401, 429, 429]
    assert "failed authentications" in fresh[3].json()["errors"][0]["message"]
    # a token this process has seen work is not held back by its address's failures
    assert tight.http.get("/v1/spend", headers=acme).status_code == 200


def test_a_limiter_that_is_away_lets_requests_through(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    for farm in make_farm(tmp_path, rate_limit_url=closed, api_rate_per_s=0.001, api_rate_burst=1):
        answers = [farm.http.get("/v1/spend", headers=farm.bearer()) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]


def test_every_answer_carries_a_request_id(farm: Farm) -> None:
    token = farm.bearer()
    answers = [
        farm.http.get("/v1/spend", headers=token),
        farm.http.get("/v1/jobs/nope", headers=token),
        farm.http.post("/v1/jobs", content=b"{", headers=token),
        farm.http.get("/v1/spend"),
        farm.http.post("/webhooks/runware/x", params={"token": "x"}),
        farm.http.get("/healthz"),
    ]
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == len(ids)
    echoed = farm.http.get("/v1/spend", headers={**token, "X-Request-Id": "svc-42/a"})
    assert echoed.headers["x-request-id"] == "svc-42/a"
    hostile = farm.http.get("/v1/spend", headers={**token, "X-Request-Id": "a b\x7f"})
    assert hostile.headers["x-request-id"] != "a b\x7f"
    assert len(hostile.headers["x-request-id"]) == 32


def test_the_schema_names_the_headers_and_an_operation_id_for_each_route(farm: Farm) -> None:
    schema: dict[str, Any] = farm.http.get("/openapi.json").json()
    operations = [op for path in schema["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert all(name[0].islower() and "_" not in name for name in ids)
    submit = schema["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"X-Request-Id", "RateLimit-Remaining"} <= submit["201"]["headers"].keys()
    assert "Retry-After" in submit["429"]["headers"]


@pytest.mark.integration
def test_two_web_processes_draw_from_one_bucket_per_token(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path,
        webhook_secret="limits-secret",
        api_auth="required",
        rate_limit_url=redis_url,
        api_rate_per_s=0.001,
        api_rate_burst=10,
    )
    upgrade(settings.resolved_database_url())
    store = JobStore.from_settings(settings)
    _record, token = ApiTokenStore(store.engine).create("acme", "acme")
    store.engine.dispose()
    headers = {"Authorization": f"Bearer {token}"}
    with Processes(settings, log_dir=tmp_path / "logs") as processes:
        webs = [processes.start_web(free_port(), name=f"web-{i}") for i in range(2)]
        statuses = [
            httpx.get(f"{webs[i % 2]}/v1/spend", headers=headers, timeout=10).status_code
            for i in range(20)
        ]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 10
    assert statuses[:10] == [200] * 10
