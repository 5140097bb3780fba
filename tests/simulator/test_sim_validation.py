"""Every FLUX.2 [pro] parameter rule, at its boundaries, over real HTTP."""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from typing import Any

import httpx
import pytest
from sim_support import DROP, encoded_image, image_task

from simulator.testing import SimulatorHandle

PNG = encoded_image(64, 64, "PNG")
JPEG = encoded_image(64, 64, "JPEG")
WEBP = encoded_image(64, 64, "WEBP")
GIF = encoded_image(64, 64, "GIF")
URL = "https://assets.example/ref.jpg"


def _png_claiming(width: int, height: int) -> str:
    """A PNG header announcing a huge image: Pillow refuses it as a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


VALID: list[tuple[str, dict[str, Any]]] = [
    ("width/height at minimum", {"width": 256, "height": 256}),
    ("width/height at maximum", {"width": 2048, "height": 256}),
    ("prompt of 32000 chars", {"positivePrompt": "x" * 32000}),
    ("seed 0", {"seed": 0}),
    ("seed at maximum", {"seed": 2**63 - 1}),
    ("numberResults 1", {"numberResults": 1}),
    ("numberResults 20", {"numberResults": 20}),
    ("outputQuality 20", {"outputQuality": 20}),
    ("outputQuality 99", {"outputQuality": 99}),
    ("ttl 60", {"ttl": 60}),
    ("every output type", {"outputType": "dataURI", "outputFormat": "WEBP"}),
    ("includeCost", {"includeCost": True}),
    ("webhook with token", {"webhookURL": "https://hooks.example/rw?token=a%2Fb"}),
    ("upload endpoint", {"uploadEndpoint": "http://store.example/put?sig=1"}),
    ("safety", {"safety": {"checkContent": True, "mode": "fast"}}),
    (
        "provider settings",
        {"providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 6}}},
    ),
    ("9 reference URLs", {"inputs": {"referenceImages": [URL] * 9}}),
    (
        "every reference kind",
        {
            "inputs": {
                "referenceImages": [
                    str(uuid.uuid4()),
                    URL,
                    f"data:image/png;base64,{PNG}",
                    JPEG,
                    f"data:image/webp;base64,{WEBP}",
                ]
            }
        },
    ),
]

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("width 255", {"width": 255}, "invalidWidth", "width"),
    ("width 2064", {"width": 2064}, "invalidWidth", "width"),
    ("width 2050", {"width": 2050}, "invalidWidth", "width"),
    ("width 1000 not multiple of 16", {"width": 1000}, "invalidWidth", "width"),
    ("height 240", {"height": 240}, "invalidHeight", "height"),
    ("width true", {"width": True}, "invalidWidth", "width"),
    ("width as float", {"width": 512.0}, "invalidWidth", "width"),
    ("width as string", {"width": "512"}, "invalidWidth", "width"),
    ("width without height", {"height": DROP}, "missingParameter", "height"),
    ("height without width", {"width": DROP}, "missingParameter", "width"),
    ("empty prompt", {"positivePrompt": ""}, "invalidPositivePrompt", "positivePrompt"),
    (
        "prompt of 32001 chars",
        {"positivePrompt": "x" * 32001},
        "invalidPositivePrompt",
        "positivePrompt",
    ),
    ("prompt not a string", {"positivePrompt": 7}, "invalidPositivePrompt", "positivePrompt"),
    ("missing prompt", {"positivePrompt": DROP}, "missingParameter", "positivePrompt"),
    ("seed -1", {"seed": -1}, "invalidSeed", "seed"),
    ("seed 2**63", {"seed": 2**63}, "invalidSeed", "seed"),
    ("seed 2**64", {"seed": 2**64}, "invalidSeed", "seed"),
    ("seed true", {"seed": True}, "invalidSeed", "seed"),
    ("numberResults 0", {"numberResults": 0}, "invalidNumberResults", "numberResults"),
    ("numberResults 21", {"numberResults": 21}, "invalidNumberResults", "numberResults"),
    ("outputQuality 19", {"outputQuality": 19}, "invalidOutputQuality", "outputQuality"),
    ("outputQuality 100", {"outputQuality": 100}, "invalidOutputQuality", "outputQuality"),
    ("ttl 59", {"ttl": 59}, "invalidTtl", "ttl"),
    ("outputType lower case", {"outputType": "url"}, "invalidOutputType", "outputType"),
    ("outputFormat JPEG", {"outputFormat": "JPEG"}, "invalidOutputFormat", "outputFormat"),
    ("outputFormat TIFF", {"outputFormat": "TIFF"}, "invalidOutputFormat", "outputFormat"),
    (
        "deliveryMethod stream",
        {"deliveryMethod": "stream"},
        "invalidDeliveryMethod",
        "deliveryMethod",
    ),
    ("includeCost 1", {"includeCost": 1}, "invalidIncludeCost", "includeCost"),
    ("webhook ftp", {"webhookURL": "ftp://hooks.example/x"}, "invalidWebhookURL", "webhookURL"),
    ("webhook relative", {"webhookURL": "/hooks/rw"}, "invalidWebhookURL", "webhookURL"),
    ("webhook not a URI", {"webhookURL": "not a url"}, "invalidWebhookURL", "webhookURL"),
    ("upload no host", {"uploadEndpoint": "https://"}, "invalidUploadEndpoint", "uploadEndpoint"),
    ("safety not object", {"safety": True}, "invalidSafety", "safety"),
    ("safety mode full", {"safety": {"mode": "full"}}, "invalidMode", "safety.mode"),
    (
        "checkContent as int",
        {"safety": {"checkContent": 1}},
        "invalidCheckContent",
        "safety.checkContent",
    ),
    (
        "safetyTolerance 7",
        {"providerSettings": {"bfl": {"safetyTolerance": 7}}},
        "invalidSafetyTolerance",
        "providerSettings.bfl.safetyTolerance",
    ),
    (
        "safetyTolerance -1",
        {"providerSettings": {"bfl": {"safetyTolerance": -1}}},
        "invalidSafetyTolerance",
        "providerSettings.bfl.safetyTolerance",
    ),
    (
        "promptUpsampling as string",
        {"providerSettings": {"bfl": {"promptUpsampling": "yes"}}},
        "invalidPromptUpsampling",
        "providerSettings.bfl.promptUpsampling",
    ),
    ("unknown top-level", {"negativePrompt": "blur"}, "unknownParameter", "negativePrompt"),
    ("steps are not for this model", {"steps": 28}, "unknownParameter", "steps"),
    (
        "unknown in bfl",
        {"providerSettings": {"bfl": {"raw": True}}},
        "unknownParameter",
        "providerSettings.bfl.raw",
    ),
    (
        "unknown provider",
        {"providerSettings": {"openai": {}}},
        "unknownParameter",
        "providerSettings.openai",
    ),
    ("unknown in safety", {"safety": {"level": 1}}, "unknownParameter", "safety.level"),
    (
        "unknown in inputs",
        {"inputs": {"seedImage": URL}},
        "unknownParameter",
        "inputs.seedImage",
    ),
    (
        "10 reference images",
        {"inputs": {"referenceImages": [URL] * 10}},
        "invalidReferenceImages",
        "inputs.referenceImages",
    ),
    (
        "references not an array",
        {"inputs": {"referenceImages": URL}},
        "invalidReferenceImages",
        "inputs.referenceImages",
    ),
    *[
        (
            f"bad reference {label}",
            {"inputs": {"referenceImages": [ref]}},
            "invalidReferenceImages",
            "inputs.referenceImages",
        )
        for label, ref in [
            ("word", "not-an-image"),
            ("ftp URL", "ftp://assets.example/a.png"),
            ("base64 of text", base64.b64encode(b"hello world, not an image").decode()),
            ("gif data URI", f"data:image/gif;base64,{GIF}"),
            ("broken data URI", "data:image/png;base64,!!!"),
            ("truncated png", base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()),
            ("decompression bomb", _png_claiming(100_000, 100_000)),
            ("number", 42),
            ("empty", ""),
        ]
    ],
    ("taskUUID v1", {"taskUUID": str(uuid.uuid1())}, "invalidTaskUUID", "taskUUID"),
    ("taskUUID not a UUID", {"taskUUID": "task-1"}, "invalidTaskUUID", "taskUUID"),
    ("taskUUID missing", {"taskUUID": DROP}, "missingParameter", "taskUUID"),
    ("other model", {"model": "bfl:2@1"}, "unsupportedModel", "model"),
    ("model missing", {"model": DROP}, "missingParameter", "model"),
]


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
