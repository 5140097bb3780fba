"""Finding 2: one task's leaked webhook URL (its valid token) lets nobody rewrite the farm.
Against a real `web` process on SQLite and on PostgreSQL: forged results never give a job
more than its numberResults, a forged cost never reaches spend, a terminal job takes no
new image, a URL off the download allow-list and oversized inline data are refused, a body
of 100k items is refused before it is recorded, the token expires after the job finished,
and the other tenants' spend and the farm's budget figure stay as they were."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from farmdomain.jobs import Job, JobState
from jobstore.api_tokens import ApiTokenStore
from jobstore.schema import jobs
from jobstore.spend import spend_report
from jobstore.store import JobStore
from runware_edge.tokens import sign
from tests.jobstore.conftest import keep_images
from tests.security.conftest import PARAMS, PREVIOUS_SECRET, SECRET
from tests.security.web_process import WebProcess, running_web
from tests.services import fresh_postgres_database

pytestmark = pytest.mark.timeout(300)

IMAGE_URL = "https://im.runware.ai/image/ws/2/ii/{}.jpg"
UNCONFIRMED = "fluxfarm_unconfirmed_spend_usd_total"
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


@dataclass
class Farm:
    web: WebProcess
    store: JobStore
    bearers: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def farm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    data_dir = tmp_path_factory.mktemp(request.param)
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database_url = f"sqlite:///{data_dir / 'store.sqlite3'}"
        else:
            database_url = stack.enter_context(fresh_postgres_database())
        env = {
            "FLUXFARM_DATABASE_URL": database_url,
            "FLUXFARM_WEBHOOK_SECRET_PREVIOUS": PREVIOUS_SECRET,
            "FLUXFARM_API_AUTH": "required",
            "FLUXFARM_WEBHOOK_TOKEN_TTL_S": "3600",
        }
        web = stack.enter_context(running_web(data_dir, **env))
        store = JobStore.from_url(database_url)
        stack.callback(store.engine.dispose)
        tokens = ApiTokenStore(store.engine)
        bearers = {tenant: tokens.create(tenant, f"{tenant} service")[1] for tenant in TENANTS}
        yield Farm(web, store, bearers)


TENANTS = ("acme", "globex")


class Attacker:
    """Holds one task's webhook URL and token, as whoever found them in a log would."""

    def __init__(self, web: WebProcess, task_uuid: str, secret: str = SECRET) -> None:
        self.url = f"{web.url}/webhooks/runware/{task_uuid}"
        self.token = sign(task_uuid, secret.encode())
        self.task_uuid = task_uuid

    def post(self, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return httpx.post(self.url, params={"token": self.token}, content=content, timeout=60)

    def image(self, **fields: Any) -> dict[str, Any]:
        image_uuid = str(uuid.uuid4())
        return {
            "taskType": "imageInference",
            "taskUUID": self.task_uuid,
            "imageUUID": image_uuid,
            "imageURL": IMAGE_URL.format(image_uuid),
            **fields,
        }


def _submitted(store: JobStore, tenant: str, number_results: int) -> Job:
    params = {**PARAMS, "numberResults": number_results, "tag": uuid.uuid4().hex}
    job, _ = store.create_job(params, tenant=tenant, deadline_s=600)
    assert store.claim(job.id, 0) is not None
    assert store.mark_submitted(job.id, {})
    return job


def _spend_metric(web: WebProcess, name: str = "fluxfarm_spend_usd_total") -> float:
    answer = httpx.get(f"{web.url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == name
    )


def _api_spend(web: WebProcess, bearer: str) -> Decimal:
    answer = httpx.get(
        f"{web.url}/v1/spend", headers={"Authorization": f"Bearer {bearer}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return Decimal(str(answer.json()["totalUsd"]))


def test_forged_results_never_give_a_job_more_images_than_it_asked_for(farm: Farm) -> None:
    victim = _submitted(farm.store, "acme", 2)
    attacker = Attacker(farm.web, victim.task_uuid)
    # more than asked for in one body: refused whole
    answer = attacker.post({"data": [attacker.image() for _ in range(3)]})
    assert answer.status_code == 409, answer.text
    assert farm.store.get(victim.id).images == []
    assert attacker.post({"data": [attacker.image(), attacker.image()]}).status_code == 200
    assert farm.store.get(victim.id).images_received == 2
    # and one by one once the job has them all
    for _ in range(5):
        assert attacker.post(attacker.image()).status_code == 409
    after = farm.store.get(victim.id)
    assert after.images_received == len(after.images) == after.number_results == 2


def test_a_terminal_job_takes_late_images_only_up_to_its_number_results(farm: Farm) -> None:
    canceled = _submitted(farm.store, "acme", 2)
    farm.store.cancel(canceled.id)
    late = Attacker(farm.web, canceled.task_uuid)
    # Runware bills what a canceled task still delivers: kept late, with its cost, and the
    # job stays canceled; past numberResults, nothing more is believed
    answers = [late.post(late.image(cost=0.03)) for _ in range(2)]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"outcomes": ["late"]})] * 2
    for _ in range(5):
        assert late.post(late.image(cost=0.03)).status_code == 409
    after = farm.store.get(canceled.id)
    assert after.state is JobState.CANCELED
    assert (after.images_received, len(after.images)) == (2, 2)
    assert all(image.late for image in after.images)
    assert after.cost_usd == Decimal("0.06")


def test_a_forged_cost_never_reaches_spend_or_another_tenants_budget(farm: Farm) -> None:
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    before = (
        _api_spend(farm.web, farm.bearers["acme"]),
        _api_spend(farm.web, farm.bearers["globex"]),
        spend_report(farm.store.engine).total_usd,
        _spend_metric(farm.web),
        farm.store.committed_spend_since(day_start),
        _spend_metric(farm.web, UNCONFIRMED),
    )
    # another tenant's honest result, delivered as Runware does
    honest = Attacker(farm.web, _submitted(farm.store, "globex", 1).task_uuid)
    assert honest.post(honest.image(cost=0.03)).status_code == 200
    victim = _submitted(farm.store, "acme", 2)
    attacker = Attacker(farm.web, victim.task_uuid)
    answer = attacker.post(attacker.image(cost=999_999.99, NSFWContent=True))
    assert answer.status_code == 200, answer.text
    assert attacker.post(attacker.image(cost=0.03)).status_code == 200
    after = farm.store.get(victim.id)
    assert (after.state, after.images_received, after.cost_usd) == (
        JobState.SUBMITTED,
        2,
        Decimal("0.03"),
    )
    # spend is what Runware bills: the honest results only, in every figure
    assert _api_spend(farm.web, farm.bearers["acme"]) - before[0] == Decimal("0.03")
    assert _api_spend(farm.web, farm.bearers["globex"]) - before[1] == Decimal("0.03")
    assert spend_report(farm.store.engine).total_usd - before[2] == Decimal("0.06")
    assert _spend_metric(farm.web) - before[3] == pytest.approx(0.06)
    # the daily budget sees the same, so another tenant's next job is not held back
    assert farm.store.committed_spend_since(day_start) - before[4] == Decimal("0.06")
    # the forged figure is kept apart, for the operator
    assert _spend_metric(farm.web, UNCONFIRMED) - before[5] == pytest.approx(999_999.99)


def test_an_image_url_off_the_download_allow_list_is_refused(farm: Farm) -> None:
    victim = _submitted(farm.store, "acme", 1)
    attacker = Attacker(farm.web, victim.task_uuid)
    for url in (METADATA_URL, "https://im.runware.ai:5432/x.jpg", "http://im.runware.ai/x.jpg"):
        answer = attacker.post(attacker.image(imageURL=url))
        assert answer.status_code == 422, answer.text
    after = farm.store.get(victim.id)
    assert (after.state, after.images) == (JobState.SUBMITTED, [])


def test_inline_data_bigger_than_the_requested_image_is_refused(farm: Farm) -> None:
    victim = _submitted(farm.store, "acme", 1)
    attacker = Attacker(farm.web, victim.task_uuid)
    # a 256x256 JPEG never takes 8 MiB
    huge = base64.b64encode(b"\xff\xd8\xff" + b"\0" * (8 * 1024 * 1024)).decode()
    answer = attacker.post(attacker.image(imageURL=None, imageBase64Data=huge))
    assert answer.status_code == 422, answer.text
    assert farm.store.get(victim.id).images == []


def test_a_body_of_100k_items_is_refused_before_it_is_recorded(farm: Farm) -> None:
    victim = _submitted(farm.store, "acme", 2)
    attacker = Attacker(farm.web, victim.task_uuid)
    many = orjson.dumps({"data": [attacker.image(cost=999.0) for _ in range(100_000)]})
    answer = attacker.post(many)
    assert answer.status_code == 413, answer.text
    after = farm.store.get(victim.id)
    assert (after.state, after.images) == (JobState.SUBMITTED, [])


def test_the_token_expires_after_the_job_finished_and_rotation_still_works(farm: Farm) -> None:
    victim = _submitted(farm.store, "acme", 2)
    attacker = Attacker(farm.web, victim.task_uuid)
    rotated = Attacker(farm.web, victim.task_uuid, PREVIOUS_SECRET)
    known = attacker.image(cost=0.03)
    assert attacker.post(known).status_code == 200
    # a token under the previous secret still works during a rotation
    assert rotated.post(rotated.image(cost=0.03)).status_code == 200
    assert attacker.post(known).json() == {"outcomes": ["duplicate"]}
    keep_images(farm.store, victim.id)
    assert farm.store.get(victim.id).state is JobState.SUCCEEDED
    with farm.store.engine.begin() as conn:
        over_an_hour_ago = datetime.now(UTC) - timedelta(hours=1, minutes=1)
        conn.execute(
            update(jobs).where(jobs.c.id == victim.id).values(finished_at=over_an_hour_ago)
        )
    for holder in (attacker, rotated):
        answer = holder.post(known)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["outcome"] == "token_expired"
