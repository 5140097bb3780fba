"""Authentication and hostile envelopes: Runware-shaped 4xx, and the server stays up."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sim_support import API_KEY, image_task, quick_settings

from simulator.testing import SimulatorHandle, running_simulator


def test_bearer_key_is_accepted(sim: SimulatorHandle) -> None:
    response = httpx.post(
        sim.api_url, json=[image_task()], headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


def test_leading_authentication_task_is_accepted(sim: SimulatorHandle) -> None:
    auth = {"taskType": "authentication", "apiKey": API_KEY}
    response = httpx.post(sim.api_url, json=[auth, image_task()])
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


@pytest.mark.parametrize(
    ("headers", "tasks"),
    [
        ({"Authorization": "Bearer wrong"}, [image_task()]),
        ({}, [image_task()]),
        ({"Authorization": API_KEY}, [image_task()]),
        ({}, [{"taskType": "authentication", "apiKey": "wrong"}, image_task()]),
        ({"Authorization": f"Bearer {API_KEY}"}, [{"taskType": "authentication"}, image_task()]),
    ],
    ids=["bad bearer", "no key", "no bearer scheme", "bad auth task", "auth task without key"],
)
def test_bad_or_missing_key_is_401_invalid_api_key(
    sim: SimulatorHandle, headers: dict[str, str], tasks: list[object]
) -> None:
    response = httpx.post(sim.api_url, json=tasks, headers=headers)
    assert response.status_code == 401
    [error] = response.json()["errors"]
    assert error["code"] == "invalidApiKey"
    assert error["parameter"] == "apiKey"
    assert error["taskType"] == "authentication"


def test_configured_keys_replace_the_default() -> None:
    with running_simulator(quick_settings(api_keys=("k1", "k2"))) as sim:
        for key, status in [("k2", 200), ("sim-key", 401)]:
            response = httpx.post(
                sim.api_url, json=[image_task()], headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == status


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"this is not json", "application/json", 400, "invalidRequestBody"),
        (b'{"taskType": "imageInference"}', "application/json", 400, "invalidRequestBody"),
        (b"[1, 2, 3]", "application/json", 400, "invalidRequestBody"),
        (b"[]", "application/json", 400, "invalidRequestBody"),
        (b"[NaN]", "application/json", 400, "invalidRequestBody"),
        (b"\xff\xfe[", "application/json", 400, "invalidRequestBody"),
        (b"[" * 100_000, "application/json", 400, "invalidRequestBody"),
        (b"[{}]", "text/plain", 415, "invalidContentType"),
        (b"[{}]", "", 415, "invalidContentType"),
        (b"[" + b" " * 9_000_000 + b"]", "application/json", 413, "payloadTooLarge"),
    ],
    ids=[
        "not json",
        "object",
        "ints",
        "empty array",
        "NaN",
        "bad utf-8",
        "deep nesting",
        "text/plain",
        "no content type",
        "oversize",
    ],
)
def test_hostile_envelope_gets_runware_shaped_4xx(
    client: httpx.Client,
    sim: SimulatorHandle,
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    response = client.post(sim.api_url, content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    [error] = response.json()["errors"]
    assert error["code"] == code
    assert error["message"]
    assert client.get(sim.url + "/healthz").json() == {"status": "ok"}


def test_oversize_chunked_body_is_413(client: httpx.Client, sim: SimulatorHandle) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 1_000_000

    response = client.post(
        sim.api_url, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "payloadTooLarge"


def test_too_many_tasks_in_one_request(client: httpx.Client, sim: SimulatorHandle) -> None:
    response = client.post(sim.api_url, json=[image_task() for _ in range(11)])
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "maxTasksPerRequestExceeded"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1"), ("GET", "/nowhere")])
def test_unknown_routes_are_runware_shaped(
    client: httpx.Client, sim: SimulatorHandle, method: str, path: str
) -> None:
    response = client.request(method, sim.url + path)
    assert response.status_code in (404, 405)
    assert response.json()["errors"][0]["code"] in ("notFound", "methodNotAllowed")


def test_lookup_of_unknown_task_is_400_not_found(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    for task_type in ("getResponse", "getTaskDetails"):
        task_uuid = str(uuid.uuid4())
        response = client.post(sim.api_url, json=[{"taskType": task_type, "taskUUID": task_uuid}])
        assert response.status_code == 400
        [error] = response.json()["errors"]
        assert (error["code"], error["taskUUID"]) == ("taskNotFound", task_uuid)
