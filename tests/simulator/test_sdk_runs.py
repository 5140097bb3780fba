"""Runware's official SDKs, unchanged, generating against a real simulator process: the seed's
examples, every output, cost, polling and task details, webhooks, progress and a dropped
WebSocket. runware-sdk 1.8.0 runs over REST and WebSocket, runware 0.5.24 over WebSocket
(its only image transport). Every case here passes, as it would against Runware."""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from typing import Any

import httpx
import orjson
from PIL import Image
from sdk_support import Driver, current, legacy, legacy_params, results
from seed_cases import BFL, EXAMPLES, REFERENCES
from sim_support import API_KEY, Receiver, image_task, wait_until

from simulator.testing import SimulatorHandle

TRANSPORTS = ("rest", "websocket")
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
FORMATS = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}


def image_of(item: dict[str, Any]) -> Image.Image:
    """The image an item carries, whichever output type it was asked in."""
    if item.get("imageURL"):
        response = httpx.get(item["imageURL"], timeout=10)
        assert response.status_code == 200
        raw = response.content
    elif item.get("imageBase64Data"):
        raw = base64.b64decode(item["imageBase64Data"])
    else:
        header, _, payload = item["imageDataURI"].partition(",")
        assert header.startswith("data:image/")
        assert header.endswith(";base64")
        raw = base64.b64decode(payload)
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def done(sim: SimulatorHandle, task_uuid: str) -> None:
    wait_until(lambda: sim.task(task_uuid)["status"] == "done")


def seed_task(example: tuple[str, str, int, bool, float], delivery: str) -> dict[str, Any]:
    _, prompt, seed, with_references, _ = example
    task = image_task(
        positivePrompt=prompt,
        width=1536,
        height=1024,
        seed=seed,
        includeCost=True,
        providerSettings=BFL,
        deliveryMethod=delivery,
    )
    if with_references:
        task["inputs"] = {"referenceImages": REFERENCES}
    return task


def test_the_seed_examples_run_sync_and_async_through_both_sdks(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle
) -> None:
    """Each of the model page's four examples (references as data URIs), sync and async,
    on every transport: one image of 1536x1024 with the example's seed and cost."""
    cases = [(example, delivery) for example in EXAMPLES for delivery in ("sync", "async")]
    current_tasks = [(seed_task(e, d), e) for e, d in cases for _ in TRANSPORTS]
    current_outcomes = current_sdk.run(
        *(
            current(sdk_sim, TRANSPORTS[index % 2], task)
            for index, (task, _) in enumerate(current_tasks)
        )
    )
    legacy_tasks = [(seed_task(e, d), e) for e, d in cases]
    legacy_outcomes = legacy_sdk.run(*(legacy(sdk_sim, legacy_params(t)) for t, _ in legacy_tasks))
    items = [(results(o)[0], e) for o, (_, e) in zip(current_outcomes, current_tasks, strict=True)]
    for outcome, (task, example) in zip(legacy_outcomes, legacy_tasks, strict=True):
        if task["deliveryMethod"] == "sync":
            items.append((results(outcome)[0], example))
            continue
        # the older SDK answers an async task with its acknowledgement: the user polls
        assert (outcome["kind"], results(outcome)) == (
            "IAsyncTaskResponse",
            {"taskType": "imageInference", "taskUUID": task["taskUUID"]},
        )
        done(sdk_sim, task["taskUUID"])
        [polled] = legacy_sdk.run(
            legacy(sdk_sim, {"taskUUID": task["taskUUID"]}, call="getResponse")
        )
        items.append((results(polled)[0], example))
    assert len(items) == 24
    for item, (_, _, seed, _, cost) in items:
        assert (item["seed"], item["cost"]) == (seed, cost)
        assert image_of(item).size == (1536, 1024)


def test_every_output_type_and_format(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle
) -> None:
    """URL, base64Data and dataURI in JPG, PNG and WEBP: each SDK returns the field of the
    type asked, holding a decodable image of that format and size."""
    combos = [(kind, fmt) for kind in ("URL", "base64Data", "dataURI") for fmt in FORMATS]

    def task(kind: str, fmt: str, delivery: str) -> dict[str, Any]:
        return image_task(outputType=kind, outputFormat=fmt, deliveryMethod=delivery)

    scenarios = [
        current(sdk_sim, transport, task(kind, fmt, delivery))
        for kind, fmt in combos
        for transport in TRANSPORTS
        for delivery in ("sync", "async")
    ]
    outcomes = current_sdk.run(*scenarios)
    legacy_outcomes = legacy_sdk.run(
        *(legacy(sdk_sim, legacy_params(task(kind, fmt, "sync"))) for kind, fmt in combos)
    )
    expected = [combo for combo in combos for _ in range(4)] + combos
    for outcome, (kind, fmt) in zip(outcomes + legacy_outcomes, expected, strict=True):
        [item] = results(outcome)
        field = {"URL": "imageURL", "base64Data": "imageBase64Data", "dataURI": "imageDataURI"}
        assert item[field[kind]]
        image = image_of(item)
        assert (image.format, image.size) == (FORMATS[fmt], (256, 256))


def test_cost_is_reported_only_when_asked(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle
) -> None:
    """includeCost true puts `cost` on each image, false or absent leaves it out."""
    scenarios = [
        current(sdk_sim, transport, image_task(numberResults=2, **asked))
        for transport in TRANSPORTS
        for asked in ({"includeCost": True}, {})
    ]
    asked_legacy = legacy_params(image_task(includeCost=True, numberResults=2))
    plain_legacy = legacy_params(image_task(numberResults=2))
    outcomes = current_sdk.run(*scenarios)
    legacy_asked, legacy_plain = legacy_sdk.run(
        legacy(sdk_sim, asked_legacy), legacy(sdk_sim, plain_legacy)
    )
    for outcome in (outcomes[0], outcomes[2]):
        assert [item["cost"] for item in results(outcome)] == [0.03, 0.03]
    for outcome in (outcomes[1], outcomes[3]):
        assert all("cost" not in item for item in results(outcome))
    assert [item["cost"] for item in results(legacy_asked)] == [0.03, 0.03]
    assert [item["cost"] for item in results(legacy_plain)] == [None, None]


def test_get_response_and_get_task_details(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle
) -> None:
    """A task submitted over REST, looked up through each SDK: getResponse lists its images
    as `success`, getTaskDetails echoes the request and the answer; an unknown taskUUID is
    `notFound` (runware-sdk) or `taskNotFound` (runware)."""
    task = image_task(deliveryMethod="async", numberResults=2, includeCost=True)
    assert httpx.post(sdk_sim.api_url, json=[task], headers=HEADERS).status_code == 200
    done(sdk_sim, task["taskUUID"])
    lookup = {"taskUUID": task["taskUUID"]}
    unknown = {"taskUUID": str(uuid.uuid4())}
    outcomes = current_sdk.run(
        *(current(sdk_sim, t, lookup, call="get_response") for t in TRANSPORTS),
        *(current(sdk_sim, t, lookup, call="get_task_details") for t in TRANSPORTS),
        *(current(sdk_sim, t, unknown, call="get_response") for t in TRANSPORTS),
    )
    legacy_outcomes = legacy_sdk.run(
        legacy(sdk_sim, {**lookup, "numberResults": 2}, call="getResponse"),
        legacy(sdk_sim, lookup, call="getTaskDetails"),
        legacy(sdk_sim, unknown, call="getResponse"),
    )
    for outcome in outcomes[:2]:
        polled = results(outcome)
        assert [item["status"] for item in polled] == ["success", "success"]
        assert all(item["cost"] == 0.03 for item in polled)
    for outcome in outcomes[2:4]:
        [details] = results(outcome)
        assert details["request"] == [task]
        assert len(details["response"]["data"]) == 2
    for outcome in outcomes[4:]:
        assert outcome["error"]["code"] == "notFound"
    assert len(results(legacy_outcomes[0])) == 2
    details = results(legacy_outcomes[1])
    assert details["taskUUID"] == task["taskUUID"]
    assert legacy_outcomes[2]["error"]["code"] == "taskNotFound"


def test_webhooks_are_posted_whatever_the_delivery(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle, receiver: Receiver
) -> None:
    """With a webhookURL each image is POSTed once; runware-sdk still returns the images
    (async: it polls; sync: the answer is held for them), runware returns the
    acknowledgement for async and the images for sync."""

    def hooked(delivery: str) -> dict[str, Any]:
        url = f"{receiver.url}/hook?token=t"
        return image_task(numberResults=2, deliveryMethod=delivery, webhookURL=url)

    current_tasks = [hooked(d) for d in ("async", "sync") for _ in TRANSPORTS]
    outcomes = current_sdk.run(
        *(current(sdk_sim, TRANSPORTS[i % 2], t) for i, t in enumerate(current_tasks))
    )
    legacy_tasks = [hooked("async"), hooked("sync")]
    legacy_async, legacy_sync = legacy_sdk.run(
        *(legacy(sdk_sim, legacy_params(t)) for t in legacy_tasks)
    )
    returned = [item for outcome in outcomes for item in results(outcome)]
    returned += results(legacy_sync)
    assert legacy_async["kind"] == "IAsyncTaskResponse"
    posts = receiver.wait_for(12)
    bodies = [orjson.loads(post.body) for post in posts]
    assert {post.path for post in posts} == {"/hook?token=t"}
    for task in current_tasks + legacy_tasks:
        assert sum(body["taskUUID"] == task["taskUUID"] for body in bodies) == 2
    assert {item["imageUUID"] for item in returned} <= {body["imageUUID"] for body in bodies}
    assert len(returned) == 10


def test_progress_reaches_the_progress_callback(
    current_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """Images still generating carry `progress`; runware-sdk hands each new value to its
    on_progress callback while it polls, then returns the images."""
    faulty.set_faults(latency_s=3.0)
    outcomes = current_sdk.run(
        *(current(faulty, t, image_task(deliveryMethod="async")) for t in TRANSPORTS)
    )
    for outcome in outcomes:
        assert len(results(outcome)) == 1
        seen = [item["progress"] for item in outcome["on_progress"]]
        assert seen, outcome
        assert seen == sorted(seen)
        assert all(0 <= value < 100 for value in seen)


def _in_background(run: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    answer: list[Any] = []
    thread = threading.Thread(target=lambda: answer.extend(run(*args)))
    thread.start()
    return thread, answer


def test_a_dropped_websocket_is_resumed_and_an_async_task_still_answered(
    current_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """The socket is closed while the task generates, after its acknowledgement. runware-sdk
    reconnects with its session key, sends its unanswered poll again and gets the image.
    One image, generated and billed once."""
    faulty.set_faults(latency_s=2.0)
    task = image_task(deliveryMethod="async", includeCost=True)
    scenario = current(faulty, "websocket", task, config={"retry_delay": 100})
    thread, answer = _in_background(current_sdk.run, scenario)
    wait_until(lambda: faulty.stats()["tasks_accepted"] == 1)
    time.sleep(0.3)
    assert faulty.disconnect() == 1
    thread.join(timeout=60)
    [outcome] = answer
    assert len(results(outcome)) == 1
    stats = faulty.stats()
    assert stats["ws_sessions_resumed"] == 1
    assert (stats["tasks_accepted"], stats["charged_usd_exact"]) == (1, "0.03")


def test_a_dropped_websocket_fails_a_sync_task_in_runware_sdk_and_is_polled_by_runware(
    current_sdk: Driver, legacy_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """Both sockets are closed while their sync tasks generate. runware-sdk reconnects but
    fails the task with `connection` ("may have been processed"): it never sends a sync
    task twice (README, WebSocket transport). runware reconnects, sends it again, takes
    conflictTaskUUID as "already accepted" and polls getResponse until the image is there.
    Each task was generated once."""
    faulty.set_faults(latency_s=2.0)
    current_task = image_task(deliveryMethod="sync")
    legacy_task = image_task(deliveryMethod="sync")
    scenario = current(faulty, "websocket", current_task, config={"retry_delay": 100})
    threads = [
        _in_background(current_sdk.run, scenario),
        _in_background(legacy_sdk.run, legacy(faulty, legacy_params(legacy_task))),
    ]
    wait_until(lambda: faulty.stats()["tasks_accepted"] == 2)
    time.sleep(0.3)
    assert faulty.disconnect() == 2
    for thread, _ in threads:
        thread.join(timeout=60)
    [current_outcome], [legacy_outcome] = (answer for _, answer in threads)
    assert current_outcome["error"]["code"] == "connection"
    assert len(results(legacy_outcome)) == 1
    stats = faulty.stats()
    assert stats["submits_rejected"] == {"conflictTaskUUID": 1}
    assert stats["tasks_accepted"] == 2
    done(faulty, current_task["taskUUID"])
    assert faulty.stats()["images_generated"] == 2
