"""getResponse (cumulative per-image state) and getTaskDetails."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sim_support import API_KEY, image_task, quick_settings, wait_until

from simulator.settings import FaultSettings
from simulator.testing import running_simulator

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def poll(client: httpx.Client, url: str, task_uuid: str) -> dict[str, Any]:
    response = client.post(url, json=[{"taskType": "getResponse", "taskUUID": task_uuid}])
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_get_response_goes_from_processing_to_success() -> None:
    faults = FaultSettings(latency_s=0.4)
    with (
        running_simulator(quick_settings(faults=faults)) as sim,
        httpx.Client(headers=HEADERS) as client,
    ):
        task = image_task(deliveryMethod="async", numberResults=2, includeCost=True)
        client.post(sim.api_url, json=[task])
        early = poll(client, sim.api_url, task["taskUUID"])
        assert early == {
            "data": [
                {"taskType": "imageInference", "taskUUID": task["taskUUID"], "status": "processing"}
            ]
            * 2
        }

        def finished() -> bool:
            return all(
                item["status"] == "success"
                for item in poll(client, sim.api_url, task["taskUUID"])["data"]
            )

        wait_until(finished)
        late = poll(client, sim.api_url, task["taskUUID"])
        assert "errors" not in late
        for item in late["data"]:
            assert item["imageURL"].startswith(sim.url)
            assert item["cost"] == 0.03
            assert item["taskUUID"] == task["taskUUID"]
        again = poll(client, sim.api_url, task["taskUUID"])
        assert again == late


def test_get_response_puts_failed_images_in_errors() -> None:
    faults = FaultSettings(timeout_provider_share=1.0)
    with (
        running_simulator(quick_settings(faults=faults)) as sim,
        httpx.Client(headers=HEADERS) as client,
    ):
        task = image_task(deliveryMethod="async", numberResults=2)
        client.post(sim.api_url, json=[task])
        wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")
        body = poll(client, sim.api_url, task["taskUUID"])
        assert body["data"] == []
        assert len(body["errors"]) == 2
        for error in body["errors"]:
            assert error["status"] == "error"
            assert error["code"] == "timeoutProvider"
            assert error["taskUUID"] == task["taskUUID"]
            assert error["message"]


def test_get_response_mixes_successes_and_failures() -> None:
    faults = FaultSettings(timeout_provider_share=0.5)
    settings = quick_settings(faults=faults, random_seed=3)
    with running_simulator(settings) as sim, httpx.Client(headers=HEADERS) as client:
        task = image_task(deliveryMethod="async", numberResults=20)
        client.post(sim.api_url, json=[task])
        wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")
        body = poll(client, sim.api_url, task["taskUUID"])
        assert len(body["data"]) + len(body["errors"]) == 20
        assert body["data"]
        assert body["errors"]
        assert sim.stats()["charged_usd"] == round(0.03 * len(body["data"]), 6)


def test_get_task_details_returns_request_and_response(client: httpx.Client, sim: Any) -> None:
    task = image_task(includeCost=True, seed=5)
    result = client.post(sim.api_url, json=[task]).json()
    details = client.post(
        sim.api_url,
        json=[
            {"taskType": "authentication", "apiKey": API_KEY},
            {"taskType": "getTaskDetails", "taskUUID": task["taskUUID"]},
        ],
    )
    assert details.status_code == 200
    assert details.json() == {
        "data": [
            {
                "taskType": "getTaskDetails",
                "taskUUID": task["taskUUID"],
                "request": [task],
                "response": result,
            }
        ]
    }
    assert API_KEY not in details.text


def test_lookup_with_unknown_parameter_is_rejected(client: httpx.Client, sim: Any) -> None:
    response = client.post(
        sim.api_url,
        json=[{"taskType": "getResponse", "taskUUID": str(uuid.uuid4()), "numberResults": 1}],
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "unknownParameter"


def test_finished_tasks_are_evicted_after_retention() -> None:
    with (
        running_simulator(quick_settings(task_retention_s=0.2)) as sim,
        httpx.Client(headers=HEADERS) as client,
    ):
        task = image_task()
        client.post(sim.api_url, json=[task])
        wait_until(lambda: sim.stats()["tasks_in_memory"] == 0)
        lookup = [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]
        assert client.post(sim.api_url, json=lookup).status_code == 400
        # The UUID is still remembered, so a resubmit is a conflict, not a second charge.
        conflict = client.post(sim.api_url, json=[task])
        assert conflict.json()["errors"][0]["code"] == "conflictTaskUUID"
