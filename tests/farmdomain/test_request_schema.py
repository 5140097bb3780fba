"""The FLUX.2 [pro] parameter rules of the seed page, every one at both sides of its bound."""

from __future__ import annotations

from typing import Any

import pytest

from farmdomain.errors import RequestInvalid
from farmdomain.request_schema import GenerationRequest, parse_request

PROMPT = "a lighthouse in fog"
UUID = "64d5f0f7-e107-4e66-b1b2-475363c9825d"
HTTPS_IMAGE = "https://assets.runware.ai/assets/inputs/64d5f0f7-e107-4e66-b1b2-475363c9825d.jpg"
# a 1x1 PNG
BARE_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
DATA_URI = "data:image/png;base64," + BARE_BASE64
DROP = object()


def request(**changes: Any) -> dict[str, Any]:
    """A valid minimal request with `changes` applied; DROP removes a key."""
    body: dict[str, Any] = {"positivePrompt": PROMPT, "width": 1024, "height": 1024}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


def refs(images: list[Any]) -> dict[str, Any]:
    return {"referenceImages": images}


def bfl(**settings: Any) -> dict[str, Any]:
    return {"bfl": settings}


ACCEPTED: list[Any] = [
    pytest.param(request(positivePrompt="x"), id="prompt-1-char"),
    pytest.param(request(positivePrompt="x" * 32_000), id="prompt-32000-chars"),
    pytest.param(request(width=DROP, height=DROP), id="no-dimensions"),
    pytest.param(request(width=256, height=256), id="dimensions-256"),
    pytest.param(request(width=2048, height=2048), id="dimensions-2048"),
    pytest.param(request(width=1536, height=1024), id="dimensions-1536x1024"),
    pytest.param(request(seed=0), id="seed-0"),
    pytest.param(request(seed=2**63 - 1), id="seed-2**63-1"),
    pytest.param(request(numberResults=1), id="numberResults-1"),
    pytest.param(request(numberResults=20), id="numberResults-20"),
    *[
        pytest.param(request(outputType=t), id=f"outputType-{t}")
        for t in ("URL", "base64Data", "dataURI")
    ],
    *[
        pytest.param(request(outputFormat=f), id=f"outputFormat-{f}")
        for f in ("JPG", "PNG", "WEBP")
    ],
    pytest.param(request(outputQuality=20), id="outputQuality-20"),
    pytest.param(request(outputQuality=99), id="outputQuality-99"),
    pytest.param(request(ttl=60), id="ttl-60-default-URL"),
    pytest.param(request(ttl=86_400, outputType="URL"), id="ttl-with-URL"),
    pytest.param(request(uploadEndpoint="https://bucket.example/put?X-Sig=1"), id="uploadEndpoint"),
    pytest.param(request(safety={"checkContent": True}), id="safety-checkContent"),
    pytest.param(request(safety={"checkContent": False, "mode": "none"}), id="safety-mode-none"),
    pytest.param(request(safety={"mode": "fast"}), id="safety-mode-fast"),
    pytest.param(request(inputs=refs([HTTPS_IMAGE] * 9)), id="referenceImages-9"),
    pytest.param(request(inputs=refs([UUID])), id="referenceImages-uuid"),
    pytest.param(request(inputs=refs([HTTPS_IMAGE])), id="referenceImages-https"),
    pytest.param(request(inputs=refs([DATA_URI])), id="referenceImages-data-uri"),
    pytest.param(request(inputs=refs([BARE_BASE64])), id="referenceImages-base64"),
    pytest.param(request(providerSettings=bfl(promptUpsampling=True)), id="promptUpsampling"),
    pytest.param(request(providerSettings=bfl(safetyTolerance=0)), id="safetyTolerance-0"),
    pytest.param(request(providerSettings=bfl(safetyTolerance=6)), id="safetyTolerance-6"),
]

# (request, field as Runware names it, rule)
REJECTED: list[Any] = [
    pytest.param(request(positivePrompt=DROP), "positivePrompt", "required", id="prompt-missing"),
    pytest.param(request(positivePrompt=""), "positivePrompt", "min_length", id="prompt-empty"),
    pytest.param(
        request(positivePrompt="x" * 32_001), "positivePrompt", "max_length", id="prompt-32001"
    ),
    pytest.param(request(positivePrompt=42), "positivePrompt", "string", id="prompt-int"),
    pytest.param(request(positivePrompt=["x"]), "positivePrompt", "string", id="prompt-list"),
    *[
        pytest.param(request(**{side: value}), side, rule, id=f"{side}-{label}")
        for side in ("width", "height")
        for value, rule, label in (
            # 255 breaks two rules; pydantic checks the step before the bounds
            (255, "multiple_of_16", "255"),
            (240, "minimum", "240"),
            (2064, "maximum", "2064"),
            (1000, "multiple_of_16", "1000"),
            (True, "integer", "bool"),
            (512.0, "integer", "float"),
            ("512", "integer", "string"),
        )
    ],
    pytest.param(request(height=DROP), "height", "width_and_height_together", id="width-alone"),
    pytest.param(request(width=DROP), "width", "width_and_height_together", id="height-alone"),
    pytest.param(request(seed=-1), "seed", "minimum", id="seed--1"),
    pytest.param(request(seed=2**63), "seed", "maximum", id="seed-2**63"),
    pytest.param(request(seed=True), "seed", "integer", id="seed-bool"),
    pytest.param(request(numberResults=0), "numberResults", "minimum", id="numberResults-0"),
    pytest.param(request(numberResults=21), "numberResults", "maximum", id="numberResults-21"),
    pytest.param(request(numberResults=2.0), "numberResults", "integer", id="numberResults-float"),
    pytest.param(request(outputType="url"), "outputType", "allowed_values", id="outputType-case"),
    pytest.param(request(outputType="PNG"), "outputType", "allowed_values", id="outputType-PNG"),
    pytest.param(request(outputFormat="TIFF"), "outputFormat", "allowed_values", id="format-TIFF"),
    pytest.param(request(outputFormat="jpg"), "outputFormat", "allowed_values", id="format-case"),
    pytest.param(request(outputQuality=19), "outputQuality", "minimum", id="outputQuality-19"),
    pytest.param(request(outputQuality=100), "outputQuality", "maximum", id="outputQuality-100"),
    pytest.param(request(ttl=59), "ttl", "minimum", id="ttl-59"),
    pytest.param(
        request(ttl=60, outputType="base64Data"), "ttl", "url_output_only", id="ttl-base64Data"
    ),
    pytest.param(request(ttl=60, outputType="dataURI"), "ttl", "url_output_only", id="ttl-dataURI"),
    pytest.param(request(uploadEndpoint="not a uri"), "uploadEndpoint", "format", id="upload-text"),
    pytest.param(request(uploadEndpoint="ftp://h/x"), "uploadEndpoint", "format", id="upload-ftp"),
    pytest.param(
        request(uploadEndpoint="https://"), "uploadEndpoint", "format", id="upload-nohost"
    ),
    pytest.param(request(safety=True), "safety", "object", id="safety-not-object"),
    pytest.param(
        request(safety={"checkContent": "yes"}), "safety.checkContent", "boolean", id="check-str"
    ),
    pytest.param(
        request(safety={"checkContent": 1}), "safety.checkContent", "boolean", id="check-int"
    ),
    pytest.param(request(safety={"mode": "full"}), "safety.mode", "allowed_values", id="mode-full"),
    pytest.param(
        request(inputs=refs([HTTPS_IMAGE] * 10)),
        "inputs.referenceImages",
        "max_items",
        id="referenceImages-10",
    ),
    pytest.param(
        request(inputs=refs([])), "inputs.referenceImages", "min_items", id="referenceImages-empty"
    ),
    pytest.param(
        request(inputs=refs(HTTPS_IMAGE)), "inputs.referenceImages", "array", id="refs-not-list"
    ),
    pytest.param(request(inputs={}), "inputs.referenceImages", "required", id="inputs-empty"),
    *[
        pytest.param(
            request(inputs=refs([UUID, garbage])),
            "inputs.referenceImages.1",
            rule,
            id=f"referenceImage-{label}",
        )
        for garbage, rule, label in (
            ("not an image!", "format", "garbage"),
            ("abc", "format", "base64-bad-length"),
            ("data:image/png;base64,%%%", "format", "data-uri-garbage"),
            ("data:text/html;base64,PGI+", "format", "data-uri-not-image"),
            ("https://", "format", "url-without-host"),
            ("", "format", "empty"),
            (7, "string", "int"),
        )
    ],
    pytest.param(
        request(providerSettings=bfl(promptUpsampling="true")),
        "providerSettings.bfl.promptUpsampling",
        "boolean",
        id="promptUpsampling-str",
    ),
    pytest.param(
        request(providerSettings=bfl(safetyTolerance=-1)),
        "providerSettings.bfl.safetyTolerance",
        "minimum",
        id="safetyTolerance--1",
    ),
    pytest.param(
        request(providerSettings=bfl(safetyTolerance=7)),
        "providerSettings.bfl.safetyTolerance",
        "maximum",
        id="safetyTolerance-7",
    ),
    pytest.param(
        request(providerSettings={}), "providerSettings.bfl", "required", id="providerSettings-{}"
    ),
    pytest.param(
        request(providerSettings={"bfl": {}, "openai": {}}),
        "providerSettings.openai",
        "unknown_parameter",
        id="providerSettings-other-provider",
    ),
    pytest.param(
        request(negativePrompt="blur"), "negativePrompt", "unknown_parameter", id="unknown-top"
    ),
    pytest.param(
        request(positive_prompt=PROMPT), "positive_prompt", "unknown_parameter", id="snake-case"
    ),
    pytest.param(
        request(safety={"level": 1}), "safety.level", "unknown_parameter", id="unknown-nested"
    ),
    pytest.param(
        request(inputs={"referenceImages": [UUID], "maskImage": UUID}),
        "inputs.maskImage",
        "unknown_parameter",
        id="unknown-in-inputs",
    ),
    pytest.param(
        request(providerSettings=bfl(steps=4)),
        "providerSettings.bfl.steps",
        "unknown_parameter",
        id="unknown-in-bfl",
    ),
    *[
        pytest.param(request(**{name: value}), name, "unknown_parameter", id=f"platform-{name}")
        for name, value in (
            ("taskType", "imageInference"),
            ("taskUUID", UUID),
            ("model", "bfl:5@1"),
            ("webhookURL", "https://hooks.example/x"),
            ("deliveryMethod", "async"),
            ("includeCost", True),
        )
    ],
]


def issues_of(payload: Any) -> list[tuple[str, str]]:
    with pytest.raises(RequestInvalid) as caught:
        parse_request(payload)
    return [(issue.field, issue.rule) for issue in caught.value.issues]


@pytest.mark.parametrize("payload", ACCEPTED)
def test_request_within_every_rule_is_accepted(payload: dict[str, Any]) -> None:
    parsed = parse_request(payload)
    assert isinstance(parsed, GenerationRequest)
    assert parsed.runware_params() == payload


@pytest.mark.parametrize(("payload", "field", "rule"), REJECTED)
def test_request_breaking_one_rule_is_rejected_naming_field_and_rule(
    payload: dict[str, Any], field: str, rule: str
) -> None:
    assert issues_of(payload) == [(field, rule)]


@pytest.mark.parametrize("payload", [None, [], "prompt", 3, [request()]])
def test_non_object_request_is_rejected_as_a_whole(payload: Any) -> None:
    assert issues_of(payload) == [("request", "object")]


def test_several_broken_rules_are_reported_together_each_naming_its_field() -> None:
    payload = request(
        positivePrompt="",
        width=240,
        height=1000,
        seed=-1,
        numberResults=21,
        outputQuality=100,
        safety={"mode": "full"},
        inputs=refs(["not an image!"]),
        providerSettings=bfl(safetyTolerance=7),
        model="bfl:5@1",
    )
    with pytest.raises(RequestInvalid) as caught:
        parse_request(payload)
    found = {(i.field, i.rule) for i in caught.value.issues}
    assert found == {
        ("positivePrompt", "min_length"),
        ("width", "minimum"),
        ("height", "multiple_of_16"),
        ("seed", "minimum"),
        ("numberResults", "maximum"),
        ("outputQuality", "maximum"),
        ("safety.mode", "allowed_values"),
        ("inputs.referenceImages.0", "format"),
        ("providerSettings.bfl.safetyTolerance", "maximum"),
        ("model", "unknown_parameter"),
    }
    message = str(caught.value)
    for field, _ in found:
        assert field in message
    assert all(issue.message for issue in caught.value.issues)


def test_defaults_are_applied_but_not_sent_back_to_runware() -> None:
    parsed = parse_request({"positivePrompt": PROMPT})
    assert parsed.number_results == 1
    assert parsed.output_type == "URL"
    assert parsed.output_format == "JPG"
    assert parsed.output_quality == 95
    assert parsed.runware_params() == {"positivePrompt": PROMPT}


SEED_EXAMPLES = [
    {
        "positivePrompt": "Create a grand scene inside a volcanic glasshouse where a ceremonial "
        "orchid procession crosses black basalt paths between terraced pools.",
        "width": 1536,
        "height": 1024,
        "seed": 15903,
        "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}},
        "inputs": {
            "referenceImages": [
                "https://assets.runware.ai/assets/inputs/64d5f0f7-e107-4e66-b1b2-475363c9825d.jpg",
                "https://assets.runware.ai/assets/inputs/f468cd76-38f7-42d8-9b84-162c6512ddb7.jpg",
                "https://assets.runware.ai/assets/inputs/a9b3eff0-b15e-43e7-9ae7-9482316cbecb.jpg",
            ]
        },
    },
    {
        "positivePrompt": "A vast sunken library atrium beneath clear seawater, seen from inside "
        "the structure: towering marble arches wrapped in drifting kelp.",
        "width": 1536,
        "height": 1024,
        "seed": 16070,
        "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}},
    },
    {
        "positivePrompt": "A grand panoramic harbor city built around colossal tidal clockwork, "
        "terraced quays, suspended bridges.",
        "width": 1536,
        "height": 1024,
        "seed": 27270,
        "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}},
        "inputs": {
            "referenceImages": [
                "https://assets.runware.ai/assets/inputs/bdaeb71c-ebf0-49de-b3da-590fae66fb93.jpg",
                "https://assets.runware.ai/assets/inputs/c1d8b027-b1c2-4a58-b50d-72126cef99b7.jpg",
                "https://assets.runware.ai/assets/inputs/94cbc938-56de-4405-8d1a-838a112330fd.jpg",
            ]
        },
    },
    {
        "positivePrompt": "A monumental cathedral formed entirely from white salt and translucent "
        "mineral crystal on a vast dried lakebed.",
        "width": 1536,
        "height": 1024,
        "seed": 73410,
        "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}},
    },
]


@pytest.mark.parametrize("example", SEED_EXAMPLES, ids=["orchid", "library", "harbor", "salt"])
def test_seed_page_examples_are_accepted_and_round_trip(example: dict[str, Any]) -> None:
    assert parse_request(example).runware_params() == example


def test_fields_sent_as_null_are_left_out_of_the_wire_form() -> None:
    parsed = parse_request({"positivePrompt": PROMPT, "width": None, "height": None, "seed": None})
    assert parsed.runware_params() == {"positivePrompt": PROMPT}
