"""Runware result bodies: both webhook shapes, getResponse items, and malformed input rejected."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from farmdomain.errors import WebhookRejected
from farmdomain.values import ParsedBody
from runware_edge.bodies import parse_body

TASK = "5b3c3b5e-8c55-4c1e-9a3c-0a2b8f3f6d11"


def item(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": TASK,
        "imageUUID": "045f8a5d-1974-4822-b1b3-9a04ef9e86f2",
        "imageURL": "https://im.runware.ai/image/ii/045f8a5d.jpg",
        "seed": 15903,
        "cost": 0.045,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_flat_webhook_body_is_one_result() -> None:
    parsed = parse_body(item(NSFWContent=False))
    [result] = parsed.results
    assert result.task_uuid == TASK
    assert result.image_uuid == "045f8a5d-1974-4822-b1b3-9a04ef9e86f2"
    assert result.image_url == "https://im.runware.ai/image/ii/045f8a5d.jpg"
    assert result.image_data is None
    assert result.seed == 15903
    assert result.cost_usd == Decimal("0.045")
    assert result.nsfw is False
    assert parsed.errors == []
    assert parsed.task_uuids == {TASK}


def test_wrapped_webhook_body_yields_every_item() -> None:
    parsed = parse_body({"data": [item(imageUUID="a"), item(imageUUID="b", cost=0.03)]})
    assert [r.image_uuid for r in parsed.results] == ["a", "b"]
    assert [r.cost_usd for r in parsed.results] == [Decimal("0.045"), Decimal("0.03")]


@pytest.mark.parametrize(
    ("field", "value"),
    [("imageBase64Data", "iVBORw0KGgo="), ("imageDataURI", "data:image/png;base64,iVBORw0KGgo=")],
)
def test_inline_image_results_carry_their_data(field: str, value: str) -> None:
    [result] = parse_body(item(imageURL=None, **{field: value})).results
    assert result.image_url is None
    assert result.image_data == value


def test_errors_envelope_yields_failures_with_code_message_and_parameter() -> None:
    parsed = parse_body(
        {
            "errors": [
                {
                    "code": "invalidWidth",
                    "message": "width must be a multiple of 16",
                    "parameter": "width",
                    "taskType": "imageInference",
                    "taskUUID": TASK,
                }
            ]
        }
    )
    assert parsed.results == []
    [error] = parsed.errors
    assert (error.task_uuid, error.code, error.parameter) == (TASK, "invalidWidth", "width")
    assert error.message == "width must be a multiple of 16"
    assert parsed.task_uuids == {TASK}


def test_get_response_mixed_items_record_successes_and_errors_and_skip_processing() -> None:
    parsed = parse_body(
        {
            "data": [
                {"taskType": "imageInference", "taskUUID": TASK, "status": "processing"},
                item(status="success", imageUUID="done-1"),
            ],
            "errors": [
                {
                    "taskUUID": TASK,
                    "status": "error",
                    "code": "timeoutProvider",
                    "message": "provider did not respond",
                }
            ],
        }
    )
    assert [r.image_uuid for r in parsed.results] == ["done-1"]
    assert [(e.code, e.message) for e in parsed.errors] == [
        ("timeoutProvider", "provider did not respond")
    ]
    assert parsed.task_uuids == {TASK}


def test_nested_error_object_in_a_data_item_is_a_failure() -> None:
    parsed = parse_body(
        {
            "data": [
                {
                    "taskUUID": TASK,
                    "status": "error",
                    "error": {"code": "contentPolicyViolation", "message": "blocked"},
                }
            ]
        }
    )
    [error] = parsed.errors
    assert (error.task_uuid, error.code, error.message) == (
        TASK,
        "contentPolicyViolation",
        "blocked",
    )
    assert parsed.results == []


def test_error_without_code_or_message_gets_placeholders() -> None:
    [error] = parse_body({"errors": [{"taskUUID": TASK, "code": 5}]}).errors
    assert (error.code, error.message, error.parameter) == ("unknownError", "no message", None)


def test_acknowledgements_and_empty_envelopes_record_nothing() -> None:
    assert parse_body({"data": []}) == ParsedBody([], [], set())
    ack = parse_body({"data": [{"taskType": "imageInference", "taskUUID": TASK}]})
    assert (ack.results, ack.errors, ack.task_uuids) == ([], [], {TASK})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([3], id="array-of-a-number"),
        pytest.param("text", id="string"),
        pytest.param(None, id="null"),
        pytest.param(3, id="number"),
        pytest.param({"data": {"taskUUID": TASK}}, id="data-not-array"),
        pytest.param({"errors": "boom"}, id="errors-not-array"),
        pytest.param({"data": ["x"]}, id="data-item-not-object"),
        pytest.param({"errors": [7]}, id="error-item-not-object"),
        pytest.param(item(taskUUID=5), id="taskUUID-int"),
        pytest.param(item(taskUUID=""), id="taskUUID-empty"),
        pytest.param({k: v for k, v in item().items() if k != "taskUUID"}, id="taskUUID-missing"),
        pytest.param({k: v for k, v in item().items() if k != "imageUUID"}, id="imageUUID-missing"),
        pytest.param(item(imageUUID=12), id="imageUUID-int"),
        pytest.param(item(imageUUID="x" * 65), id="imageUUID-too-long"),
        pytest.param(item(seed=True), id="seed-bool"),
        pytest.param(item(seed=1.5), id="seed-float"),
        pytest.param(item(seed="7"), id="seed-string"),
        pytest.param(item(seed=-1), id="seed-negative"),
        pytest.param(item(seed=2**63), id="seed-too-big"),
        pytest.param(item(cost=-0.01), id="cost-negative"),
        pytest.param(item(cost="0.045"), id="cost-string"),
        pytest.param(item(cost=True), id="cost-bool"),
        pytest.param(item(cost=1e6), id="cost-absurd"),
        pytest.param(item(cost=float("nan")), id="cost-nan"),
        pytest.param(item(cost=float("inf")), id="cost-inf"),
        pytest.param(item(NSFWContent="no"), id="nsfw-string"),
        pytest.param(item(imageURL=5), id="imageURL-int"),
        pytest.param(item(imageURL=""), id="imageURL-empty"),
        pytest.param(item(status="success", imageURL=None), id="success-without-image"),
        pytest.param({"taskUUID": TASK, "imageUUID": "x", "cost": 0.1}, id="no-image-field"),
        pytest.param({"imageUUID": "x"}, id="no-task-no-image"),
        pytest.param({"data": [{"status": "processing"}]}, id="processing-without-task"),
        pytest.param({"errors": [{"code": "x"}]}, id="error-without-task"),
    ],
)
def test_malformed_bodies_are_rejected_as_malformed(body: Any) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse_body(body)
    assert caught.value.outcome == "malformed"
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("cost", "exact"),
    [(0.045, "0.045"), (0.09, "0.09"), (0.1, "0.1"), (0.03, "0.03"), (0, "0"), (1, "1")],
)
def test_costs_become_exact_decimals(cost: float, exact: str) -> None:
    [result] = parse_body(item(cost=cost)).results
    assert result.cost_usd == Decimal(exact)


def test_a_result_without_cost_has_none() -> None:
    [result] = parse_body(item(cost=None)).results
    assert result.cost_usd is None


def test_a_bare_list_of_items_is_read_like_data() -> None:
    parsed = parse_body([item(), {"taskUUID": TASK, "status": "processing", "progress": 40}])
    assert [r.task_uuid for r in parsed.results] == [TASK]
    assert parsed.task_uuids == {TASK}


def test_a_failed_item_inside_data_is_an_error_of_its_task() -> None:
    failed = {
        "taskUUID": TASK,
        "status": "error",
        "error": {"code": "taskCancelled", "message": "gone", "parameter": ["a", "b"]},
    }
    parsed = parse_body({"data": [item(), failed]})
    [result] = parsed.results
    [found] = parsed.errors
    assert (found.task_uuid, found.code, found.reason, found.parameter) == (
        TASK,
        "taskCancelled",
        "not_found",
        "a",
    )
    assert result.task_uuid == TASK


def test_an_error_envelope_lends_its_task_uuid() -> None:
    parsed = parse_body(
        {"error": {"code": "invalidProviderContent", "message": "m"}, "taskUUID": TASK}
    )
    [found] = parsed.errors
    assert (found.task_uuid, found.reason) == (TASK, "safety")
