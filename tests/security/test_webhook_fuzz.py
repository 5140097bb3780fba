"""Hypothesis over webhook bodies and tokens: never a 5xx, and a refusal changes nothing;
forged bodies under a valid token never corrupt their job or its spend."""

from __future__ import annotations

import base64
import json
import uuid
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from farmdomain.jobs import JobState, sources_of
from farmdomain.pricing import estimate_usd
from jobstore.spend import spend_report
from runware_edge.tokens import sign
from tests.security.conftest import PARAMS, PREVIOUS_SECRET, TALLY, Farm

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
huge = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**80), st.just(-1))
scalars = st.one_of(
    st.none(), st.booleans(), huge, st.floats(allow_nan=False, allow_infinity=False), text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "taskType", "imageUUID", "imageURL", "imageBase64Data", "imageDataURI", "seed", "cost",
    "NSFWContent", "status", "error", "code", "message", "parameter",
]  # fmt: skip


def item(task_uuid: str) -> st.SearchStrategy[dict[str, Any]]:
    plausible = st.fixed_dictionaries(
        {"taskUUID": st.sampled_from([task_uuid, str(uuid.uuid4()), ""]) | values},
        optional={
            "imageUUID": st.uuids().map(str) | values,
            "imageURL": st.just("https://im.runware.ai/image/x.jpg") | values,
            "seed": huge | values,
            "cost": st.floats(min_value=-1, max_value=1e7) | values,
            "status": st.sampled_from(["success", "error", "processing"]) | values,
            "error": values,
            "NSFWContent": st.booleans() | values,
            "code": text,
        },
    )
    return plausible | st.dictionaries(st.sampled_from(FIELDS) | text, values, max_size=6)


def bodies(task_uuid: str) -> st.SearchStrategy[Any]:
    one = item(task_uuid)
    return st.one_of(
        one,  # the flat shape
        st.fixed_dictionaries({"data": st.lists(one, max_size=3) | values}),
        st.fixed_dictionaries({"errors": st.lists(one, max_size=3) | values}),
        st.fixed_dictionaries(
            {"data": st.lists(one, max_size=2), "errors": st.lists(one, max_size=2)}
        ),
        values,
    )


def nested(depth: int) -> bytes:
    return b'{"data": ' + b"[" * depth + b"]" * depth + b"}"


@settings(settings.get_profile("security"))
@given(data=st.data())
def test_webhook_bodies_never_5xx_and_refusals_change_nothing(farm: Farm, data: Any) -> None:
    job = farm.job()
    body = data.draw(bodies(job.task_uuid))
    content = json.dumps(body, ensure_ascii=data.draw(st.booleans())).encode()
    status, changed = farm.webhook(job.task_uuid, content)
    TALLY.record("webhook body", status, changed and status >= 400)
    assert status < 500
    assert not (status >= 400 and changed)


@settings(settings.get_profile("security"), max_examples=60)
@given(
    raw=st.binary(max_size=200)
    | st.integers(min_value=1, max_value=50_000).map(nested)
    | st.integers(min_value=1, max_value=50_000).map(lambda n: b"9" * n)
)
def test_raw_webhook_bytes_never_5xx_and_change_nothing(farm: Farm, raw: bytes) -> None:
    job = farm.job()
    status, changed = farm.webhook(job.task_uuid, raw)
    TALLY.record("webhook raw", status, changed and status >= 400)
    assert status < 500
    assert not (status >= 400 and changed)


def result_for(task_uuid: str) -> bytes:
    image = str(uuid.uuid4())
    body = {"taskUUID": task_uuid, "imageUUID": image, "imageURL": "https://im.runware.ai/i.jpg"}
    return json.dumps(body).encode()


@settings(settings.get_profile("security"), max_examples=60)
@given(
    forge=st.sampled_from(["forged", "truncated", "other-task", "rotated-out", "extended"]),
    junk=st.text(st.characters(codec="ascii"), max_size=60),
)
def test_bad_tokens_are_refused_and_change_nothing(farm: Farm, forge: str, junk: str) -> None:
    job, other = farm.job(), farm.job()
    good = sign(job.task_uuid, b"security-suite-secret")
    token = {
        "forged": junk,
        "truncated": good[: len(junk) % len(good)],
        "other-task": sign(other.task_uuid, b"security-suite-secret"),
        "rotated-out": sign(job.task_uuid, b"a secret rotated out long ago"),
        "extended": good + (junk or "x"),
    }[forge]
    status, changed = farm.webhook(job.task_uuid, result_for(job.task_uuid), token=token)
    TALLY.record("webhook token", status, changed)
    assert status == 401
    assert not changed


@settings(settings.get_profile("security"), max_examples=40)
@given(shape=st.sampled_from(["flat", "data", "errors"]))
def test_a_token_for_task_a_never_completes_task_b(farm: Farm, shape: str) -> None:
    a, b = farm.job(), farm.job()
    item = json.loads(result_for(b.task_uuid))
    body = {"flat": item, "data": {"data": [item]}, "errors": {"errors": [item]}}[shape]
    # A's URL and token, carrying B's result
    status, changed = farm.webhook(a.task_uuid, json.dumps(body).encode())
    TALLY.record("webhook token", status, changed)
    assert (status, changed) == (403, False)
    # B's URL with A's token
    token = sign(a.task_uuid, b"security-suite-secret")
    status, changed = farm.webhook(b.task_uuid, result_for(b.task_uuid), token=token)
    TALLY.record("webhook token", status, changed)
    assert (status, changed) == (401, False)
    assert farm.store.get(b.id).state is b.state


def test_the_previous_secret_is_accepted_during_a_rotation(farm: Farm) -> None:
    job = farm.job()
    token = sign(job.task_uuid, PREVIOUS_SECRET.encode())
    status, changed = farm.webhook(job.task_uuid, result_for(job.task_uuid), token=token)
    assert (status, changed) == (200, True)


def test_a_replayed_webhook_for_a_terminal_job_is_acknowledged_and_changes_nothing(
    farm: Farm,
) -> None:
    job = farm.job()
    body = result_for(job.task_uuid)
    assert farm.webhook(job.task_uuid, body) == (200, True)
    for _ in range(3):
        status, changed = farm.webhook(job.task_uuid, body)
        TALLY.record("webhook replay", status, changed)
        assert (status, changed) == (200, False)


# Forged but authenticated: bodies a leaked token's holder could send for its real task,
# near enough to Runware's to pass the parser, so that only the claim checks stand between
# them and the job.
CLAIMED_URLS = [
    "https://im.runware.ai/image/ws/2/ii/{}.jpg",
    "http://169.254.169.254/latest/meta-data/{}",
    "https://im.runware.ai:6379/{}.jpg",
    "http://im.runware.ai/{}.jpg",
    "https://evil.example/{}.jpg",
]
JPEG_START = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 60).decode()


def claimed_result(task_uuid: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "taskUUID": st.just(task_uuid),
            # a small pool, so duplicates and new images mix
            "imageUUID": st.sampled_from([f"img-{n}" for n in range(6)]),
        },
        optional={
            "imageURL": st.sampled_from(CLAIMED_URLS).map(lambda url: url.format(uuid.uuid4())),
            "imageBase64Data": st.sampled_from(
                [JPEG_START, JPEG_START * 4000, "bm90IGFuIGltYWdl", "***"]
            ),
            "cost": st.one_of(
                st.sampled_from([0.0, 0.03, 0.0899, 0.09, 999_999.99]),
                st.floats(min_value=0, max_value=999_999),
            ),
            "seed": st.integers(min_value=0, max_value=2**63 - 1),
            "NSFWContent": st.booleans(),
            "status": st.sampled_from(["success", "processing"]),
        },
    )


def claimed_body(task_uuid: str) -> st.SearchStrategy[Any]:
    one = claimed_result(task_uuid)
    error = st.fixed_dictionaries(
        {"taskUUID": st.just(task_uuid), "code": st.sampled_from(["timeoutProvider", "x"])}
    )
    return st.one_of(
        one,
        st.fixed_dictionaries({"data": st.lists(one, min_size=1, max_size=8)}),
        st.fixed_dictionaries({"errors": st.lists(error, min_size=1, max_size=2)}),
    )


@settings(settings.get_profile("security"))
@given(data=st.data())
def test_forged_bodies_with_a_valid_token_are_refused_or_recorded_and_corrupt_no_job(
    farm: Farm, data: Any
) -> None:
    number_results = data.draw(st.integers(min_value=1, max_value=3))
    params = {**PARAMS, "numberResults": number_results, "tag": uuid.uuid4().hex}
    job, _ = farm.store.create_job(params, tenant="acme", deadline_s=600)
    assert farm.store.claim(job.id, 0) is not None
    assert farm.store.mark_submitted(job.id, {})
    spent_before = spend_report(farm.store.engine).total_usd
    for body in data.draw(st.lists(claimed_body(job.task_uuid), min_size=1, max_size=5)):
        status, changed = farm.webhook(job.task_uuid, json.dumps(body).encode())
        TALLY.record("webhook claims", status, changed and status >= 400)
        assert status < 500
        assert status < 400 or not changed
    after = farm.store.get(job.id, details=True)
    assert after.images_received == len(after.images) <= number_results
    # the job went only where its state machine lets it, and completed at most once
    for event in after.events:
        if event.from_state is not None and event.to_state != event.from_state:
            assert JobState(event.from_state) in sources_of(JobState(str(event.to_state)))
    assert [event.kind for event in after.events].count("completed") <= 1
    if after.state is JobState.SUCCEEDED:
        assert after.images_received == number_results
    # spend holds believed costs only: none over the cost factor times the estimate
    ceiling = estimate_usd(params) / number_results * 3
    costs = [image.cost_usd or Decimal(0) for image in after.images]
    assert all(cost <= ceiling for cost in costs)
    assert after.cost_usd == sum(costs, Decimal(0))
    assert spend_report(farm.store.engine).total_usd - spent_before == after.cost_usd
