"""The JSON bodies exchanged with Runware, as types: the tasks the farm sends and the items
Runware answers with (read by `client`; untrusted bodies are checked by `bodies`)."""

from __future__ import annotations

from typing import Any, Required, TypedDict


class InferenceTask(TypedDict, total=False):
    """One imageInference task; the caller's parameters were checked by the request schema
    (farmdomain.request_schema) before they became one."""

    taskType: Required[str]
    taskUUID: Required[str]
    model: Required[str]
    deliveryMethod: Required[str]
    includeCost: bool
    webhookURL: str
    uploadEndpoint: str
    ttl: int
    positivePrompt: str
    width: int
    height: int
    numberResults: int
    outputType: str
    outputFormat: str
    outputQuality: int
    seed: int
    inputs: dict[str, Any]
    providerSettings: dict[str, Any]
    safety: dict[str, Any]


class GetResponseTask(TypedDict):
    """What Runware has now for one task."""

    taskType: str
    taskUUID: str


class ErrorBody(TypedDict, total=False):
    """A Runware error; `parameter` is a list of fields for a cross-field rule."""

    code: str
    message: str
    parameter: str | list[str]
    taskType: str
    taskUUID: str | None
    documentation: str
    status: str


class ResultItem(TypedDict, total=False):
    """An item of an answer's `data`: an acknowledgement, a result, progress, or (with
    status `error`) a failed generation."""

    taskType: str
    taskUUID: str
    imageUUID: str
    imageURL: str
    imageBase64Data: str
    imageDataURI: str
    seed: int
    cost: float
    NSFWContent: bool
    status: str
    progress: float
    error: ErrorBody
