"""Delivery modes: sync results, async acknowledgements, webhooks with retries, uploads."""

from __future__ import annotations

import io
import uuid

import httpx
import orjson
from PIL import Image
from sim_support import Receiver, image_task, quick_settings, wait_until

from simulator.settings import FaultSettings, ShapeSettings
from simulator.testing import SimulatorHandle, running_simulator

TOKEN_QUERY = "token=s3cr%2Ft+x%3D%3D&job=42&empty="
RESULT_FIELDS = {"taskType", "taskUUID", "imageUUID", "imageURL", "seed", "NSFWContent", "cost"}


def test_sync_returns_every_image_with_documented_fields(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    task = image_task(numberResults=3, seed=41, includeCost=True)
    response = client.post(sim.api_url, json=[task])
    assert response.status_code == 200
    items = response.json()["data"]
    assert len(items) == 3
    for item in items:
        assert set(item) == RESULT_FIELDS
        assert item["taskType"] == "imageInference"
        assert item["taskUUID"] == task["taskUUID"]
        assert uuid.UUID(item["imageUUID"]).version == 4
        assert item["NSFWContent"] is False
        assert item["cost"] == 0.03
    assert [item["seed"] for item in items] == [41, 42, 43]
    assert len({item["imageUUID"] for item in items}) == 3


def test_seed_defaults_to_random_uint32_and_cost_is_absent_unless_asked(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    items = client.post(sim.api_url, json=[image_task(numberResults=2)]).json()["data"]
    seeds = [item["seed"] for item in items]
    assert all(0 <= seed < 2**32 for seed in seeds)
    assert len(set(seeds)) == 2
    assert all("cost" not in item for item in items)


def test_seed_near_the_maximum_wraps_within_range(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    items = client.post(sim.api_url, json=[image_task(numberResults=2, seed=2**63 - 1)]).json()
    assert [item["seed"] for item in items["data"]] == [2**63 - 1, 0]


def test_async_is_acknowledged_naming_the_task_then_polled(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    task = image_task(deliveryMethod="async")
    response = client.post(sim.api_url, json=[task])
    ack = {"data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]}
    assert (response.status_code, response.json()) == (200, ack)
    wait_until(lambda: sim.task(task["taskUUID"])["status"] == "done")


def test_empty_ack_body_names_nothing(client: httpx.Client, shaped: SimulatorHandle) -> None:
    shaped.set_shapes(ack_body="empty")
    response = client.post(shaped.api_url, json=[image_task(deliveryMethod="async")])
    assert (response.status_code, response.json()) == (200, {"data": []})


def test_empty_ack_body_is_a_startup_flag_too() -> None:
    with running_simulator(quick_settings(shapes=ShapeSettings(ack_body="empty"))) as sim:
        task = image_task(deliveryMethod="async")
        response = httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        assert response.json() == {"data": []}


def test_webhook_gets_one_flat_post_per_image_with_query_preserved(
    client: httpx.Client, sim: SimulatorHandle, receiver: Receiver
) -> None:
    task = image_task(
        numberResults=3,
        includeCost=True,
        deliveryMethod="async",
        webhookURL=f"{receiver.url}/hook?{TOKEN_QUERY}",
    )
    response = client.post(sim.api_url, json=[task])
    assert response.json() == {
        "data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]
    }
    posts = receiver.wait_for(3)
    assert {post.path for post in posts} == {f"/hook?{TOKEN_QUERY}"}
    assert {post.method for post in posts} == {"POST"}
    assert {post.headers["Content-Type"] for post in posts} == {"application/json"}
    bodies = [orjson.loads(post.body) for post in posts]
    assert all(set(body) == RESULT_FIELDS for body in bodies)
    assert {body["taskUUID"] for body in bodies} == {task["taskUUID"]}
    assert len({body["imageUUID"] for body in bodies}) == 3


def test_sync_task_with_a_webhook_is_held_for_its_results_and_posted(
    client: httpx.Client, sim: SimulatorHandle, receiver: Receiver
) -> None:
    task = image_task(numberResults=2, webhookURL=f"{receiver.url}/hook")
    response = client.post(sim.api_url, json=[task])
    items = response.json()["data"]
    assert len(items) == 2
    assert all("imageURL" in item for item in items)
    bodies = [orjson.loads(post.body) for post in receiver.wait_for(2)]
    assert sorted(body["imageUUID"] for body in bodies) == sorted(i["imageUUID"] for i in items)


def test_sync_task_with_a_webhook_is_acknowledged_under_sync_webhook_ack(
    client: httpx.Client, shaped: SimulatorHandle, receiver: Receiver
) -> None:
    shaped.set_shapes(sync_webhook="ack")
    task = image_task(webhookURL=f"{receiver.url}/hook")
    response = client.post(shaped.api_url, json=[task])
    assert response.json() == {
        "data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]
    }
    assert orjson.loads(receiver.wait_for(1)[0].body)["taskUUID"] == task["taskUUID"]


def test_cost_is_on_every_item_under_cost_always(
    client: httpx.Client, shaped: SimulatorHandle
) -> None:
    shaped.set_shapes(cost="always")
    [item] = client.post(shaped.api_url, json=[image_task()]).json()["data"]
    assert item["cost"] == 0.03


def test_webhook_wrapped_body_shape(receiver: Receiver) -> None:
    with running_simulator(quick_settings(shapes=ShapeSettings(webhook_body="wrapped"))) as sim:
        task = image_task(webhookURL=f"{receiver.url}/hook?{TOKEN_QUERY}")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        [post] = receiver.wait_for(1)
        body = orjson.loads(post.body)
        assert list(body) == ["data"]
        assert body["data"][0]["taskUUID"] == task["taskUUID"]
        assert post.path == f"/hook?{TOKEN_QUERY}"


def test_webhook_is_retried_after_server_errors(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    with running_simulator(quick_settings()) as sim:
        task = image_task(webhookURL=f"{receiver.url}/hook")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        posts = receiver.wait_for(3)
        assert len({post.body for post in posts}) == 1
        wait_until(lambda: sim.stats()["webhook_deliveries"] == 1)
        stats = sim.stats()
        assert (stats["webhook_attempts"], stats["webhook_failed_attempts"]) == (3, 2)


def test_any_2xx_counts_as_delivered(receiver: Receiver) -> None:
    receiver.statuses = [204, 202]
    with running_simulator(quick_settings()) as sim:
        task = image_task(numberResults=2, webhookURL=f"{receiver.url}/hook")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        wait_until(lambda: sim.stats()["webhook_deliveries"] == 2)
        assert sim.stats()["webhook_attempts"] == 2


def test_webhook_is_retried_after_a_receiver_slower_than_the_timeout(
    receiver: Receiver,
) -> None:
    receiver.delay_s, receiver.delayed_requests = 0.6, 1
    with running_simulator(quick_settings(webhook_timeout_s=0.2)) as sim:
        task = image_task(webhookURL=f"{receiver.url}/hook")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        receiver.wait_for(2)
        wait_until(lambda: sim.stats()["webhook_deliveries"] == 1)
        assert sim.stats()["webhook_failed_attempts"] == 1


def test_webhook_attempt_cap_is_honoured(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    with running_simulator(quick_settings(webhook_max_attempts=3)) as sim:
        task = image_task(webhookURL=f"{receiver.url}/hook")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        wait_until(lambda: sim.stats()["webhooks_abandoned"] == 1)
        stats = sim.stats()
        assert (stats["webhook_attempts"], stats["webhook_deliveries"]) == (3, 0)
        assert len(receiver.received) == 3
        assert stats["images_generated"] == 1
        assert stats["charged_usd"] == 0.03


def test_webhook_to_a_closed_port_is_abandoned_but_still_billed() -> None:
    with running_simulator(quick_settings(webhook_max_attempts=2)) as sim:
        task = image_task(webhookURL="http://127.0.0.1:9/hook", includeCost=True)
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        wait_until(lambda: sim.stats()["webhooks_abandoned"] == 1)
        assert sim.stats()["charged_usd_exact"] == "0.03"


def test_image_errors_reach_the_webhook_only_when_enabled(receiver: Receiver) -> None:
    faults = FaultSettings(timeout_provider_share=1.0)
    shapes = ShapeSettings(webhook_errors=True)
    with running_simulator(quick_settings(shapes=shapes, faults=faults)) as sim:
        task = image_task(deliveryMethod="async", webhookURL=f"{receiver.url}/hook")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        [post] = receiver.wait_for(1)
        body = orjson.loads(post.body)
        assert (body["status"], body["taskUUID"]) == ("error", task["taskUUID"])
        error = body["error"]
        assert error["code"] == "timeoutProvider"
        assert error["taskUUID"] == task["taskUUID"]
        assert error["taskType"] == "imageInference"
        assert error["message"]
        sim.set_shapes(failed_items="errors")
        task = image_task(deliveryMethod="async", webhookURL=f"{receiver.url}/hook")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        [error] = orjson.loads(receiver.wait_for(2)[1].body)["errors"]
        assert (error["code"], error["status"]) == ("timeoutProvider", "error")
        assert error["taskUUID"] == task["taskUUID"]


def test_image_errors_are_not_posted_by_default(receiver: Receiver) -> None:
    faults = FaultSettings(timeout_provider_share=1.0)
    with running_simulator(quick_settings(faults=faults)) as sim:
        task = image_task(numberResults=2, webhookURL=f"{receiver.url}/hook")
        httpx.post(sim.api_url, json=[task], headers={"Authorization": "Bearer sim-key"})
        wait_until(lambda: sim.stats()["image_errors"] == 2)
        assert receiver.received == []
        assert sim.stats()["webhook_attempts"] == 0


def test_upload_endpoint_receives_the_raw_image_bytes(
    client: httpx.Client, sim: SimulatorHandle, receiver: Receiver
) -> None:
    task = image_task(
        outputFormat="PNG", width=512, height=256, uploadEndpoint=f"{receiver.url}/up?sig=abc"
    )
    item = client.post(sim.api_url, json=[task]).json()["data"][0]
    [put] = receiver.wait_for(1)
    assert (put.method, put.path, put.headers["Content-Type"]) == (
        "PUT",
        "/up?sig=abc",
        "image/png",
    )
    assert put.body == client.get(item["imageURL"]).content
    with Image.open(io.BytesIO(put.body)) as image:
        assert (image.format, image.size) == ("PNG", (512, 256))


def test_upload_is_retried(client: httpx.Client, sim: SimulatorHandle, receiver: Receiver) -> None:
    receiver.statuses = [502]
    client.post(sim.api_url, json=[image_task(uploadEndpoint=f"{receiver.url}/up")])
    first, second = receiver.wait_for(2)
    assert first.body == second.body


def test_several_images_to_one_upload_endpoint_each_or_only_the_first(
    client: httpx.Client, sim: SimulatorHandle, receiver: Receiver
) -> None:
    # undocumented: every image overwriting the last by default, only the first as set
    task = image_task(numberResults=3, uploadEndpoint=f"{receiver.url}/up")
    client.post(sim.api_url, json=[task])
    assert len(receiver.wait_for(3)) == 3

    sim.set_shapes(several_uploads="first")
    try:
        before = sim.stats()
        task = image_task(numberResults=3, uploadEndpoint=f"{receiver.url}/up")
        answer = client.post(sim.api_url, json=[task]).json()
        assert len(answer["data"]) == 3
        wait_until(lambda: sim.stats()["uploads_delivered"] == before["uploads_delivered"] + 1)
        assert sim.stats()["upload_attempts"] == before["upload_attempts"] + 1
    finally:
        sim.reset_shapes()
