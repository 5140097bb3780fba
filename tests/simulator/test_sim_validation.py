"""Every FLUX.2 [pro] parameter rule, at its boundaries, over real HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sim_support import image_task
from validation_cases import INVALID, VALID

from simulator.testing import SimulatorHandle


def submit(client: httpx.Client, sim: SimulatorHandle, tasks: list[Any]) -> httpx.Response:
    return client.post(sim.api_url, json=tasks)


@pytest.mark.parametrize(("label", "overrides"), VALID, ids=[case[0] for case in VALID])
def test_valid_values_are_accepted(
    client: httpx.Client, sim: SimulatorHandle, label: str, overrides: dict[str, Any]
) -> None:
    task = image_task(**{"deliveryMethod": "async", **overrides})
    response = submit(client, sim, [task])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]
    }


@pytest.mark.parametrize(
    ("label", "overrides", "code", "parameter"), INVALID, ids=[case[0] for case in INVALID]
)
def test_invalid_value_is_rejected_with_code_and_parameter(
    client: httpx.Client,
    sim: SimulatorHandle,
    label: str,
    overrides: dict[str, Any],
    code: str,
    parameter: str,
) -> None:
    task = image_task(**{"deliveryMethod": "async", **overrides})
    response = submit(client, sim, [task])
    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    assert [(error["code"], error["parameter"]) for error in body["errors"]] == [(code, parameter)]
    error = body["errors"][0]
    assert error["taskType"] == "imageInference"
    assert error["message"]
    if isinstance(task.get("taskUUID"), str):
        assert error["taskUUID"] == task["taskUUID"]


def test_every_error_of_a_task_is_reported(client: httpx.Client, sim: SimulatorHandle) -> None:
    task = image_task(width=250, seed=-5, outputFormat="GIF", foo=1)
    response = submit(client, sim, [task])
    assert response.status_code == 400
    found = {(error["code"], error["parameter"]) for error in response.json()["errors"]}
    assert found == {
        ("invalidWidth", "width"),
        ("invalidSeed", "seed"),
        ("invalidOutputFormat", "outputFormat"),
        ("unknownParameter", "foo"),
    }


def test_reused_task_uuid_is_a_conflict(client: httpx.Client, sim: SimulatorHandle) -> None:
    task = image_task(deliveryMethod="async")
    assert submit(client, sim, [task]).status_code == 200
    again = submit(client, sim, [task])
    assert again.status_code == 400
    [error] = again.json()["errors"]
    assert (error["code"], error["parameter"], error["taskUUID"]) == (
        "conflictTaskUUID",
        "taskUUID",
        task["taskUUID"],
    )


def test_same_task_uuid_twice_in_one_request_conflicts(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    task = image_task(deliveryMethod="async")
    response = submit(client, sim, [task, task])
    assert response.status_code == 200
    assert [error["code"] for error in response.json()["errors"]] == ["conflictTaskUUID"]


def test_rejected_task_uuid_can_be_used_again(client: httpx.Client, sim: SimulatorHandle) -> None:
    task = image_task(deliveryMethod="async", width=100)
    assert submit(client, sim, [task]).status_code == 400
    task["width"] = 256
    assert submit(client, sim, [task]).status_code == 200


def test_errors_are_scoped_per_task_in_a_mixed_request(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    good, bad = image_task(), image_task(ttl=10)
    response = submit(client, sim, [good, bad])
    assert response.status_code == 200
    body = response.json()
    assert [item["taskUUID"] for item in body["data"]] == [good["taskUUID"]]
    assert [(e["taskUUID"], e["code"]) for e in body["errors"]] == [(bad["taskUUID"], "invalidTtl")]


def test_request_where_every_task_fails_is_400(client: httpx.Client, sim: SimulatorHandle) -> None:
    response = submit(client, sim, [image_task(seed=-1), image_task(model="x")])
    assert response.status_code == 400
    assert [error["code"] for error in response.json()["errors"]] == [
        "invalidSeed",
        "unsupportedModel",
    ]


@pytest.mark.parametrize("task_type", ["imageUpscale", "ping", None, 5])
def test_other_task_types_are_unsupported(
    client: httpx.Client, sim: SimulatorHandle, task_type: Any
) -> None:
    response = submit(client, sim, [{"taskType": task_type, "taskUUID": str(uuid.uuid4())}])
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["code"], error["parameter"]) == ("unsupportedTaskType", "taskType")
