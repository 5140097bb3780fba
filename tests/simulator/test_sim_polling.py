"""getResponse (cumulative per-image state) and getTaskDetails."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sim_support import API_KEY, image_task, quick_settings, wait_until

from simulator.settings import FaultSettings, ShapeSettings
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
        assert list(early) == ["data"]
        assert len(early["data"]) == 2
        for item in early["data"]:
            progress = item.pop("progress")
            assert 0 <= progress < 100
            assert item == {
                "taskType": "imageInference",
                "taskUUID": task["taskUUID"],
                "status": "processing",
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


def test_processing_items_carry_no_progress_when_it_is_off() -> None:
    faults = FaultSettings(latency_s=0.4)
    with (
        running_simulator(quick_settings(faults=faults)) as sim,
        httpx.Client(headers=HEADERS) as client,
    ):
        sim.set_shapes(progress=False)
        task = image_task(deliveryMethod="async")
        client.post(sim.api_url, json=[task])
        [item] = poll(client, sim.api_url, task["taskUUID"])["data"]
        assert item == {
            "taskType": "imageInference",
            "taskUUID": task["taskUUID"],
            "status": "processing",
        }


def test_get_response_puts_failed_images_in_data_with_the_error_nested() -> None:
    faults = FaultSettings(timeout_provider_share=1.0)
    with (
        running_simulator(quick_settings(faults=faults)) as sim,
        httpx.Client(headers=HEADERS) as client,
    ):
        task = image_task(deliveryMethod="async", numberResults=2)
        client.post(sim.api_url, json=[task])
        wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")
        body = poll(client, sim.api_url, task["taskUUID"])
        assert list(body) == ["data"]
        assert len(body["data"]) == 2
        for item in body["data"]:
            assert (item["status"], item["taskUUID"]) == ("error", task["taskUUID"])
            assert item["error"]["code"] == "timeoutProvider"
            assert item["error"]["taskUUID"] == task["taskUUID"]
            assert item["error"]["message"]


def test_get_response_puts_failed_images_in_errors_under_failed_items_errors() -> None:
    faults = FaultSettings(timeout_provider_share=1.0)
    shapes = ShapeSettings(failed_items="errors")
    with (
        running_simulator(quick_settings(faults=faults, shapes=shapes)) as sim,
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


@pytest.mark.parametrize("failed_items", ["data", "errors"])
def test_get_response_mixes_successes_and_failures(failed_items: str) -> None:
    faults = FaultSettings(timeout_provider_share=0.5)
    shapes = ShapeSettings(failed_items=failed_items)
    settings = quick_settings(faults=faults, shapes=shapes, random_seed=3)
    with running_simulator(settings) as sim, httpx.Client(headers=HEADERS) as client:
        task = image_task(deliveryMethod="async", numberResults=20)
        client.post(sim.api_url, json=[task])
        wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")
        body = poll(client, sim.api_url, task["taskUUID"])
        items = body["data"] + body.get("errors", [])
        succeeded = [item for item in items if item["status"] == "success"]
        assert len(items) == 20
        assert 0 < len(succeeded) < 20
        assert sim.stats()["charged_usd"] == round(0.03 * len(succeeded), 6)


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
