"""Job API tokens, tenants, the open mode's bounds, the request limits, and secrets kept."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from structlog.typing import EventDict

from farmdomain.broker import SUBMIT_QUEUE
from farmdomain.errors import ConfigurationError
from farmdomain.metrics import metrics
from farmdomain.settings import Settings
from farmweb.app import create_app
from jobstore.migrations import upgrade
from runware_edge.tokens import sign
from tests.security.conftest import SECRET, Farm, make_farm

VALID = {"request": {"positivePrompt": "a lighthouse", "width": 1024, "height": 768}}


def rejected(reason: str, surface: str = "api") -> float:
    value = metrics().requests_rejected.labels(surface, reason)._value.get()
    return float(value)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer ", "Bearer ffk_not-a-token", "Basic dXNlcjpwYXNz", "ffk_no-scheme"],
)
def test_a_missing_or_bad_token_is_a_401_in_the_error_shape(farm: Farm, header: str | None) -> None:
    before, counted = farm.dump(), rejected("unauthenticated")
    headers = {} if header is None else {"Authorization": header}
    response = farm.http.post("/v1/jobs", json=VALID, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    [error] = response.json()["errors"]
    assert (error["field"], error["rule"]) == ("authorization", "bearer_token")
    assert farm.dump() == before
    assert rejected("unauthenticated") == counted + 1


def test_a_revoked_token_is_refused_once_web_asks_the_store_again(tmp_path: Path) -> None:
    # FLUXFARM_API_TOKEN_CACHE_S bounds how long that takes; 0 makes every request ask
    for farm in make_farm(tmp_path, api_token_cache_s=0):
        record, token = farm.tokens.create("acme", "acme")
        headers = {"Authorization": f"Bearer {token}"}
        assert farm.http.post("/v1/jobs", json=VALID, headers=headers).status_code == 201
        assert farm.tokens.revoke(record.id)
        assert farm.http.post("/v1/jobs", json=VALID, headers=headers).status_code == 401


def test_a_read_only_token_reads_but_may_not_write(farm: Farm) -> None:
    job_id = farm.http.post("/v1/jobs", json=VALID, headers=farm.bearer("acme")).json()["id"]
    reader = farm.bearer("acme", can_write=False)
    assert farm.http.get(f"/v1/jobs/{job_id}", headers=reader).status_code == 200
    for response in (
        farm.http.post("/v1/jobs", json=VALID, headers=reader),
        farm.http.post(f"/v1/jobs/{job_id}/cancel", headers=reader),
    ):
        assert response.status_code == 403
        assert response.json()["errors"][0]["rule"] == "scope"


def test_a_tenant_sees_and_cancels_only_its_own_jobs(farm: Farm) -> None:
    acme, other = farm.bearer("acme"), farm.bearer("globex")
    created = farm.http.post("/v1/jobs", json=VALID, headers=acme).json()
    assert created["tenant"] == "acme"
    assert farm.store.get(created["id"]).tenant == "acme"
    before = farm.dump()
    # another tenant's job looks exactly like one that does not exist
    missing = farm.http.get(f"/v1/jobs/{uuid.uuid4()}", headers=other)
    for response in (
        farm.http.get(f"/v1/jobs/{created['id']}", headers=other),
        farm.http.post(f"/v1/jobs/{created['id']}/cancel", headers=other),
    ):
        assert response.status_code == missing.status_code == 404
    assert farm.dump() == before


def test_open_mode_serves_loopback_clients_only(tmp_path: Path) -> None:
    for farm in make_farm(tmp_path, api_auth="open"):
        assert farm.http.post("/v1/jobs", json=VALID).json()["tenant"] == "default"
        farm.http.app.state.api_auth.mode = "open"
        outside = farm.http.__class__(farm.http.app, client=("203.0.113.7", 40000))
        assert outside.post("/v1/jobs", json=VALID).status_code == 401


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "farm.example.com"])
def test_the_api_refuses_to_start_open_off_loopback(tmp_path: Path, host: str) -> None:
    upgrade(Settings(data_dir=tmp_path).resolved_database_url())
    with pytest.raises(ConfigurationError, match="loopback"):
        create_app(Settings(data_dir=tmp_path, api_auth="open", bind_host=host))
    assert create_app(Settings(data_dir=tmp_path, bind_host=host)).state.api_auth.mode == (
        "required"
    )


def test_the_startup_log_line_says_whether_the_api_is_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _farm in make_farm(tmp_path, api_auth="auto", log_level="INFO", log_format="json"):
        pass
    [started] = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if "web.started" in line
    ]
    assert (started["api_auth"], started["bind_host"]) == ("open", "127.0.0.1")
    assert "loopback" in started["note"]


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[Farm]:
    yield from make_farm(
        tmp_path, api_max_body_bytes=2048, api_max_json_depth=8, api_rate_per_s=0.001,
        api_rate_burst=3,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        (b'{"request": {"positivePrompt": "' + b"x" * 4000 + b'"}}', 413, "too_large"),
        (b'{"request": ' + b"[" * 9 + b"]" * 9 + b"}", 400, "too_deep"),
        (b'{"request": {"positivePrompt": "[[[[[[[[[[[[[["}}', 401, None),
    ],
    ids=["body-size", "nesting", "brackets-in-a-string-are-not-nesting"],
)
def test_each_limit_is_a_4xx_with_its_reason_and_counted(
    tight: Farm, content: bytes, status: int, reason: str | None
) -> None:
    counted = rejected(reason or "unauthenticated")
    response = tight.http.post(
        "/v1/jobs", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["errors"][0]["rule"] == (reason or "bearer_token")
    assert rejected(reason or "unauthenticated") == counted + 1


def test_a_client_over_its_rate_is_a_429_with_retry_after(tight: Farm) -> None:
    statuses = [tight.http.get(f"/v1/jobs/{uuid.uuid4()}").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    last = tight.http.get(f"/v1/jobs/{uuid.uuid4()}")
    assert int(last.headers["retry-after"]) >= 1
    assert last.json()["errors"][0]["rule"] == "rate"
    # webhooks are Runware's retries: never throttled here
    assert tight.http.post("/webhooks/runware/x", params={"token": "x"}).status_code == 401


def _everything(farm: Farm, bodies: list[Any]) -> str:
    with farm.store.engine.connect():
        dumped = repr(farm.dump())
    with Connection(farm.settings.resolved_broker_url()) as conn:
        queue = conn.SimpleQueue(SUBMIT_QUEUE)
        try:
            messages = [repr(queue.get(timeout=1).body) for _ in range(queue.qsize())]
        finally:
            queue.close()
    return "\n".join([dumped, *messages, *map(repr, bodies)])


def test_secrets_never_reach_responses_rows_messages_or_logs(
    farm: Farm, logs: list[EventDict]
) -> None:
    _record, api_token = farm.tokens.create("acme", "acme")
    headers = {"Authorization": f"Bearer {api_token}"}
    job = farm.job()
    signing_secret = farm.http.app.state.context.webhook_secrets[0]
    created = farm.http.post("/v1/jobs", json=VALID, headers=headers)
    bodies = [
        created.json(),
        farm.http.get(f"/v1/jobs/{created.json()['id']}", headers=headers).json(),
        farm.http.post("/v1/jobs", json=VALID, headers={"Authorization": "Bearer ffk_x"}).json(),
    ]
    farm.webhook(job.task_uuid, b'{"taskUUID": "' + job.task_uuid.encode() + b'"}')
    # the lines at every level, so that the check below covers what INFO and DEBUG print
    assert any(line["event"] == "webhook.received" for line in logs)
    seen = _everything(farm, bodies) + repr(logs)
    for secret in (
        SECRET,
        api_token,
        sign(job.task_uuid, signing_secret),
        "runware-key-never-shown",
    ):
        assert secret not in seen
