"""The /v1 WebSocket, frame by frame: authentication and sessions, ping/pong, answers routed
by taskUUID, sync images one frame each, resume with replay, and the rules, faults and
counters it shares with REST."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from sim_support import API_KEY, image_task, quick_settings, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from simulator.settings import FaultSettings
from simulator.testing import SimulatorHandle, running_simulator

AUTH = {"taskType": "authentication", "apiKey": API_KEY}
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def send(ws: ClientConnection, *tasks: dict[str, Any]) -> None:
    ws.send(orjson.dumps(list(tasks)).decode())


def frame(ws: ClientConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(ws.recv(timeout=timeout_s))
    return body


def authenticated(ws: ClientConnection, session: str | None = None) -> str:
    auth = {**AUTH, "connectionSessionUUID": session} if session else AUTH
    send(ws, auth)
    [reply] = frame(ws)["data"]
    assert reply["taskType"] == "authentication"
    session_uuid: str = reply["connectionSessionUUID"]
    assert uuid.UUID(session_uuid).version == 4
    return session_uuid


@pytest.fixture
def ws(sim: SimulatorHandle) -> Iterator[ClientConnection]:
    with connect(sim.ws_url) as connection:
        authenticated(connection)
        yield connection


@pytest.fixture
def fresh() -> Iterator[SimulatorHandle]:
    with running_simulator(quick_settings()) as handle:
        yield handle


def test_ping_is_answered_with_pong_before_and_after_authentication(
    sim: SimulatorHandle,
) -> None:
    with connect(sim.ws_url) as ws:
        send(ws, {"taskType": "ping", "ping": True})
        assert frame(ws) == {"data": [{"taskType": "ping", "pong": True}]}
        authenticated(ws)
        send(ws, {"taskType": "ping", "ping": True})
        assert frame(ws) == {"data": [{"taskType": "ping", "pong": True}]}


def test_bad_key_is_refused_and_the_socket_may_authenticate_again(sim: SimulatorHandle) -> None:
    with connect(sim.ws_url) as ws:
        send(ws, {"taskType": "authentication", "apiKey": "wrong"})
        [error] = frame(ws)["errors"]
        assert (error["code"], error["parameter"], error["taskType"]) == (
            "invalidApiKey",
            "apiKey",
            "authentication",
        )
        authenticated(ws)


def test_tasks_before_authentication_are_refused_by_taskuuid(sim: SimulatorHandle) -> None:
    with connect(sim.ws_url) as ws:
        task = image_task()
        send(ws, task)
        [error] = frame(ws)["errors"]
        assert (error["code"], error["taskUUID"]) == ("missingApiKey", task["taskUUID"])
    assert httpx.get(f"{sim.url}/_sim/tasks/{task['taskUUID']}").status_code == 404


def test_sync_task_is_answered_once_done_as_over_rest(
    ws: ClientConnection, sim: SimulatorHandle
) -> None:
    task = image_task(numberResults=3, includeCost=True, seed=10)
    send(ws, task)
    items = frame(ws)["data"]
    assert [item["seed"] for item in items] == [10, 11, 12]
    assert {item["taskUUID"] for item in items} == {task["taskUUID"]}


def test_sync_task_sends_each_image_as_its_own_frame_under_each(
    sim: SimulatorHandle, shaped: SimulatorHandle
) -> None:
    shaped.set_shapes(ws_sync_frames="each")
    task = image_task(numberResults=3, includeCost=True, seed=10)
    with connect(sim.ws_url) as ws:
        authenticated(ws)
        send(ws, task)
        frames = [frame(ws) for _ in range(3)]
    items = [item for received in frames for item in received["data"]]
    assert all(len(received["data"]) == 1 for received in frames)
    assert {item["taskUUID"] for item in items} == {task["taskUUID"]}
    assert sorted(item["seed"] for item in items) == [10, 11, 12]
    assert all(item["cost"] == 0.03 for item in items)
    image = httpx.get(items[0]["imageURL"])
    assert (image.status_code, image.headers["content-type"]) == (200, "image/jpeg")
    assert items[0]["imageURL"].startswith(sim.url)


def test_async_task_is_acknowledged_then_polled_on_the_same_socket(
    ws: ClientConnection, sim: SimulatorHandle
) -> None:
    task = image_task(deliveryMethod="async", numberResults=2)
    send(ws, task)
    assert frame(ws) == {"data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]}
    wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")
    send(ws, {"taskType": "getResponse", "taskUUID": task["taskUUID"]})
    items = frame(ws)["data"]
    assert [item["status"] for item in items] == ["success", "success"]
    send(ws, {"taskType": "getTaskDetails", "taskUUID": task["taskUUID"]})
    [details] = frame(ws)["data"]
    assert details["taskType"] == "getTaskDetails"
    assert details["request"] == [task]
    assert len(details["response"]["data"]) == 2


def test_a_mixed_message_answers_data_and_errors_in_separate_frames(
    ws: ClientConnection,
) -> None:
    good, bad = image_task(deliveryMethod="async"), image_task(width=100)
    send(ws, good, bad)
    ack, refusal = frame(ws), frame(ws)
    assert ack == {"data": [{"taskType": "imageInference", "taskUUID": good["taskUUID"]}]}
    [error] = refusal["errors"]
    assert (error["code"], error["parameter"], error["taskUUID"]) == (
        "invalidWidth",
        "width",
        bad["taskUUID"],
    )


def test_taskuuid_reused_across_transports_is_a_conflict(
    ws: ClientConnection, sim: SimulatorHandle
) -> None:
    task = image_task(deliveryMethod="async")
    assert httpx.post(sim.api_url, json=[task], headers=HEADERS).status_code == 200
    send(ws, task)
    [error] = frame(ws)["errors"]
    assert (error["code"], error["taskUUID"]) == ("conflictTaskUUID", task["taskUUID"])


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"not json", "invalidRequestBody"),
        (b"{}", "invalidRequestBody"),
        (b"[]", "invalidRequestBody"),
        (b"[" + b" " * 9_000_000 + b"]", "payloadTooLarge"),
    ],
    ids=["not json", "object", "empty", "too large"],
)
def test_malformed_messages_get_an_error_frame_and_the_socket_stays(
    ws: ClientConnection, message: bytes, code: str
) -> None:
    ws.send(message.decode())
    [error] = frame(ws)["errors"]
    assert error["code"] == code
    send(ws, {"taskType": "ping", "ping": True})
    assert frame(ws)["data"][0]["pong"] is True


def test_submit_faults_and_counters_are_the_rest_sides(fresh: SimulatorHandle) -> None:
    fresh.set_faults(submit_429_share=1.0)
    task = image_task()
    with connect(fresh.ws_url) as ws:
        authenticated(ws)
        send(ws, task)
        [error] = frame(ws)["errors"]
        assert (error["code"], error["taskUUID"]) == ("rateLimitExceeded", task["taskUUID"])
        fresh.reset_faults()
        send(ws, task)
        assert frame(ws)["data"][0]["taskUUID"] == task["taskUUID"]
    stats = fresh.stats()
    assert stats["submits_rejected"] == {"rateLimitExceeded": 1}
    assert (stats["tasks_accepted"], stats["images_generated"], stats["requests"]) == (1, 1, 2)
    assert stats["ws_connections"] == 1


def test_accepted_then_failed_runs_and_bills_but_answers_an_error(fresh: SimulatorHandle) -> None:
    fresh.set_faults(accepted_error_share=1.0)
    task = image_task(includeCost=True)
    with connect(fresh.ws_url) as ws:
        authenticated(ws)
        send(ws, task)
        [error] = frame(ws)["errors"]
        assert (error["code"], error["taskUUID"]) == ("internalServerError", task["taskUUID"])
    wait_until(lambda: fresh.task(task["taskUUID"])["status"] == "done")
    assert fresh.stats()["charged_usd_exact"] == "0.03"


def test_a_hanging_submit_leaves_pings_answered(fresh: SimulatorHandle) -> None:
    fresh.set_faults(submit_hang_share=1.0, hang_s=0.6)
    task = image_task()
    with connect(fresh.ws_url) as ws:
        authenticated(ws)
        send(ws, task)
        send(ws, {"taskType": "ping", "ping": True})
        assert frame(ws, timeout_s=0.4)["data"][0]["pong"] is True
        [error] = frame(ws)["errors"]
        assert (error["code"], error["taskUUID"]) == ("requestTimeout", task["taskUUID"])
    assert fresh.stats()["tasks_accepted"] == 0


def test_resume_with_the_session_key_replays_what_was_missed(fresh: SimulatorHandle) -> None:
    fresh.set_faults(latency_s=0.3)
    task = image_task(numberResults=2)
    with connect(fresh.ws_url) as ws:
        session = authenticated(ws)
        send(ws, task)
    wait_until(lambda: fresh.task(task["taskUUID"])["status"] == "done")
    with connect(fresh.ws_url) as ws:
        assert authenticated(ws, session) == session
        items = frame(ws)["data"]
        assert {item["taskUUID"] for item in items} == {task["taskUUID"]}
        assert len({item["imageUUID"] for item in items}) == 2
    stats = fresh.stats()
    assert (stats["ws_sessions_resumed"], stats["ws_frames_replayed"]) == (1, 1)


def test_an_unknown_or_expired_session_key_gets_a_new_session() -> None:
    with running_simulator(quick_settings(ws_session_retention_s=0.1)) as sim:
        with connect(sim.ws_url) as ws:
            session = authenticated(ws)
        wait_until(lambda: sim.stats()["ws_sessions"] == 0)
        with connect(sim.ws_url) as ws:
            assert authenticated(ws, session) != session
            assert authenticated(ws, str(uuid.uuid4())) != session


def test_an_idle_socket_is_closed() -> None:
    with running_simulator(quick_settings(ws_idle_timeout_s=0.2)) as sim, connect(sim.ws_url) as ws:
        authenticated(ws)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert time.monotonic() - started < 5


def test_a_sync_task_waited_for_too_long_gets_a_timeout_frame_and_keeps_running() -> None:
    settings = quick_settings(ws_sync_timeout_s=0.2, faults=FaultSettings(latency_s=0.5))
    with running_simulator(settings) as sim, connect(sim.ws_url) as ws:
        authenticated(ws)
        task = image_task()
        send(ws, task)
        [error] = frame(ws)["errors"]
        assert (error["code"], error["taskUUID"]) == ("requestTimeout", task["taskUUID"])
        wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")


def test_a_dropped_socket_is_resumed_with_its_session(fresh: SimulatorHandle) -> None:
    with connect(fresh.ws_url) as ws:
        session = authenticated(ws)
        assert fresh.disconnect() == 1
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    with connect(fresh.ws_url) as ws:
        assert authenticated(ws, session) == session


@pytest.mark.parametrize("failed_items", ["data", "errors"])
def test_a_partly_moderated_sync_task_answers_its_successes_too(failed_items: str) -> None:
    settings = quick_settings(faults=FaultSettings(safety_block_first=1))
    with running_simulator(settings) as sim, connect(sim.ws_url) as ws:
        sim.set_shapes(failed_items=failed_items)
        authenticated(ws)
        task = image_task(numberResults=3)
        send(ws, task)
        first = frame(ws)
        if failed_items == "data":
            assert [item.get("status") for item in first["data"]] == ["error", None, None]
            assert first["data"][0]["error"]["code"] == "contentPolicyViolation"
        else:
            assert len(first["data"]) == 2
            [error] = frame(ws)["errors"]
            assert error["code"] == "contentPolicyViolation"


@pytest.mark.parametrize("failed_items", ["data", "errors"])
def test_a_moderated_image_of_a_sync_task_is_a_frame_of_its_own(failed_items: str) -> None:
    settings = quick_settings(faults=FaultSettings(safety_block_share=0.5), random_seed=5)
    with running_simulator(settings) as sim, connect(sim.ws_url) as ws:
        sim.set_shapes(failed_items=failed_items, ws_sync_frames="each")
        authenticated(ws)
        task = image_task(numberResults=6)
        send(ws, task)
        frames = [frame(ws) for _ in range(6)]
        if failed_items == "data":
            items = [received["data"][0] for received in frames]
            failed = [item for item in items if item.get("status") == "error"]
            codes = {item["error"]["code"] for item in failed}
        else:
            failed = [received["errors"][0] for received in frames if "errors" in received]
            codes = {error["code"] for error in failed}
        assert 0 < len(failed) < 6
        assert codes == {"contentPolicyViolation"}
