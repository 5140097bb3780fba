"""The FLUX.2 [pro] (`bfl:5@1`) request rules, checked before anything is stored or queued.

Field names are Runware's (camelCase), so an error names the field exactly as the caller
sent it. The platform fields (taskType, taskUUID, model, deliveryMethod, webhookURL,
includeCost) are fluxfarm's to set and are refused from callers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from farmdomain.errors import FieldIssue, RequestInvalid
from farmdomain.text import no_control, no_control_but_whitespace

MODEL_ID = "bfl:5@1"
MAX_REFERENCE_IMAGES = 9
DIMENSION_MIN, DIMENSION_MAX, DIMENSION_STEP = 256, 2048, 16
SEED_MAX = 9_223_372_036_854_775_807

_DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(?P<payload>.+)$", re.DOTALL)
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _absolute_http_uri(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URI")
    return value


def _reference_image(value: str) -> str:
    """A UUID, an http(s) URL, a data URI or bare base64, as Runware accepts."""
    try:
        uuid.UUID(value)
    except ValueError:
        pass
    else:
        return value
    if value.startswith(("http://", "https://")):
        return _absolute_http_uri(value)
    match = _DATA_URI.match(value)
    payload = match.group("payload") if match else value
    if not _BASE64.match(payload) or len(payload) % 4:
        raise ValueError("must be an image UUID, an http(s) URL, a data URI or base64 data")
    try:
        base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError("base64 data does not decode") from exc
    return value


Dimension = Annotated[StrictInt, Field(ge=DIMENSION_MIN, le=DIMENSION_MAX, multiple_of=16)]
HttpUri = Annotated[StrictStr, AfterValidator(no_control), AfterValidator(_absolute_http_uri)]
ReferenceImage = Annotated[StrictStr, AfterValidator(no_control), AfterValidator(_reference_image)]


class _RunwareShape(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", frozen=True
    )


class Safety(_RunwareShape):
    check_content: StrictBool = False
    mode: Literal["none", "fast"] = "none"


class Inputs(_RunwareShape):
    reference_images: Annotated[
        list[ReferenceImage], Field(min_length=1, max_length=MAX_REFERENCE_IMAGES)
    ]


class BflSettings(_RunwareShape):
    prompt_upsampling: StrictBool = False
    safety_tolerance: Annotated[StrictInt, Field(ge=0, le=6)] = 2


class ProviderSettings(_RunwareShape):
    bfl: BflSettings


class GenerationRequest(_RunwareShape):
    """One FLUX.2 [pro] imageInference as a caller asks for it."""

    positive_prompt: Annotated[
        StrictStr, Field(min_length=1, max_length=32_000), AfterValidator(no_control_but_whitespace)
    ]
    width: Dimension | None = None
    height: Dimension | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=SEED_MAX)] | None = None
    number_results: Annotated[StrictInt, Field(ge=1, le=20)] = 1
    output_type: Literal["URL", "base64Data", "dataURI"] = "URL"
    output_format: Literal["JPG", "PNG", "WEBP"] = "JPG"
    output_quality: Annotated[StrictInt, Field(ge=20, le=99)] = 95
    ttl: Annotated[StrictInt, Field(ge=60)] | None = None
    upload_endpoint: HttpUri | None = None
    safety: Safety | None = None
    inputs: Inputs | None = None
    provider_settings: ProviderSettings | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> GenerationRequest:
        issues = cross_field_issues(self.model_dump(by_alias=True, exclude_none=True))
        if issues:
            raise ValueError("; ".join(f"{i.field}: {i.message}" for i in issues))
        return self

    def runware_params(self) -> dict[str, Any]:
        """The caller's parameters in Runware's wire form; defaults and nulls left out."""
        return self.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")

    def fingerprint(self) -> str:
        """Equal for requests that mean the same, whether or not defaults were spelled out."""
        normalized = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return hashlib.sha256(orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS)).hexdigest()


def cross_field_issues(values: dict[str, Any]) -> list[FieldIssue]:
    """Rules between fields, checked on raw input too so they are reported with the rest."""
    issues = []
    if (values.get("width") is None) != (values.get("height") is None):
        missing = "height" if values.get("height") is None else "width"
        message = "width and height must be given together"
        issues.append(FieldIssue(missing, "width_and_height_together", message))
    if values.get("ttl") is not None and values.get("outputType", "URL") != "URL":
        issues.append(FieldIssue("ttl", "url_output_only", "only applies when outputType is URL"))
    return issues


_RULES = {
    "missing": "required",
    "extra_forbidden": "unknown_parameter",
    "greater_than_equal": "minimum",
    "less_than_equal": "maximum",
    "multiple_of": "multiple_of_16",
    "string_too_short": "min_length",
    "string_too_long": "max_length",
    "too_short": "min_items",
    "too_long": "max_items",
    "literal_error": "allowed_values",
    "int_type": "integer",
    "bool_type": "boolean",
    "string_type": "string",
    "model_type": "object",
    "list_type": "array",
    "value_error": "format",
}


def _issue_from(error: Any) -> FieldIssue:
    field = ".".join(str(part) for part in error["loc"])
    rule = _RULES.get(error["type"], error["type"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return FieldIssue(field=field, rule=rule, message=message)


def parse_request(payload: Any) -> GenerationRequest:
    """Validate a caller's request, reporting every broken rule together."""
    if not isinstance(payload, dict):
        raise RequestInvalid([FieldIssue("request", "object", "must be a JSON object")])
    try:
        return GenerationRequest.model_validate(payload)
    except ValidationError as exc:
        # errors without a location come from the cross-field validator: re-derive them from
        # the raw input, which also finds them when other fields failed first
        issues = [_issue_from(e) for e in exc.errors() if e["loc"]]
        raise RequestInvalid(issues + cross_field_issues(payload)) from exc
