"""FLUX.2 [pro] (`bfl:5@1`) imageInference parameter rules, reporting every error of a task."""

from __future__ import annotations

import base64
import binascii
import io
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from simulator.errors import ErrorDict, api_error
from simulator.pricing import megapixels

MODEL = "bfl:5@1"
TASK_TYPE = "imageInference"
MAX_SEED = 2**63 - 1
MAX_REFERENCE_IMAGES = 9
OUTPUT_TYPES = ("URL", "base64Data", "dataURI")
OUTPUT_FORMATS = ("JPG", "PNG", "WEBP")
DELIVERY_METHODS = ("sync", "async")
SAFETY_MODES = ("none", "fast")

TOP_LEVEL = frozenset(
    {
        "taskType",
        "taskUUID",
        "model",
        "positivePrompt",
        "width",
        "height",
        "seed",
        "numberResults",
        "outputType",
        "outputFormat",
        "outputQuality",
        "ttl",
        "includeCost",
        "deliveryMethod",
        "webhookURL",
        "uploadEndpoint",
        "safety",
        "inputs",
        "providerSettings",
    }
)
NESTED = {
    "safety": frozenset({"checkContent", "mode"}),
    "inputs": frozenset({"referenceImages"}),
    "providerSettings": frozenset({"bfl"}),
    "providerSettings.bfl": frozenset({"promptUpsampling", "safetyTolerance"}),
}

_DATA_URI = re.compile(r"data:image/(png|jpe?g|webp);base64,(.*)", re.DOTALL)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


@dataclass(frozen=True)
class ImageRequest:
    """A validated imageInference task, with defaults filled in."""

    task_uuid: str
    prompt: str
    width: int
    height: int
    seed: int | None
    number_results: int
    output_type: str
    output_format: str
    output_quality: int
    ttl_s: int | None
    include_cost: bool
    delivery_method: str
    webhook_url: str | None
    upload_endpoint: str | None
    reference_megapixels: tuple[int, ...]


def is_uuid4(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value.lower()


def _is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, a subclass of int: they are not integers here.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_http_uri(value: Any) -> bool:
    if not isinstance(value, str) or any(ch.isspace() for ch in value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _invalid_code(parameter: str) -> str:
    leaf = parameter.rsplit(".", 1)[-1]
    return "invalid" + leaf[0].upper() + leaf[1:]


class _Checker:
    """Accumulates the errors of one task so that all of them are reported together."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.errors: list[ErrorDict] = []

    def fail(self, parameter: str, message: str, code: str | None = None) -> None:
        self.errors.append(
            api_error(
                code or _invalid_code(parameter),
                message,
                parameter=parameter,
                task_type=TASK_TYPE,
                task_uuid=self.task.get("taskUUID"),
            )
        )

    def unknown_keys(self, obj: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
        for key in obj:
            if key not in allowed:
                name = f"{prefix}{key}"
                self.fail(name, f"Unknown parameter '{name}' for {MODEL}.", "unknownParameter")

    def integer(self, obj: dict[str, Any], key: str, path: str, low: int, high: int) -> int | None:
        if key not in obj:
            return None
        value = obj[key]
        if not _is_int(value) or not low <= value <= high:
            self.fail(path, f"'{path}' must be an integer between {low} and {high}.")
            return None
        return int(value)

    def choice(self, obj: dict[str, Any], key: str, path: str, choices: tuple[str, ...]) -> Any:
        value = obj.get(key)
        if key in obj and value not in choices:
            self.fail(path, f"'{path}' must be one of {', '.join(choices)}.")
            return None
        return value

    def boolean(self, obj: dict[str, Any], key: str, path: str) -> bool:
        value = obj.get(key)
        if key in obj and not isinstance(value, bool):
            self.fail(path, f"'{path}' must be a boolean.")
            return False
        return bool(value)

    def uri(self, key: str) -> str | None:
        if key not in self.task:
            return None
        value = self.task[key]
        if not _is_http_uri(value):
            self.fail(key, f"'{key}' must be an absolute http(s) URI.")
            return None
        return str(value)

    def section(self, key: str, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        if key not in obj:
            return {}
        value = obj[key]
        if not isinstance(value, dict):
            self.fail(path, f"'{path}' must be an object.")
            return {}
        self.unknown_keys(value, NESTED[path], path + ".")
        return value


def reference_megapixels(reference: Any) -> int | None:
    """Megapixels billed for one reference image, or None when it is not a usable image.

    A UUID or URL cannot be measured without fetching it, so it counts as one megapixel.
    """
    if not isinstance(reference, str) or not reference:
        return None
    if reference.startswith(("http://", "https://")):
        return 1 if _is_http_uri(reference) else None
    try:
        uuid.UUID(reference)
    except ValueError:
        pass
    else:
        return 1
    match = _DATA_URI.fullmatch(reference)
    payload = match.group(2) if match else reference
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    is_webp = raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    if not (raw.startswith(_IMAGE_MAGIC) or is_webp):
        return None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
    # Pillow's plugins raise many types on hostile bytes (SyntaxError, DecompressionBombError
    # among them); any of them means "not a usable image", never a server error.
    except Exception:
        return None
    return megapixels(width, height)


def _check_references(check: _Checker) -> tuple[int, ...]:
    inputs = check.section("inputs", "inputs", check.task)
    path = "inputs.referenceImages"
    if "referenceImages" not in inputs:
        return ()
    refs = inputs["referenceImages"]
    if not isinstance(refs, list):
        check.fail(path, f"'{path}' must be an array of strings.")
        return ()
    if len(refs) > MAX_REFERENCE_IMAGES:
        check.fail(path, f"'{path}' accepts at most {MAX_REFERENCE_IMAGES} images.")
        return ()
    sizes: list[int] = []
    for index, ref in enumerate(refs):
        size = reference_megapixels(ref)
        if size is None:
            check.fail(
                path,
                f"Reference image {index} is not a UUID, http(s) URL, data URI or base64"
                " of a PNG, JPG or WEBP image.",
            )
        else:
            sizes.append(size)
    return tuple(sizes)


def _check_dimensions(check: _Checker, require: bool) -> tuple[int, int]:
    task = check.task
    has_width, has_height = "width" in task, "height" in task
    if has_width != has_height:
        missing = "height" if has_width else "width"
        check.fail(missing, "'width' and 'height' must be used together.", "missingParameter")
    elif not has_width and require:
        for missing in ("width", "height"):
            check.fail(missing, f"Missing required parameter '{missing}'.", "missingParameter")
    sizes: list[int] = []
    for key in ("width", "height"):
        value = task.get(key, 1024)
        if not (_is_int(value) and 256 <= value <= 2048 and value % 16 == 0):
            check.fail(key, f"'{key}' must be an integer from 256 to 2048 in steps of 16.")
            value = 1024
        sizes.append(value)
    return sizes[0], sizes[1]


def validate_image_task(
    task: dict[str, Any], *, require_dimensions: bool = True
) -> tuple[ImageRequest | None, list[ErrorDict]]:
    """Check one imageInference task; return the request, or None and every error found."""
    check = _Checker(task)
    check.unknown_keys(task, TOP_LEVEL, "")
    for required in ("taskUUID", "model", "positivePrompt"):
        if required not in task:
            check.fail(required, f"Missing required parameter '{required}'.", "missingParameter")
    if "taskUUID" in task and not is_uuid4(task["taskUUID"]):
        check.fail("taskUUID", "'taskUUID' must be a UUID v4 string.")
    if "model" in task and task["model"] != MODEL:
        check.fail("model", f"This endpoint only serves model '{MODEL}'.", "unsupportedModel")
    prompt = task.get("positivePrompt")
    if "positivePrompt" in task and not (isinstance(prompt, str) and 1 <= len(prompt) <= 32000):
        check.fail("positivePrompt", "'positivePrompt' must be a string of 1 to 32000 characters.")
    width, height = _check_dimensions(check, require_dimensions)
    seed = check.integer(task, "seed", "seed", 0, MAX_SEED)
    number_results = check.integer(task, "numberResults", "numberResults", 1, 20)
    output_type = check.choice(task, "outputType", "outputType", OUTPUT_TYPES)
    output_format = check.choice(task, "outputFormat", "outputFormat", OUTPUT_FORMATS)
    quality = check.integer(task, "outputQuality", "outputQuality", 20, 99)
    ttl = check.integer(task, "ttl", "ttl", 60, MAX_SEED)
    include_cost = check.boolean(task, "includeCost", "includeCost")
    delivery = check.choice(task, "deliveryMethod", "deliveryMethod", DELIVERY_METHODS)
    webhook_url = check.uri("webhookURL")
    upload_endpoint = check.uri("uploadEndpoint")
    safety = check.section("safety", "safety", task)
    check.boolean(safety, "checkContent", "safety.checkContent")
    check.choice(safety, "mode", "safety.mode", SAFETY_MODES)
    provider = check.section("providerSettings", "providerSettings", task)
    bfl = check.section("bfl", "providerSettings.bfl", provider)
    check.boolean(bfl, "promptUpsampling", "providerSettings.bfl.promptUpsampling")
    check.integer(bfl, "safetyTolerance", "providerSettings.bfl.safetyTolerance", 0, 6)
    references = _check_references(check)
    if check.errors:
        return None, check.errors
    return (
        ImageRequest(
            task_uuid=task["taskUUID"],
            prompt=task["positivePrompt"],
            width=width,
            height=height,
            seed=seed,
            number_results=number_results or 1,
            output_type=output_type or "URL",
            output_format=output_format or "JPG",
            output_quality=95 if quality is None else quality,
            ttl_s=ttl,
            include_cost=include_cost,
            delivery_method=delivery or "sync",
            webhook_url=webhook_url,
            upload_endpoint=upload_endpoint,
            reference_megapixels=references,
        ),
        [],
    )
