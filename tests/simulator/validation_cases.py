"""FLUX.2 [pro] parameter cases at their boundaries, valid and invalid, shared by the REST
and the SDK tests."""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from typing import Any

from sim_support import DROP, encoded_image

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
