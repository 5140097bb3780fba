"""The webhook receiver on a real uvicorn server: results recorded once, anything forged or
malformed answered 4xx with the store untouched."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from sqlalchemy import delete, select
from starlette.applications import Starlette
from structlog.typing import EventDict

from farmdomain.jobs import Job, JobState
from farmdomain.settings import Settings
from farmweb.context import WebContext
from farmweb.webhook import WebhookReceiver, task_in_path
from jobstore.migrations import upgrade
from jobstore.schema import events, jobs, results
from jobstore.store import JobStore
from runware_edge.tokens import sign
from simulator.server import bind, url_of

SECRET = b"test-secret"
PARAMS = {"positivePrompt": "a lighthouse", "width": 256, "height": 256}


@dataclass
class Receiver:
    url: str
    context: WebContext

    @property
    def store(self) -> JobStore:
        return self.context.store

    def post(
        self,
        task_uuid: str,
        body: Any,
        token: str | None = "sign",
        raw: bytes | Iterator[bytes] | None = None,
    ) -> httpx.Response:
        params = {}
        if token == "sign":
            params["token"] = sign(task_uuid, SECRET)
        elif token is not None:
            params["token"] = token
        content = raw if raw is not None else orjson.dumps(body)
        return httpx.post(
            f"{self.url}/webhooks/runware/{task_uuid}",
            params=params,
            content=content,
            headers={"Content-Type": "application/json"},
            timeout=10.0,
        )

    def job(self, number_results: int = 1, submitted: bool = True) -> Job:
        params = {**PARAMS, "numberResults": number_results}
        job, _ = self.store.create_job(params, tenant="acme", deadline_s=600)
        assert self.store.claim(job.id, 0) is not None
        if submitted:
            assert self.store.mark_submitted(job.id, {})
        return self.store.get(job.id)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.store.engine.connect() as conn:
            return {
                table.name: [tuple(row) for row in conn.execute(select(table)).all()]
                for table in (jobs, results, events)
            }


def _serve(settings: Settings, migrate: bool = True) -> Iterator[Receiver]:
    if migrate:
        upgrade(settings.resolved_database_url())
    context = WebContext(settings, JobStore.from_settings(settings))
    app = WebhookReceiver(context, Starlette())
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:  # waiting for startup, not asserting on time
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the webhook server did not start")
            time.sleep(0.01)
        yield Receiver(url_of(sock), context)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        context.store.engine.dispose()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, webhook_secret="test-secret", runware_api_key="k", **overrides
    )


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    yield from _serve(make_settings(tmp_path_factory.mktemp("webhook")))


@pytest.fixture(scope="module")
def _small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    yield from _serve(make_settings(tmp_path_factory.mktemp("small"), webhook_max_body_bytes=512))


def _emptied(server: Receiver) -> Receiver:
    """One server per module, an empty store per test."""
    with server.store.engine.begin() as conn:
        for table in (results, events, jobs):
            conn.execute(delete(table))
    return server


@pytest.fixture
def receiver(_server: Receiver) -> Receiver:
    return _emptied(_server)


@pytest.fixture
def small_receiver(_small_server: Receiver) -> Receiver:
    return _emptied(_small_server)


def result(job: Job, image_uuid: str | None = None, cost: float = 0.045) -> dict[str, Any]:
    image = image_uuid or str(uuid.uuid4())
    return {
        "taskType": "imageInference",
        "taskUUID": job.task_uuid,
        "imageUUID": image,
        "imageURL": f"https://im.runware.ai/image/ii/{image}.jpg",
        "seed": 7,
        "cost": cost,
    }


def test_a_valid_flat_result_is_counted_and_leaves_the_job_to_its_copy(
    receiver: Receiver,
) -> None:
    job = receiver.job()
    response = receiver.post(job.task_uuid, result(job))
    assert response.status_code == 200
    assert response.json() == {"outcomes": ["accepted"]}
    after = receiver.store.get(job.id)
    # the job succeeds once its image is stored (the copy task), not on its arrival
    assert (after.state, after.images_received) == (JobState.SUBMITTED, 1)
    assert after.cost_usd == Decimal("0.045")
    assert after.images[0].source == "webhook"


def test_a_wrapped_body_with_every_image_counts_them_all(receiver: Receiver) -> None:
    job = receiver.job(number_results=2)
    response = receiver.post(job.task_uuid, {"data": [result(job), result(job, cost=0.03)]})
    assert response.status_code == 200
    assert response.json() == {"outcomes": ["accepted", "accepted"]}
    after = receiver.store.get(job.id)
    assert (after.state, after.images_received) == (JobState.SUBMITTED, 2)
    assert after.cost_usd == Decimal("0.075")


def test_one_post_per_image_counts_each(receiver: Receiver) -> None:
    job = receiver.job(number_results=3)
    for _ in range(2):
        assert receiver.post(job.task_uuid, {"data": [result(job)]}).status_code == 200
    assert receiver.store.get(job.id).images_received == 2
    assert receiver.post(job.task_uuid, result(job)).status_code == 200
    after = receiver.store.get(job.id)
    assert (after.state, after.images_received) == (JobState.SUBMITTED, 3)


def test_a_result_beating_the_submitted_write_is_counted_on_a_submitting_job(
    receiver: Receiver,
) -> None:
    job = receiver.job(submitted=False)
    assert receiver.post(job.task_uuid, result(job)).status_code == 200
    after = receiver.store.get(job.id)
    assert (after.state, after.images_received) == (JobState.SUBMITTING, 1)


def test_deliveries_arriving_together_each_get_their_own_outcomes(receiver: Receiver) -> None:
    made = [receiver.job(number_results=2) for _ in range(10)]
    deliveries = [(job, result(job)) for job in made for _ in range(2)]
    deliveries += [(job, body) for job, body in deliveries[::4]]  # redelivered
    stray = receiver.job()
    receiver.store.cancel(stray.id)
    deliveries.append((stray, result(stray)))
    barrier = threading.Barrier(len(deliveries))

    def deliver(job: Job, body: dict[str, Any]) -> list[str]:
        barrier.wait(10)
        response = receiver.post(job.task_uuid, body)
        assert response.status_code == 200, response.text
        outcomes: list[str] = response.json()["outcomes"]
        return outcomes

    with ThreadPoolExecutor(len(deliveries)) as pool:
        answers = list(pool.map(lambda d: deliver(*d), deliveries))

    first_copies = answers[:20]
    repeats = answers[20:-1]
    assert first_copies.count(["accepted"]) + repeats.count(["accepted"]) == 20
    assert sorted(first_copies + repeats) == sorted([["accepted"]] * 20 + [["duplicate"]] * 5)
    assert answers[-1] == ["late"]
    for job in made:
        after = receiver.store.get(job.id, details=True)
        assert (after.state, after.images_received, after.cost_usd) == (
            JobState.SUBMITTED,
            2,
            Decimal("0.09"),
        )


def test_a_store_outage_is_answered_503_so_runware_delivers_again(tmp_path: Path) -> None:
    # nothing listens on port 1: every store call fails at once
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/fluxfarm"
    down = make_settings(tmp_path, database_url=unreachable)
    for receiver in _serve(down, migrate=False):
        task_uuid = str(uuid.uuid4())
        body = {"taskUUID": task_uuid, "imageUUID": "i", "imageURL": "https://im.runware.ai/i"}
        response = receiver.post(task_uuid, body)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"]["outcome"] == "store_unavailable"


def test_a_duplicate_delivery_is_acknowledged_and_stored_once(receiver: Receiver) -> None:
    job = receiver.job(number_results=2)
    body = result(job)
    first = receiver.post(job.task_uuid, body)
    again = receiver.post(job.task_uuid, body)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == {"outcomes": ["duplicate"]}
    after = receiver.store.get(job.id)
    assert len(after.images) == 1
    assert after.cost_usd == Decimal("0.045")
    assert after.state is JobState.SUBMITTED


def test_every_delivery_is_logged_with_its_job_and_task(
    receiver: Receiver, logs: list[EventDict]
) -> None:
    job = receiver.job(number_results=2)
    body = result(job)
    unknown = str(uuid.uuid4())
    receiver.post(job.task_uuid, body)
    receiver.post(job.task_uuid, body)  # a duplicate changes nothing, and still names its job
    receiver.post(unknown, {**body, "taskUUID": unknown})
    lines = [line for line in logs if line["event"] == "webhook.received"]
    assert [(line["task_uuid"], line["job_id"], line["outcomes"]) for line in lines] == [
        (job.task_uuid, job.id, ["accepted"]),
        (job.task_uuid, job.id, ["duplicate"]),
        (unknown, None, ["unknown_task"]),
    ]


def test_replaying_a_webhook_for_a_terminal_job_changes_nothing(receiver: Receiver) -> None:
    job = receiver.job()
    body = result(job)
    assert receiver.post(job.task_uuid, body).status_code == 200
    before = receiver.dump()
    for _ in range(3):
        response = receiver.post(job.task_uuid, body)
        assert response.status_code == 200
        assert response.json() == {"outcomes": ["duplicate"]}
    assert receiver.dump() == before


@pytest.mark.parametrize(
    ("token", "status"),
    [
        pytest.param(None, 401, id="missing"),
        pytest.param("", 401, id="empty"),
        pytest.param("not-the-token", 401, id="wrong"),
        pytest.param("other-task", 401, id="other-tasks-token"),
        pytest.param("other-secret", 401, id="signed-with-another-secret"),
        pytest.param("truncated", 401, id="truncated"),
        pytest.param("tökén", 401, id="non-ascii"),
    ],
)
def test_a_bad_token_is_refused_and_changes_nothing(
    receiver: Receiver, token: str | None, status: int
) -> None:
    job = receiver.job()
    presented = {
        "other-task": sign(str(uuid.uuid4()), SECRET),
        "other-secret": sign(job.task_uuid, b"attacker"),
        "truncated": sign(job.task_uuid, SECRET)[:-2],
    }.get(token or "", token)
    before = receiver.dump()
    response = receiver.post(job.task_uuid, result(job), token=presented)
    assert response.status_code == status
    assert response.json()["error"]["outcome"] == "bad_token"
    assert receiver.dump() == before


def test_a_body_naming_another_task_than_the_url_is_forbidden(receiver: Receiver) -> None:
    job, other = receiver.job(), receiver.job()
    before = receiver.dump()
    # a valid token for `job`, carrying a result for `other`
    response = receiver.post(job.task_uuid, {"data": [result(job), result(other)]})
    assert response.status_code == 403
    assert receiver.post(job.task_uuid, result(other)).status_code == 403
    assert receiver.dump() == before


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"taskUUID": ', id="truncated-json"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}", id="deep-in-envelope"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_a_malformed_body_is_a_400_and_changes_nothing(receiver: Receiver, raw: bytes) -> None:
    job = receiver.job()
    before = receiver.dump()
    response = receiver.post(job.task_uuid, None, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["outcome"] == "malformed"
    assert receiver.dump() == before


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"seed": True}, id="bool-seed"),
        pytest.param({"cost": "0.045"}, id="string-cost"),
        pytest.param({"cost": -1}, id="negative-cost"),
        pytest.param({"imageUUID": None}, id="no-imageUUID"),
        pytest.param({"imageURL": None}, id="no-image"),
        pytest.param({"NSFWContent": "yes"}, id="string-nsfw"),
    ],
)
def test_wrong_types_are_a_400_and_change_nothing(
    receiver: Receiver, change: dict[str, Any]
) -> None:
    job = receiver.job()
    body = {k: v for k, v in {**result(job), **change}.items() if v is not None}
    before = receiver.dump()
    assert receiver.post(job.task_uuid, body).status_code == 400
    assert receiver.post(job.task_uuid, {"data": [result(job), body]}).status_code == 400
    assert receiver.dump() == before


def test_an_oversized_body_is_a_413_and_changes_nothing(small_receiver: Receiver) -> None:
    job = small_receiver.job()
    body = {**result(job), "padding": "x" * 1000}
    before = small_receiver.dump()
    assert small_receiver.post(job.task_uuid, body).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        data = orjson.dumps(body)
        for start in range(0, len(data), 100):
            yield data[start : start + 100]

    streamed = small_receiver.post(job.task_uuid, None, raw=chunks())
    assert streamed.status_code == 413
    assert small_receiver.dump() == before
    assert small_receiver.post(job.task_uuid, result(job)).status_code == 200


def test_an_unknown_task_with_a_valid_token_is_a_404(receiver: Receiver) -> None:
    receiver.job()
    before = receiver.dump()
    task_uuid = str(uuid.uuid4())
    body = {**result(receiver.job()), "taskUUID": task_uuid}
    after_setup = receiver.dump()
    response = receiver.post(task_uuid, body)
    assert response.status_code == 404
    assert response.json()["error"]["outcome"] == "unknown_task"
    assert receiver.dump() == after_setup
    assert before != after_setup


@pytest.mark.parametrize(
    ("body_of", "reason"),
    [
        pytest.param(
            lambda t: {
                "errors": [{"taskUUID": t, "code": "contentPolicyViolation", "message": "x"}]
            },
            "safety",
            id="errors-envelope-safety",
        ),
        pytest.param(
            lambda t: {"taskUUID": t, "status": "error", "code": "timeoutProvider", "message": "x"},
            "timeout",
            id="flat-error-timeout",
        ),
        pytest.param(
            lambda t: {
                "data": [{"taskUUID": t, "status": "error", "error": {"code": "inferenceError"}}]
            },
            "provider",
            id="nested-error-provider",
        ),
    ],
)
def test_an_error_item_fails_the_job_with_the_mapped_reason(
    receiver: Receiver, body_of: Callable[[str], Any], reason: str
) -> None:
    job = receiver.job()
    response = receiver.post(job.task_uuid, body_of(job.task_uuid))
    assert response.status_code == 200
    after = receiver.store.get(job.id)
    assert after.state is JobState.FAILED
    assert after.failure_reason == reason
    replay = receiver.post(job.task_uuid, body_of(job.task_uuid))
    assert replay.status_code == 200
    assert replay.json() == {"outcomes": ["late"]}


def test_a_late_result_on_a_canceled_job_is_stored_with_its_cost(receiver: Receiver) -> None:
    job = receiver.job()
    receiver.store.cancel(job.id)
    response = receiver.post(job.task_uuid, result(job, cost=0.03))
    assert response.status_code == 200
    assert response.json() == {"outcomes": ["late"]}
    after = receiver.store.get(job.id)
    assert after.state is JobState.CANCELED
    assert after.cost_usd == Decimal("0.03")
    assert [i.late for i in after.images] == [True]


def test_only_post_is_routed(receiver: Receiver) -> None:
    job = receiver.job()
    response = httpx.get(
        f"{receiver.url}/webhooks/runware/{job.task_uuid}",
        params={"token": sign(job.task_uuid, SECRET)},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert receiver.store.get(job.id).state is JobState.SUBMITTED


def test_other_paths_go_on_to_the_wrapped_app(receiver: Receiver) -> None:
    job = receiver.job()
    token = sign(job.task_uuid, SECRET)
    for path in (f"/webhooks/runware/{job.task_uuid}/more", "/webhooks/runware/", "/elsewhere"):
        response = httpx.post(f"{receiver.url}{path}", params={"token": token}, content=b"{}")
        # the wrapped app here is an empty Starlette app: anything reaching it is a 404
        assert (response.status_code, response.text) == (404, "Not Found")
    assert receiver.store.get(job.id).state is JobState.SUBMITTED


@pytest.mark.parametrize(
    ("path", "root_path", "task_uuid"),
    [
        ("/webhooks/runware/T-1", "", "T-1"),
        ("/base/webhooks/runware/T-1", "/base", "T-1"),
        ("/webhooks/runware/T-1", "/base", "T-1"),
        ("/basement/webhooks/runware/T-1", "/base", None),
        ("/webhooks/runware/", "", None),
        ("/webhooks/runware/T-1/x", "", None),
        ("/v1/jobs", "", None),
    ],
)
def test_the_task_is_read_from_the_path_below_the_root_path(
    path: str, root_path: str, task_uuid: str | None
) -> None:
    assert task_in_path({"path": path, "root_path": root_path}) == task_uuid
