"""The /v1/jobs routes over a real client, store and broker."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from farmdomain.broker import SUBMIT_MANY_TASK, SUBMIT_TASK
from farmdomain.settings import Settings
from farmweb.api import build_router, install_error_handlers
from farmweb.auth import ApiAuth, TenantClients, install_auth
from farmweb.waiting import TerminalWatch, terminal_among
from jobstore.api_tokens import ApiTokenStore
from jobstore.store import JobStore
from producers.client import FluxfarmClient

with warnings.catch_warnings():
    # starlette 1.x prefers the httpx2 package, which the dev extras do not list yet
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture
def http(client: FluxfarmClient) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(build_router())
    install_error_handlers(app)
    app.state.client = client
    app.state.terminal_watch = TerminalWatch(terminal_among(client.store.engine))
    # open, as the API runs on loopback: tests/security covers tokens
    auth = ApiAuth("open", ApiTokenStore(client.store.engine))
    install_auth(app, auth, TenantClients(client.settings, client))
    with TestClient(app, client=("127.0.0.1", 50000)) as test_client:
        yield test_client


def fields_and_rules(response: Any) -> set[tuple[str, str]]:
    return {(e["field"], e["rule"]) for e in response.json()["errors"]}


def test_post_creates_a_job_and_answers_201_with_its_view(
    http: TestClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    response = http.post("/v1/jobs", json={"request": valid_request, "deadlineSeconds": 60})

    assert response.status_code == 201
    view = response.json()
    assert view["state"] == "queued"
    assert view["request"] == valid_request
    assert view["costUsd"] == "0"
    assert view["failure"] is None
    assert view["images"] == []
    assert [e["kind"] for e in view["events"]] == ["created"]
    assert {"taskUUID", "numberResults", "createdAt", "deadlineAt", "retryOf"} <= view.keys()
    assert broker.drain() == [(SUBMIT_TASK, [view["id"], 0])]


def test_idempotent_repeat_answers_200_with_the_same_job(
    http: TestClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    body = {"request": valid_request, "idempotencyKey": "order-17"}

    first = http.post("/v1/jobs", json=body)
    again = http.post("/v1/jobs", json=body)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert broker.size() == 1


def test_conflicting_repeat_answers_409(http: TestClient, valid_request: dict[str, Any]) -> None:
    http.post("/v1/jobs", json={"request": valid_request, "idempotencyKey": "k"})

    response = http.post(
        "/v1/jobs", json={"request": {**valid_request, "seed": 1}, "idempotencyKey": "k"}
    )

    assert response.status_code == 409
    assert fields_and_rules(response) == {("idempotencyKey", "same_request")}


def test_every_broken_rule_is_listed_with_request_fields_prefixed(
    http: TestClient, settings: Settings, broker: Any
) -> None:
    response = http.post(
        "/v1/jobs",
        json={
            "request": {"width": 1000, "height": 768, "outputType": "TIFF", "steps": 4},
            "idempotencyKey": "",
            "deadlineSeconds": 0,
            "priority": "high",
        },
    )

    assert response.status_code == 422
    assert fields_and_rules(response) == {
        ("request.positivePrompt", "required"),
        ("request.width", "multiple_of_16"),
        ("request.outputType", "allowed_values"),
        ("request.steps", "unknown_parameter"),
        ("idempotencyKey", "min_length"),
        ("deadlineSeconds", "exclusive_minimum"),
        ("priority", "unknown_parameter"),
    }
    assert JobStore.from_settings(settings).count_by_state() == {}
    assert broker.size() == 0


def test_cross_field_rules_name_their_field(http: TestClient) -> None:
    response = http.post("/v1/jobs", json={"request": {"positivePrompt": "x", "width": 512}})

    assert fields_and_rules(response) == {("request.height", "width_and_height_together")}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"request": ', {("body", "json")}),
        (b"[]", {("body", "object")}),
        (b"{}", {("request", "required")}),
        (b'{"request": "a cat"}', {("request", "object")}),
    ],
)
def test_malformed_bodies_get_the_same_error_shape(
    http: TestClient, content: bytes, expected: set[tuple[str, str]]
) -> None:
    response = http.post("/v1/jobs", content=content, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert fields_and_rules(response) == expected


def test_a_batch_answers_201_with_its_jobs_in_order_and_one_message_per_post(
    http: TestClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    requests = [{**valid_request, "seed": seed} for seed in range(25)]

    response = http.post("/v1/jobs/batch", json={"requests": requests})

    assert response.status_code == 201
    views = response.json()["jobs"]
    assert [view["request"]["seed"] for view in views] == list(range(25))
    assert {view["state"] for view in views} == {"queued"}
    # submit_batch_max (10) jobs a message: what one POST to Runware carries
    assert broker.drain() == [
        (SUBMIT_MANY_TASK, [[[view["id"], 0] for view in views[start : start + 10]]])
        for start in (0, 10, 20)
    ]


def test_a_batch_with_broken_requests_names_each_by_index_and_queues_nothing(
    http: TestClient, settings: Settings, broker: Any, valid_request: dict[str, Any]
) -> None:
    requests = [valid_request, {**valid_request, "width": 1000}, "a cat", {"positivePrompt": ""}]

    response = http.post("/v1/jobs/batch", json={"requests": requests, "idempotencyKey": ""})

    assert response.status_code == 422
    assert fields_and_rules(response) == {
        ("requests[2]", "object"),
        ("idempotencyKey", "min_length"),
    }
    requests[2] = {**valid_request, "steps": 4}
    response = http.post("/v1/jobs/batch", json={"requests": requests})
    assert response.status_code == 422
    assert fields_and_rules(response) == {
        ("requests[1].width", "multiple_of_16"),
        ("requests[2].steps", "unknown_parameter"),
        ("requests[3].positivePrompt", "min_length"),
    }
    assert JobStore.from_settings(settings).count_by_state() == {}
    assert broker.size() == 0


def test_a_batch_over_the_limit_or_empty_is_refused(
    http: TestClient, settings: Settings, valid_request: dict[str, Any]
) -> None:
    too_many = [valid_request] * (settings.submit_many_max + 1)
    for requests, rule in ((too_many, "max_items"), ([], "min_items")):
        response = http.post("/v1/jobs/batch", json={"requests": requests})
        assert response.status_code == 422
        assert fields_and_rules(response) == {("requests", rule)}
    assert JobStore.from_settings(settings).count_by_state() == {}


def test_a_repeated_batch_answers_200_with_the_same_jobs_and_a_changed_one_409(
    http: TestClient, broker: Any, valid_request: dict[str, Any]
) -> None:
    body = {"requests": [valid_request, {**valid_request, "seed": 7}], "idempotencyKey": "b-1"}

    first = http.post("/v1/jobs/batch", json=body)
    again = http.post("/v1/jobs/batch", json=body)
    changed = http.post(
        "/v1/jobs/batch", json={**body, "requests": [valid_request, {**valid_request, "seed": 8}]}
    )

    assert (first.status_code, again.status_code, changed.status_code) == (201, 200, 409)
    ids = [view["id"] for view in first.json()["jobs"]]
    assert [view["id"] for view in again.json()["jobs"]] == ids
    assert fields_and_rules(changed) == {("idempotencyKey", "same_request")}
    assert len(broker.drain()) == 1
    # request i of the batch is the job its key names alone
    alone = http.post("/v1/jobs", json={"request": valid_request, "idempotencyKey": "b-1/0"})
    assert (alone.status_code, alone.json()["id"]) == (200, ids[0])


def test_get_returns_the_job_view(http: TestClient, valid_request: dict[str, Any]) -> None:
    created = http.post("/v1/jobs", json={"request": valid_request}).json()

    response = http.get(f"/v1/jobs/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_unknown_job_answers_404_naming_the_job_id(http: TestClient) -> None:
    for response in (http.get("/v1/jobs/nope"), http.post("/v1/jobs/nope/cancel")):
        assert response.status_code == 404
        assert fields_and_rules(response) == {("job_id", "exists")}
        assert "nope" in response.json()["errors"][0]["message"]


def test_another_tenants_job_is_not_found(
    http: TestClient, settings: Settings, client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    with FluxfarmClient(settings, tenant="acme", store=client.store) as acme:
        theirs = acme.submit(valid_request)

    assert http.get(f"/v1/jobs/{theirs}").status_code == 404


def test_cancel_answers_with_the_canceled_view(
    http: TestClient, valid_request: dict[str, Any]
) -> None:
    job_id = http.post("/v1/jobs", json={"request": valid_request}).json()["id"]

    response = http.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status_code == 200
    view = response.json()
    assert view["state"] == "canceled"
    assert view["finishedAt"] is not None
    assert [(e["fromState"], e["toState"]) for e in view["events"]][-1] == ("queued", "canceled")


def test_openapi_schema_documents_the_routes_and_error_bodies(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()

    assert set(schema["paths"]) == {
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
    }
    submit = schema["paths"]["/v1/jobs"]["post"]
    guarded = {"400", "401", "403", "408", "413", "429", "503"}
    assert set(submit["responses"]) == {"200", "201", "409", "422"} | guarded
    batch = schema["paths"]["/v1/jobs/batch"]["post"]
    assert set(batch["responses"]) == {"200", "201", "409", "422"} | guarded
    error_ref = submit["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref.endswith("/ErrorBody")
    job_view = schema["components"]["schemas"]["JobView"]
    assert {"taskUUID", "costUsd", "images", "events"} <= set(job_view["properties"])
    assert "HTTPValidationError" not in schema["components"]["schemas"]
