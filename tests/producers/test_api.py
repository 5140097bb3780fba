"""The /v1/jobs routes over a real client, store and broker."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from farmdomain.broker import SUBMIT_MANY_TASK, SUBMIT_TASK
from farmdomain.callbacks import Attempt, CallbackStatus, event_id
from farmdomain.pricing import TenantBudget
from farmdomain.settings import Settings
from farmweb.api import build_router
from farmweb.auth import ApiAuth, FoundTokens, TenantClients, install_auth
from farmweb.refusals import install_error_handlers
from farmweb.waiting import TerminalWatch, terminal_among
from jobstore.api_tokens import ApiTokenStore
from jobstore.budgets import set_budget
from jobstore.callback_events import AttemptRecord, CallbackOutbox
from jobstore.store import JobStore
from producers.client import FluxfarmClient
from tests.producers.conftest import CALLBACK_HOST

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
    auth = ApiAuth("open", FoundTokens(ApiTokenStore(client.store.engine), ttl_s=0))
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
        ("priority", "int_type"),
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
        "/v1/jobs/{job_id}/callbacks",
    }
    submit = schema["paths"]["/v1/jobs"]["post"]
    guarded = {"400", "401", "403", "408", "413", "429", "503"}
    assert set(submit["responses"]) == {"200", "201", "402", "409", "422"} | guarded
    listing = schema["paths"]["/v1/jobs"]["get"]
    assert set(listing["responses"]) == {"200", "422"} | guarded
    callbacks = schema["paths"]["/v1/jobs/{job_id}/callbacks"]["get"]
    assert set(callbacks["responses"]) == {"200", "404", "422"} | guarded
    batch = schema["paths"]["/v1/jobs/batch"]["post"]
    assert set(batch["responses"]) == {"200", "201", "402", "409", "422"} | guarded
    error_ref = submit["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref.endswith("/ErrorBody")
    job_view = schema["components"]["schemas"]["JobView"]
    assert {"taskUUID", "costUsd", "images", "events"} <= set(job_view["properties"])
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_a_callback_url_on_an_allowed_host_is_kept_on_every_job_it_was_given_for(
    http: TestClient, valid_request: dict[str, Any]
) -> None:
    url = f"https://{CALLBACK_HOST}/fluxfarm?service=thumbs"

    alone = http.post("/v1/jobs", json={"request": valid_request, "callbackUrl": url})
    batch = http.post("/v1/jobs/batch", json={"requests": [valid_request] * 2, "callbackUrl": url})
    without = http.post("/v1/jobs", json={"request": valid_request})

    assert (alone.status_code, batch.status_code) == (201, 201)
    assert alone.json()["callbackUrl"] == url
    assert [view["callbackUrl"] for view in batch.json()["jobs"]] == [url, url]
    assert http.get(f"/v1/jobs/{alone.json()['id']}").json()["callbackUrl"] == url
    assert without.json()["callbackUrl"] is None


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://evil.example.com/hook", "allowed_host"),
        (f"https://{CALLBACK_HOST}.evil.example.com/hook", "allowed_host"),
        ("http://10.0.0.7/hook", "allowed_host"),
        ("http://127.0.0.1:8000/v1/jobs", "allowed_host"),
        ("http://169.254.169.254/latest/meta-data", "allowed_host"),
        (f"ftp://{CALLBACK_HOST}/hook", "url"),
        (f"https://user:secret@{CALLBACK_HOST}/hook", "url"),
        ("/hook", "url"),
        (f"https://{CALLBACK_HOST}/\x1b[2J", "characters"),
        ("", "min_length"),
        (f"https://{CALLBACK_HOST}/" + "a" * 2048, "max_length"),
    ],
)
def test_a_callback_url_the_farm_will_not_call_is_refused_naming_callback_url(
    http: TestClient,
    settings: Settings,
    broker: Any,
    valid_request: dict[str, Any],
    url: str,
    rule: str,
) -> None:
    alone = http.post("/v1/jobs", json={"request": valid_request, "callbackUrl": url})
    batch = http.post("/v1/jobs/batch", json={"requests": [valid_request], "callbackUrl": url})

    for response in (alone, batch):
        assert response.status_code == 422
        assert fields_and_rules(response) == {("callbackUrl", rule)}
    assert JobStore.from_settings(settings).count_by_state() == {}
    assert broker.size() == 0


def _bearer(client: FluxfarmClient, tenant: str) -> dict[str, str]:
    _record, token = ApiTokenStore(client.store.engine).create(tenant, tenant)
    return {"Authorization": f"Bearer {token}"}


def _pages(http: TestClient, headers: dict[str, str] | None = None, **params: Any) -> list[Any]:
    """Every page of GET /v1/jobs with `params`, following nextCursor."""
    pages = []
    cursor = None
    while True:
        asked = {**params, **({} if cursor is None else {"cursor": cursor})}
        response = http.get("/v1/jobs", params=asked, headers=headers or {})
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["nextCursor"]
        if cursor is None:
            return pages


def test_listing_pages_through_every_job_newest_first_once_while_jobs_are_added(
    http: TestClient, valid_request: dict[str, Any]
) -> None:
    # a batch's jobs share one created_at: the id orders them
    first = [
        v["id"]
        for v in http.post("/v1/jobs/batch", json={"requests": [valid_request] * 4}).json()["jobs"]
    ]
    alone = [http.post("/v1/jobs", json={"request": valid_request}).json()["id"] for _ in range(3)]

    seen: list[dict[str, Any]] = []
    cursor = None
    added = []
    while True:
        params: dict[str, Any] = {"limit": 3, **({} if cursor is None else {"cursor": cursor})}
        page = http.get("/v1/jobs", params=params).json()
        assert len(page["jobs"]) <= 3
        seen += page["jobs"]
        # created after the first page: sorts before it, so no later page shifts
        added.append(http.post("/v1/jobs", json={"request": valid_request}).json()["id"])
        cursor = page["nextCursor"]
        if cursor is None:
            break

    ids = [view["id"] for view in seen]
    assert sorted(ids) == sorted(first + alone)
    order = [(view["createdAt"], view["id"]) for view in seen]
    assert order == sorted(order, reverse=True)
    assert seen[0] == http.get(f"/v1/jobs/{ids[0]}").json()
    newest = http.get("/v1/jobs", params={"limit": len(added)}).json()
    assert {view["id"] for view in newest["jobs"]} == set(added)


def test_listing_filters_by_state_time_and_idempotency_key(
    http: TestClient, valid_request: dict[str, Any]
) -> None:
    keyed = http.post("/v1/jobs", json={"request": valid_request, "idempotencyKey": "o-1"}).json()
    canceled = http.post("/v1/jobs", json={"request": valid_request}).json()
    http.post(f"/v1/jobs/{canceled['id']}/cancel")
    later = http.post("/v1/jobs", json={"request": valid_request}).json()

    def ids(**params: Any) -> list[str]:
        return [view["id"] for page in _pages(http, **params) for view in page["jobs"]]

    assert ids(state="canceled") == [canceled["id"]]
    assert ids(state=["queued", "canceled"]) == [later["id"], canceled["id"], keyed["id"]]
    assert ids(idempotencyKey="o-1") == [keyed["id"]]
    assert ids(idempotencyKey="o-2") == []
    assert ids(createdAfter=keyed["createdAt"]) == [later["id"], canceled["id"]]
    assert ids(createdBefore=later["createdAt"]) == [canceled["id"], keyed["id"]]
    assert ids(createdAfter=keyed["createdAt"], createdBefore=later["createdAt"]) == [
        canceled["id"]
    ]


def test_a_tenant_lists_only_its_own_jobs(
    http: TestClient, client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    acme, globex = _bearer(client, "acme"), _bearer(client, "globex")
    mine = {
        http.post("/v1/jobs", json={"request": valid_request}, headers=acme).json()["id"]
        for _ in range(3)
    }
    theirs = http.post("/v1/jobs", json={"request": valid_request}, headers=globex).json()

    listed = [v for page in _pages(http, acme, limit=2) for v in page["jobs"]]
    assert {view["id"] for view in listed} == mine
    assert {view["tenant"] for view in listed} == {"acme"}
    # a cursor of another tenant's job only names a position: it shows none of its jobs
    other = http.get("/v1/jobs", params={"limit": 1}, headers=globex).json()
    assert [view["id"] for view in other["jobs"]] == [theirs["id"]]
    assert http.get("/v1/jobs", headers={}).json()["jobs"] == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": 0}, {("limit", "minimum")}),
        ({"limit": 501}, {("limit", "maximum")}),
        ({"limit": "ten"}, {("limit", "integer")}),
        ({"state": ["queued", "done"]}, {("state[1]", "allowed_values")}),
        ({"createdAfter": "yesterday"}, {("createdAfter", "datetime")}),
        ({"createdBefore": "2030-01-01T00:00:00"}, {("createdBefore", "timezone")}),
        ({"idempotencyKey": ""}, {("idempotencyKey", "min_length")}),
        ({"idempotencyKey": "a\x1b[2Jb"}, {("idempotencyKey", "characters")}),
        ({"cursor": "not-a-cursor"}, {("cursor", "cursor")}),
        ({"cursor": "W10"}, {("cursor", "cursor")}),
        ({"cursor": "x" * 513}, {("cursor", "max_length")}),
    ],
)
def test_a_bad_filter_is_refused_naming_the_field_and_rule(
    http: TestClient, params: dict[str, Any], expected: set[tuple[str, str]]
) -> None:
    response = http.get("/v1/jobs", params=params)

    assert response.status_code == 422
    assert fields_and_rules(response) == expected


def test_a_time_or_cursor_past_what_utc_can_hold_is_refused(http: TestClient) -> None:
    far = http.get("/v1/jobs", params={"createdAfter": "0001-01-01T00:00:00+05:00"})
    assert fields_and_rules(far) == {("createdAfter", "range")}
    for position in (["0001-01-01T00:00:00+05:00", "a"], ["2030-01-01T00:00:00+00:00", "a\x00"]):
        cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode()
        response = http.get("/v1/jobs", params={"cursor": cursor})
        assert (response.status_code, fields_and_rules(response)) == (422, {("cursor", "cursor")})


def test_a_jobs_callbacks_show_its_event_and_every_attempt_to_its_tenant_alone(
    http: TestClient, client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    acme, globex = _bearer(client, "acme"), _bearer(client, "globex")
    url = f"https://{CALLBACK_HOST}/done"
    body = {"request": valid_request, "callbackUrl": url}
    job = http.post("/v1/jobs", json=body, headers=acme).json()
    silent = http.post("/v1/jobs", json={"request": valid_request}, headers=acme).json()
    path = f"/v1/jobs/{job['id']}/callbacks"
    assert http.get(path, headers=acme).json() == {"callbacks": []}

    for terminal in (job, silent):
        http.post(f"/v1/jobs/{terminal['id']}/cancel", headers=acme)
    outbox = CallbackOutbox(client.store.engine)
    [event] = outbox.claim([job["id"]], lease_s=30)
    attempt = Attempt(event.created_at, 503, 12.5, "busy", None)
    outbox.record([AttemptRecord(event, b"{}", attempt, CallbackStatus.PENDING, 5.0)])

    [shown] = http.get(path, headers=acme).json()["callbacks"]
    assert shown == {
        "id": event_id(job["id"]),
        "type": "job.canceled",
        "url": url,
        "status": "pending",
        "createdAt": shown["createdAt"],
        "deliveredAt": None,
        "attempts": [
            {
                "at": shown["createdAt"],
                "statusCode": 503,
                "latencyMs": 12.5,
                "answer": "busy",
                "error": None,
            }
        ],
    }
    assert http.get(f"/v1/jobs/{silent['id']}/callbacks", headers=acme).json() == {"callbacks": []}
    for other in (http.get(path, headers=globex), http.get("/v1/jobs/nope/callbacks")):
        assert other.status_code == 404
        assert fields_and_rules(other) == {("job_id", "exists")}


def test_a_job_its_tenants_budget_cannot_cover_is_refused_402_naming_the_budget(
    http: TestClient, client: FluxfarmClient, valid_request: dict[str, Any]
) -> None:
    # 1024 x 768 is $0.03 a job: room for one
    set_budget(client.store.engine, TenantBudget("default", Decimal("0.04"), None))
    first = http.post("/v1/jobs", json={"request": valid_request, "idempotencyKey": "k1"})
    client.store.claim(first.json()["id"], 0)

    refused = http.post("/v1/jobs", json={"request": valid_request})
    batch = http.post("/v1/jobs/batch", json={"requests": [valid_request]})
    repeat = http.post("/v1/jobs", json={"request": valid_request, "idempotencyKey": "k1"})

    assert (first.status_code, refused.status_code, batch.status_code) == (201, 402, 402)
    assert refused.json()["errors"] == [
        {
            "field": "request",
            "rule": "budget",
            "message": "tenant default's daily budget of $0.04 would be passed: $0.01 remains"
            " and the jobs are estimated at $0.03",
        }
    ]
    assert fields_and_rules(batch) == {("requests", "budget")}
    # the key already names a job: answering it again spends nothing
    assert (repeat.status_code, repeat.json()["id"]) == (200, first.json()["id"])
    assert client.store.count_by_state() == {"submitting": 1}


def test_a_priority_is_stored_on_each_job_and_shown_and_one_out_of_range_refused(
    http: TestClient, valid_request: dict[str, Any]
) -> None:
    one = http.post("/v1/jobs", json={"request": valid_request, "priority": 7})
    batch = http.post("/v1/jobs/batch", json={"requests": [valid_request], "priority": -3})
    plain = http.post("/v1/jobs", json={"request": valid_request})

    assert one.status_code == batch.status_code == plain.status_code == 201
    assert http.get(f"/v1/jobs/{one.json()['id']}").json()["priority"] == 7
    assert [job["priority"] for job in batch.json()["jobs"]] == [-3]
    assert plain.json()["priority"] == 0
    for priority in (11, -11, 1.5, True):
        refused = http.post("/v1/jobs", json={"request": valid_request, "priority": priority})
        assert refused.status_code == 422
        assert {field for field, _ in fields_and_rules(refused)} == {"priority"}
