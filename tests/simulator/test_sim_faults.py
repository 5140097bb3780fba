"""Fault injection: refused submits, failed images, webhook mishaps, hangs, the ambiguous case."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from sim_support import API_KEY, Receiver, image_task, quick_settings, wait_until

from simulator.settings import FaultSettings
from simulator.testing import SimulatorHandle, running_simulator

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def fresh() -> Iterator[SimulatorHandle]:
    with running_simulator(quick_settings()) as handle:
        yield handle


def lookup(sim: SimulatorHandle, task_uuid: str) -> httpx.Response:
    body = [{"taskType": "getResponse", "taskUUID": task_uuid}]
    return httpx.post(sim.api_url, json=body, headers=HEADERS)


@pytest.mark.parametrize(
    ("share", "status", "code"),
    [
        ("submit_429_share", 429, "rateLimitExceeded"),
        ("submit_503_share", 503, "serviceUnavailable"),
        ("submit_504_share", 504, "queueTimeout"),
        ("submit_500_share", 500, "internalServerError"),
        ("submit_402_share", 402, "insufficientCredits"),
    ],
)
def test_refused_submit_creates_no_task(
    fresh: SimulatorHandle, share: str, status: int, code: str
) -> None:
    fresh.set_faults(**{share: 1.0})
    task = image_task()
    response = httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    assert response.status_code == status
    [error] = response.json()["errors"]
    assert (error["code"], error["taskUUID"]) == (code, task["taskUUID"])
    fresh.reset_faults()
    assert lookup(fresh, task["taskUUID"]).json()["errors"][0]["code"] == "taskNotFound"
    stats = fresh.stats()
    assert stats["tasks_accepted"] == 0
    assert stats["submits_rejected"] == {code: 1}
    # Nothing was accepted, so the same taskUUID may be submitted again.
    assert httpx.post(fresh.api_url, json=[task], headers=HEADERS).status_code == 200


def test_polls_are_not_subject_to_submit_faults(fresh: SimulatorHandle) -> None:
    task = image_task()
    httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    fresh.set_faults(submit_503_share=1.0)
    assert lookup(fresh, task["taskUUID"]).status_code == 200


def test_hanging_submit_times_out_and_creates_no_task(fresh: SimulatorHandle) -> None:
    fresh.set_faults(submit_hang_share=1.0, hang_s=3.0)
    task = image_task()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fresh.api_url, json=[task], headers=HEADERS, timeout=0.3)
    fresh.reset_faults()
    assert lookup(fresh, task["taskUUID"]).status_code == 400
    assert fresh.stats()["tasks_accepted"] == 0


def test_accepted_submit_answered_with_500_still_runs_and_bills(fresh: SimulatorHandle) -> None:
    fresh.set_faults(accepted_error_share=1.0)
    task = image_task(includeCost=True)
    response = httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    assert response.status_code == 500
    assert response.json()["errors"][0]["taskUUID"] == task["taskUUID"]
    fresh.reset_faults()
    wait_until(lambda: fresh.task(task["taskUUID"])["status"] == "done")
    assert lookup(fresh, task["taskUUID"]).json()["data"][0]["status"] == "success"
    assert fresh.stats()["charged_usd_exact"] == "0.03"
    retry = httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    assert retry.json()["errors"][0]["code"] == "conflictTaskUUID"


def test_accepted_submit_that_hangs_still_delivers_its_webhook(
    fresh: SimulatorHandle, receiver: Receiver
) -> None:
    fresh.set_faults(accepted_error_share=1.0, accepted_error_mode="hang", hang_s=3.0)
    task = image_task(webhookURL=f"{receiver.url}/hook")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fresh.api_url, json=[task], headers=HEADERS, timeout=0.3)
    [post] = receiver.wait_for(1)
    assert orjson.loads(post.body)["taskUUID"] == task["taskUUID"]
    assert fresh.stats()["images_generated"] == 1


def test_an_answer_held_past_the_client_timeout_still_bills_the_task_once(
    fresh: SimulatorHandle,
) -> None:
    fresh.set_faults(answer_delay_s=1.0)
    task = image_task()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fresh.api_url, json=[task], headers=HEADERS, timeout=0.3)
    retry = httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    assert retry.json()["errors"][0]["code"] == "conflictTaskUUID"
    assert fresh.stats()["tasks_accepted"] == 1


def test_sync_task_whose_images_all_time_out_is_an_error(fresh: SimulatorHandle) -> None:
    fresh.set_faults(timeout_provider_share=1.0)
    task = image_task(numberResults=2)
    response = httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    assert response.status_code == 504
    errors = response.json()["errors"]
    assert [error["code"] for error in errors] == ["timeoutProvider"] * 2
    assert fresh.stats()["charged_usd"] == 0


def test_safety_block_is_an_unbilled_image_error(fresh: SimulatorHandle) -> None:
    fresh.set_faults(safety_block_share=1.0)
    task = image_task(deliveryMethod="async", includeCost=True)
    httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    wait_until(lambda: fresh.task(task["taskUUID"])["status"] == "done")
    [item] = lookup(fresh, task["taskUUID"]).json()["data"]
    assert (item["error"]["code"], item["status"]) == ("contentPolicyViolation", "error")
    assert fresh.stats()["charged_usd"] == 0
    assert fresh.stats()["image_errors"] == 1


def test_nsfw_flag_marks_delivered_images(fresh: SimulatorHandle) -> None:
    fresh.set_faults(nsfw_flag_share=1.0)
    item = httpx.post(fresh.api_url, json=[image_task()], headers=HEADERS).json()["data"][0]
    assert item["NSFWContent"] is True


def test_dropped_webhooks_never_arrive(fresh: SimulatorHandle, receiver: Receiver) -> None:
    fresh.set_faults(webhook_drop_share=1.0)
    task = image_task(numberResults=3, webhookURL=f"{receiver.url}/hook", includeCost=True)
    httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    wait_until(lambda: fresh.stats()["webhooks_dropped"] == 3)
    stats = fresh.stats()
    assert (stats["webhook_attempts"], stats["images_generated"]) == (0, 3)
    assert stats["charged_usd_exact"] == "0.09"
    assert receiver.received == []


def test_duplicated_webhooks_arrive_twice(fresh: SimulatorHandle, receiver: Receiver) -> None:
    fresh.set_faults(webhook_duplicate_share=1.0)
    task = image_task(numberResults=2, webhookURL=f"{receiver.url}/hook")
    httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    posts = receiver.wait_for(4)
    bodies = [orjson.loads(post.body)["imageUUID"] for post in posts]
    assert len(set(bodies)) == 2
    assert {bodies.count(image) for image in bodies} == {2}
    assert fresh.stats()["webhooks_duplicated"] == 2


def test_reordered_webhooks_arrive_out_of_order(fresh: SimulatorHandle, receiver: Receiver) -> None:
    fresh.set_faults(webhook_reorder_max_s=0.5)
    task = image_task(numberResults=12, seed=0, webhookURL=f"{receiver.url}/hook")
    httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    seeds = [orjson.loads(post.body)["seed"] for post in receiver.wait_for(12)]
    assert sorted(seeds) == list(range(12))
    assert seeds != sorted(seeds)


@pytest.mark.parametrize(
    "latency",
    [
        {"latency_dist": "fixed", "latency_s": 0.05},
        {"latency_dist": "uniform", "latency_min_s": 0.01, "latency_max_s": 0.1},
        {"latency_dist": "lognormal", "latency_mu": -4.0, "latency_sigma": 0.5},
    ],
    ids=["fixed", "uniform", "lognormal"],
)
def test_latency_distributions_still_complete(
    fresh: SimulatorHandle, latency: dict[str, Any]
) -> None:
    fresh.set_faults(**latency)
    response = httpx.post(fresh.api_url, json=[image_task(numberResults=3)], headers=HEADERS)
    assert len(response.json()["data"]) == 3


def test_faults_are_updated_and_reset_at_runtime() -> None:
    startup = FaultSettings(submit_429_share=0.25)
    with running_simulator(quick_settings(faults=startup)) as sim:
        assert sim.faults()["submit_429_share"] == 0.25
        current = sim.set_faults(webhook_drop_share=0.5, latency_s=1)
        assert current == {**startup.as_dict(), "webhook_drop_share": 0.5, "latency_s": 1.0}
        assert sim.faults() == current
        assert sim.reset_faults() == startup.as_dict()
        sim.set_faults(timeout_provider_share=1.0)
        assert sim.set_faults(reset=True) == startup.as_dict()


@pytest.mark.parametrize(
    "changes",
    [
        {"submit_429_share": 1.5},
        {"latency_dist": "gamma"},
        {"no_such_fault": 1},
        {"hang_s": "long"},
        {"webhook_drop_share": True},
        [1, 2],
    ],
)
def test_invalid_fault_update_is_rejected_and_changes_nothing(
    sim: SimulatorHandle, changes: Any
) -> None:
    before = sim.faults()
    response = httpx.post(sim.url + "/_sim/faults", json=changes)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalidFaultSettings"
    assert sim.faults() == before


def test_reset_forgets_tasks_and_counters(fresh: SimulatorHandle) -> None:
    task = image_task()
    httpx.post(fresh.api_url, json=[task], headers=HEADERS)
    fresh.reset()
    stats = fresh.stats()
    assert (stats["tasks_accepted"], stats["charged_usd"], stats["tasks_in_memory"]) == (0, 0, 0)
    assert lookup(fresh, task["taskUUID"]).status_code == 400
    assert httpx.get(f"{fresh.url}/_sim/tasks/{uuid.uuid4()}").status_code == 404


def test_sync_request_held_too_long_is_504_while_the_task_finishes() -> None:
    settings = quick_settings(sync_timeout_s=0.2, faults=FaultSettings(latency_s=0.6))
    with running_simulator(settings) as sim:
        task = image_task()
        response = httpx.post(sim.api_url, json=[task], headers=HEADERS)
        assert response.status_code == 504
        [error] = response.json()["errors"]
        assert (error["code"], error["taskUUID"]) == ("requestTimeout", task["taskUUID"])
        wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")
        assert sim.stats()["images_generated"] == 1


def test_a_key_over_its_in_flight_limit_is_refused_until_its_tasks_finish(
    fresh: SimulatorHandle,
) -> None:
    fresh.set_faults(max_in_flight_per_key=3, latency_s=0.5)
    tasks = [image_task(deliveryMethod="async") for _ in range(5)]
    response = httpx.post(fresh.api_url, json=tasks, headers=HEADERS)
    refused = {error["taskUUID"] for error in response.json()["errors"]}
    assert refused == {task["taskUUID"] for task in tasks[3:]}
    assert {e["code"] for e in response.json()["errors"]} == {"rateLimitExceeded"}
    assert fresh.stats()["max_in_flight_per_key"] == {"1": 3}

    def finished(task: dict[str, Any]) -> bool:
        return bool(lookup(fresh, task["taskUUID"]).json()["data"][0].get("imageUUID"))

    wait_until(lambda: all(finished(task) for task in tasks[:3]))
    again = httpx.post(fresh.api_url, json=tasks[3:], headers=HEADERS)
    assert again.status_code == 200
    stats = fresh.stats()
    assert (stats["tasks_accepted"], stats["max_in_flight_per_key"]) == (5, {"1": 3})
