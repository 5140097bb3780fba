"""The Runware client over a fake transport: the wire request, and every answer mapped once."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from farmdomain.errors import (
    ConfigurationError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from farmdomain.jobs import FailureReason
from farmdomain.settings import Settings
from runware_edge.client import RunwareClient, inference_task

TASK = "5b3c3b5e-8c55-4c1e-9a3c-0a2b8f3f6d11"
HOOK = f"https://farm.example/webhooks/runware/{TASK}?token=t0k"
PARAMS = {"positivePrompt": "a lighthouse", "width": 1024, "height": 1024, "numberResults": 2}
Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, tmp_path: Path, **settings: Any) -> RunwareClient:
    config = Settings(
        data_dir=tmp_path,
        runware_api_key="rw-key",
        runware_url="https://api.test/v1",
        webhook_secret="s",
        **settings,
    )
    return RunwareClient(config, transport=httpx.MockTransport(handler))


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handle(_: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, content=orjson.dumps(body), headers=headers)

    return handle


def error(code: str, message: str = "m", parameter: str | None = None, task: str | None = TASK):
    found: dict[str, Any] = {"code": code, "message": message, "taskType": "imageInference"}
    if parameter:
        found["parameter"] = parameter
    if task:
        found["taskUUID"] = task
    return found


def submit(handler: Handler, tmp_path: Path) -> list[dict[str, Any]]:
    client = client_for(handler, tmp_path)
    try:
        return client.submit(inference_task(TASK, PARAMS, HOOK))
    finally:
        client.close()


def test_the_submit_request_is_one_async_imageinference_task_with_cost_and_webhook(
    tmp_path: Path,
) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": []})

    assert submit(handle, tmp_path) == []
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.test/v1"
    assert request.headers["authorization"] == "Bearer rw-key"
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.content)
    assert isinstance(body, list)
    assert body == [
        {
            **PARAMS,
            "taskType": "imageInference",
            "taskUUID": TASK,
            "model": "bfl:5@1",
            "deliveryMethod": "async",
            "includeCost": True,
            "webhookURL": HOOK,
        }
    ]


def test_url_output_is_kept_for_the_farms_ttl_unless_the_caller_chose_one() -> None:
    assert inference_task(TASK, PARAMS, HOOK, ttl_s=3600)["ttl"] == 3600
    assert inference_task(TASK, {**PARAMS, "ttl": 120}, HOOK, ttl_s=3600)["ttl"] == 120
    # Runware refuses ttl on inline output, and a task without the setting has none
    inline = {**PARAMS, "outputType": "base64Data"}
    assert "ttl" not in inference_task(TASK, inline, HOOK, ttl_s=3600)
    assert "ttl" not in inference_task(TASK, PARAMS, HOOK)


def test_an_upload_url_is_sent_as_the_tasks_upload_endpoint() -> None:
    put = "https://bucket.example/images/j/upload.jpg?X-Amz-Signature=s"
    assert inference_task(TASK, PARAMS, HOOK, upload_url=put)["uploadEndpoint"] == put
    assert "uploadEndpoint" not in inference_task(TASK, PARAMS, HOOK)


def test_platform_fields_win_over_anything_in_the_params() -> None:
    task = inference_task(TASK, {**PARAMS, "model": "other", "deliveryMethod": "sync"}, HOOK)
    assert (task["model"], task["deliveryMethod"], task["includeCost"]) == (
        "bfl:5@1",
        "async",
        True,
    )


def test_a_200_acknowledgement_is_accepted_and_its_items_returned(tmp_path: Path) -> None:
    ack = {"data": [{"taskType": "imageInference", "taskUUID": TASK}]}
    assert submit(answer(200, ack), tmp_path) == ack["data"]


@pytest.mark.parametrize("status", [200, 400])
def test_conflict_task_uuid_means_the_first_try_landed(tmp_path: Path, status: int) -> None:
    assert submit(answer(status, {"errors": [error("conflictTaskUUID")]}), tmp_path) == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (408, FailureReason.TIMEOUT),
        (429, FailureReason.RATE_LIMIT),
        (500, FailureReason.SERVER),
        (502, FailureReason.SERVER),
        (503, FailureReason.SERVER),
        (504, FailureReason.TIMEOUT),
    ],
)
def test_retryable_statuses_raise_transient_errors_with_a_reason(
    tmp_path: Path, status: int, reason: FailureReason
) -> None:
    with pytest.raises(TransientProviderError) as caught:
        submit(answer(status), tmp_path)
    assert caught.value.reason == reason
    assert caught.value.http_status == status
    assert caught.value.task_uuid == TASK
    assert caught.value.retry_after is None


def test_transient_error_keeps_runware_code(tmp_path: Path) -> None:
    with pytest.raises(TransientProviderError) as caught:
        submit(answer(503, {"errors": [error("serviceUnavailable", "busy")]}), tmp_path)
    assert (caught.value.code, caught.value.detail) == ("serviceUnavailable", "busy")


def test_retry_after_in_seconds_is_carried(tmp_path: Path) -> None:
    with pytest.raises(TransientProviderError) as caught:
        submit(answer(429, headers={"Retry-After": "7"}), tmp_path)
    assert caught.value.retry_after == 7.0


def test_retry_after_as_an_http_date_is_carried_as_seconds(tmp_path: Path) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    with pytest.raises(TransientProviderError) as caught:
        submit(answer(503, headers={"Retry-After": when}), tmp_path)
    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 121


def test_retry_after_in_the_past_is_zero(tmp_path: Path) -> None:
    when = email.utils.formatdate(time.time() - 3600, usegmt=True)
    with pytest.raises(TransientProviderError) as caught:
        submit(answer(503, headers={"Retry-After": when}), tmp_path)
    assert caught.value.retry_after == 0.0


@pytest.mark.parametrize("value", ["soon", "", "-5", "inf", "nan", "1e400"])
def test_unusable_retry_after_is_ignored_not_raised(tmp_path: Path, value: str) -> None:
    with pytest.raises(TransientProviderError) as caught:
        submit(answer(429, headers={"Retry-After": value}), tmp_path)
    assert caught.value.retry_after in (None, 0.0)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (httpx.ConnectTimeout("slow"), FailureReason.TIMEOUT),
        (httpx.ReadTimeout("slow"), FailureReason.TIMEOUT),
        (httpx.ConnectError("refused"), FailureReason.SERVER),
        (httpx.RemoteProtocolError("closed"), FailureReason.SERVER),
    ],
)
def test_timeouts_and_connection_failures_are_transient(
    tmp_path: Path, failure: Exception, reason: FailureReason
) -> None:
    def handle(_: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(TransientProviderError) as caught:
        submit(handle, tmp_path)
    assert caught.value.reason == reason
    assert caught.value.http_status is None
    assert isinstance(caught.value.__cause__, httpx.TransportError)


def test_a_400_with_errors_is_permanent_and_names_code_message_and_parameter(
    tmp_path: Path,
) -> None:
    body = {"errors": [error("invalidWidth", "width must be a multiple of 16", "width")]}
    with pytest.raises(PermanentProviderError) as caught:
        submit(answer(400, body), tmp_path)
    exc = caught.value
    assert (exc.code, exc.parameter, exc.http_status) == ("invalidWidth", "width", 400)
    assert exc.detail == "width must be a multiple of 16"
    assert exc.reason == FailureReason.VALIDATION
    assert "width" in str(exc)
    assert TASK in str(exc)


def test_errors_for_another_task_are_not_ours(tmp_path: Path) -> None:
    # a failed status that names only another task leaves ours in doubt: resending the
    # same taskUUID is safe, failing a task Runware may have accepted is not
    body = {"errors": [error("invalidWidth", "other", task="someone-else")]}
    with pytest.raises(TransientProviderError) as caught:
        submit(answer(400, body), tmp_path)
    assert caught.value.code is None
    assert caught.value.http_status == 400


def test_an_error_in_a_200_answer_is_still_a_failure(tmp_path: Path) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        submit(answer(200, {"errors": [error("invalidPositivePrompt", "empty")]}), tmp_path)
    assert caught.value.code == "invalidPositivePrompt"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, None, FailureReason.AUTH),
        (401, b"not json", FailureReason.AUTH),
        (401, {"errors": [error("invalidApiKey", task=None)]}, FailureReason.AUTH),
        (403, None, FailureReason.AUTH),
        (402, None, FailureReason.QUOTA),
        (402, {"errors": [error("insufficientCredits")]}, FailureReason.QUOTA),
        (400, {"errors": [error("contentPolicyViolation")]}, FailureReason.SAFETY),
        (400, {"errors": [error("promptBlocked")]}, FailureReason.SAFETY),
        (404, None, FailureReason.VALIDATION),
    ],
)
def test_permanent_statuses_map_to_their_reason(
    tmp_path: Path, status: int, body: Any, reason: FailureReason
) -> None:
    def handle(_: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)

    with pytest.raises(PermanentProviderError) as caught:
        submit(handle, tmp_path)
    assert caught.value.reason == reason
    assert caught.value.http_status == status


def test_singular_error_object_is_understood(tmp_path: Path) -> None:
    body = {"error": error("invalidHeight", "bad", "height"), "taskUUID": TASK}
    with pytest.raises(PermanentProviderError) as caught:
        submit(answer(400, body), tmp_path)
    assert (caught.value.code, caught.value.parameter) == ("invalidHeight", "height")


def test_the_api_key_never_appears_in_an_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as caught:
        submit(answer(401), tmp_path)
    assert "rw-key" not in str(caught.value)
    assert "rw-key" not in repr(caught.value)


def test_a_client_without_an_api_key_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        RunwareClient(Settings(data_dir=tmp_path))


def test_get_response_returns_data_and_errors(tmp_path: Path) -> None:
    seen: list[Any] = []
    body = {
        "data": [{"taskUUID": TASK, "status": "processing"}, {"taskUUID": TASK, "status": "x"}],
        "errors": [{**error("timeoutProvider"), "status": "error"}],
    }

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(orjson.loads(request.content))
        return httpx.Response(200, json=body)

    client = client_for(handle, tmp_path)
    exchange = client.get_response(TASK)
    client.close()
    assert seen == [[{"taskType": "getResponse", "taskUUID": TASK}]]
    assert exchange.data == body["data"]
    assert [e["code"] for e in exchange.errors] == ["timeoutProvider"]


def test_get_response_of_an_unknown_task_returns_the_error_without_raising(
    tmp_path: Path,
) -> None:
    client = client_for(answer(400, {"errors": [error("taskNotFound")]}), tmp_path)
    exchange = client.get_response(TASK)
    client.close()
    assert exchange.status == 400
    assert [e["code"] for e in exchange.errors] == ["taskNotFound"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, TransientProviderError),
        (429, TransientProviderError),
        (401, PermanentProviderError),
        (402, PermanentProviderError),
        (403, PermanentProviderError),
    ],
)
def test_get_response_raises_only_when_it_could_not_ask(
    tmp_path: Path, status: int, kind: type[ProviderError]
) -> None:
    client = client_for(answer(status), tmp_path)
    with pytest.raises(kind):
        client.get_response(TASK)
    client.close()


def test_get_response_timeout_is_transient(tmp_path: Path) -> None:
    def handle(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    client = client_for(handle, tmp_path)
    with pytest.raises(TransientProviderError):
        client.get_response(TASK)
    client.close()


OTHER = "0f0e4c0e-2b44-4bd4-8f0c-54d4a0f1c9e2"
THIRD = "7c1d9a52-6a8e-4f8a-b1e4-3f2f0a9d8e11"


def submit_three(handler: Handler, tmp_path: Path) -> tuple[list[bytes], dict[str, ProviderError]]:
    bodies: list[bytes] = []

    def recording(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return handler(request)

    client = client_for(recording, tmp_path)
    try:
        tasks = [inference_task(t, PARAMS, HOOK) for t in (TASK, OTHER, THIRD)]
        return bodies, client.submit_batch(tasks).failures
    finally:
        client.close()


def test_a_batch_is_one_request_carrying_every_task(tmp_path: Path) -> None:
    bodies, failures = submit_three(answer(200, {"data": []}), tmp_path)
    assert len(bodies) == 1
    assert [t["taskUUID"] for t in orjson.loads(bodies[0])] == [TASK, OTHER, THIRD]
    assert failures == {}


def test_in_a_batch_each_task_gets_only_its_own_errors(tmp_path: Path) -> None:
    body = {
        "data": [],
        "errors": [
            error("invalidWidth", "width", "width", task=OTHER),
            error("conflictTaskUUID", "seen", task=THIRD),
        ],
    }
    _, failures = submit_three(answer(200, body), tmp_path)
    # TASK was accepted, THIRD had already been accepted, OTHER is invalid
    assert set(failures) == {OTHER}
    assert isinstance(failures[OTHER], PermanentProviderError)
    assert failures[OTHER].parameter == "width"


def test_a_failed_status_naming_other_tasks_leaves_the_rest_transient(tmp_path: Path) -> None:
    body = {"errors": [error("invalidWidth", "width", "width", task=OTHER)]}
    _, failures = submit_three(answer(400, body), tmp_path)
    assert isinstance(failures[OTHER], PermanentProviderError)
    for task in (TASK, THIRD):
        assert isinstance(failures[task], TransientProviderError)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (503, {"errors": [error("serviceUnavailable", task=None)]}, TransientProviderError),
        (401, {"errors": [error("invalidApiKey", task=None)]}, PermanentProviderError),
        (429, None, TransientProviderError),
    ],
)
def test_an_error_naming_no_task_concerns_every_task(
    tmp_path: Path, status: int, body: Any, kind: type[ProviderError]
) -> None:
    _, failures = submit_three(answer(status, body), tmp_path)
    assert set(failures) == {TASK, OTHER, THIRD}
    assert all(type(f) is kind for f in failures.values())


def test_no_answer_leaves_every_task_of_the_batch_transient(tmp_path: Path) -> None:
    def handle(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    _, failures = submit_three(handle, tmp_path)
    assert set(failures) == {TASK, OTHER, THIRD}
    assert all(f.reason == FailureReason.TIMEOUT for f in failures.values())
    assert all(isinstance(f, TransientProviderError) for f in failures.values())


def test_a_2xx_answer_that_is_a_bare_list_of_items_is_an_acknowledgement(tmp_path: Path) -> None:
    ack = [{"taskType": "imageInference", "taskUUID": TASK}]
    assert submit(answer(200, ack), tmp_path) == ack


def test_a_refusal_that_is_a_bare_list_of_errors_fails_the_task(tmp_path: Path) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        submit(answer(400, [error("invalidWidth", "w", "width")]), tmp_path)
    assert (caught.value.code, caught.value.parameter) == ("invalidWidth", "width")


def test_a_failed_item_inside_data_fails_only_its_own_task(tmp_path: Path) -> None:
    failed = {
        "taskUUID": OTHER,
        "status": "error",
        "error": {"code": "invalidProviderContent", "message": "blocked"},
    }
    accepted = {"taskType": "imageInference", "taskUUID": TASK}
    _, failures = submit_three(answer(200, {"data": [accepted, failed]}), tmp_path)
    assert set(failures) == {OTHER}
    assert isinstance(failures[OTHER], PermanentProviderError)
    assert (failures[OTHER].code, failures[OTHER].reason) == (
        "invalidProviderContent",
        FailureReason.SAFETY,
    )


def test_the_envelopes_task_uuid_names_the_task_of_its_error(tmp_path: Path) -> None:
    body = {"error": error("invalidHeight", "bad", "height", task=None), "taskUUID": OTHER}
    _, failures = submit_three(answer(400, body), tmp_path)
    # only OTHER is named: the others are left in doubt, to be resent
    assert isinstance(failures[OTHER], PermanentProviderError)
    assert isinstance(failures[TASK], TransientProviderError)


def test_a_list_valued_parameter_is_read_as_its_first_entry(tmp_path: Path) -> None:
    found = {**error("invalidDimensions", "too big"), "parameter": ["width", "height"]}
    with pytest.raises(PermanentProviderError) as caught:
        submit(answer(400, {"errors": [found]}), tmp_path)
    assert caught.value.parameter == "width"
