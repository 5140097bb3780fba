"""Findings 3 and 7: text from outside (webhook bodies, job requests, Runware's error text)
is refused or escaped before it is stored, so a NUL never fails a statement and an ANSI
escape never reaches an operator's terminal raw."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest

from farmdomain.jobs import Job, JobState
from producers.cli import _summary
from runware_edge.tokens import sign
from tests.http_servers import serve_asgi
from tests.security.conftest import PARAMS, SECRET, Farm, make_farm
from tests.services import fresh_postgres_database

IMAGE_URL = "https://im.runware.ai/image/ws/2/ii/{}.jpg"
ANSI = "\x1b[2J\x1b[1;1Hstate: succeeded\r\n\x1b[32mall good\x1b[0m"


@pytest.fixture
def pg_farm(tmp_path: Path) -> Iterator[Farm]:
    with fresh_postgres_database() as url:
        yield from make_farm(tmp_path, database_url=url)


def _submitted(farm: Farm, number_results: int) -> Job:
    params = {**PARAMS, "numberResults": number_results, "tag": uuid.uuid4().hex}
    job, _ = farm.store.create_job(params, tenant="acme", deadline_s=600)
    assert farm.store.claim(job.id, 0) is not None
    assert farm.store.mark_submitted(job.id, {})
    return job


@pytest.mark.timeout(120)
def test_nul_bodies_fail_no_other_tasks_delivery_on_postgresql(pg_farm: Farm) -> None:
    victims = [_submitted(pg_farm, 20) for _ in range(5)]
    attacker = _submitted(pg_farm, 1)
    nul_bodies = [
        {"taskUUID": attacker.task_uuid, "imageUUID": "a\x00b", "imageURL": IMAGE_URL.format(1)},
        {"taskUUID": attacker.task_uuid, "imageUUID": "c", "imageURL": IMAGE_URL.format("\x00")},
        {"errors": [{"taskUUID": attacker.task_uuid, "code": "x", "message": "bad\x00text"}]},
    ]
    deliveries = [
        (job.task_uuid, {"taskUUID": job.task_uuid, "imageUUID": f"img-{i}", "cost": 0.03,
                         "imageURL": IMAGE_URL.format(i)})
        for job in victims for i in range(20)
    ] + [(attacker.task_uuid, body) for body in nul_bodies * 10]  # fmt: skip
    # interleaved, so every recorder batch mixes the attacker's bodies with others'
    deliveries = deliveries[::2] + deliveries[1::2]
    with serve_asgi(pg_farm.http.app) as base, httpx.Client(base_url=base, timeout=60) as http:

        def deliver(delivery: tuple[str, object]) -> tuple[str, int]:
            task_uuid, body = delivery
            answer = http.post(
                f"/webhooks/runware/{task_uuid}",
                params={"token": sign(task_uuid, SECRET.encode())},
                json=body,
            )
            return task_uuid, answer.status_code

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(deliver, deliveries))
    legitimate = Counter(status for task, status in answers if task != attacker.task_uuid)
    forged = Counter(status for task, status in answers if task == attacker.task_uuid)
    assert legitimate == {200: 100}
    # identifiers with a NUL are refused; an error's NUL is escaped, and the error kept
    assert forged == {400: 20, 200: 10}
    for job in victims:
        after = pg_farm.store.get(job.id)
        # each counted every image; the copies, not run here, would complete them
        assert after.images_received == after.number_results
    failed = pg_farm.store.get(attacker.id)
    assert failed.state is JobState.FAILED
    assert failed.failure_message == "bad\\x00text"


def test_runware_error_text_is_stored_escaped(farm: Farm) -> None:
    job = farm.job()
    body = {"errors": [{"taskUUID": job.task_uuid, "code": "bad\x1b[31m", "message": ANSI,
                        "parameter": "width\n"}]}  # fmt: skip
    status, changed = farm.webhook(job.task_uuid, orjson.dumps(body))
    assert (status, changed) == (200, True)
    failed = farm.store.get(job.id)
    assert failed.failure_message == ANSI.encode("unicode_escape").decode()
    assert failed.failure_code == "bad\\x1b[31m"
    assert failed.failure_parameter == "width\\n"


@pytest.mark.parametrize(
    ("field", "value"),
    [("imageUUID", "img\x00"), ("imageUUID", "img\x1b[2J"), ("taskUUID", None),
     ("imageURL", "https://im.runware.ai/a\r\nX-Fake: 1.jpg")],
)  # fmt: skip
def test_webhook_identifiers_with_control_characters_are_refused_naming_the_field(
    farm: Farm, field: str, value: str | None
) -> None:
    job = farm.job()
    body = {"taskUUID": job.task_uuid, "imageUUID": "img-1", "imageURL": IMAGE_URL.format(1)}
    body[field] = job.task_uuid + "\x00" if value is None else value
    answer = farm.http.post(
        f"/webhooks/runware/{job.task_uuid}",
        params={"token": sign(job.task_uuid, SECRET.encode())},
        json=body,
    )
    assert answer.status_code == 400
    assert (
        answer.json()["error"]["message"] == f"{field} must not contain NUL or control characters"
    )
    assert farm.store.get(job.id).images == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request": {**PARAMS, "positivePrompt": "a\x1b[2Jb"}}, "request.positivePrompt"),
        ({"request": {**PARAMS, "positivePrompt": "a\x00b"}}, "request.positivePrompt"),
        ({"request": {**PARAMS, "uploadEndpoint": "https://x.example/\x00"}},
         "request.uploadEndpoint"),
        ({"request": PARAMS, "idempotencyKey": "key\x00"}, "idempotencyKey"),
    ],
    ids=["ansi-prompt", "nul-prompt", "nul-upload-endpoint", "nul-idempotency-key"],
)  # fmt: skip
def test_job_requests_with_control_characters_are_refused_naming_the_field(
    farm: Farm, body: dict[str, object], field: str
) -> None:
    before = farm.dump()
    answer = farm.http.post("/v1/jobs", json=body, headers=farm.bearer())
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    assert "NUL or control characters" in answer.text
    assert farm.dump()["jobs"] == before["jobs"]


def test_a_prompt_may_keep_its_line_breaks(farm: Farm) -> None:
    body = {"request": {**PARAMS, "positivePrompt": "a lighthouse,\n\tat dusk"}}
    assert farm.http.post("/v1/jobs", json=body, headers=farm.bearer()).status_code == 201


def test_fluxfarm_status_prints_outside_text_escaped(farm: Farm) -> None:
    job = farm.job()
    body = {"errors": [{"taskUUID": job.task_uuid, "code": "x", "message": "ok"}]}
    farm.webhook(job.task_uuid, orjson.dumps(body))
    # a row written before text was escaped at the boundary still prints as one line each
    shown = _summary(replace(farm.store.get(job.id), failure_message=ANSI))
    assert "\x1b" not in shown
    assert "state: succeeded" not in shown.splitlines()[0]
    assert len(shown.splitlines()) == len(_summary(farm.store.get(job.id)).splitlines())
