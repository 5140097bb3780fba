"""Hypothesis over the job API's bodies and the request schema: never a 5xx, and a refused
request leaves the store exactly as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.security.conftest import TALLY, Farm
from tests.security.test_webhook_fuzz import nested, values

VALID = {"positivePrompt": "a lighthouse at dusk", "width": 1024, "height": 768}
REQUEST_FIELDS = {
    "positivePrompt": st.text(max_size=50) | values,
    "width": st.integers(-10, 5000) | values,
    "height": st.integers(-10, 5000) | values,
    "seed": st.integers(-1, 2**70) | values,
    "numberResults": st.integers(-1, 30) | values,
    "outputType": st.sampled_from(["URL", "base64Data", "dataURI", "nope"]) | values,
    "outputFormat": st.sampled_from(["JPG", "PNG", "WEBP", "GIF"]) | values,
    "outputQuality": st.integers(0, 120) | values,
    "ttl": st.integers(-1, 10**6) | values,
    "uploadEndpoint": st.sampled_from(["https://example.com/u", "ftp://x", "\x00"]) | values,
    "inputs": st.fixed_dictionaries({"referenceImages": st.lists(st.text(max_size=30))}) | values,
    "providerSettings": st.fixed_dictionaries(
        {"bfl": st.fixed_dictionaries({}, optional={"safetyTolerance": values})}
    )
    | values,
    "unknownParameter": values,
}


def requests() -> st.SearchStrategy[Any]:
    mutated = st.fixed_dictionaries({}, optional=REQUEST_FIELDS).map(lambda d: {**VALID, **d})
    return mutated | st.fixed_dictionaries({}, optional=REQUEST_FIELDS) | values


envelopes = st.fixed_dictionaries(
    {"request": requests()},
    optional={
        "idempotencyKey": st.text(max_size=300) | values,
        "deadlineSeconds": st.floats(allow_nan=False) | values,
        "extra": values,
    },
)


@pytest.fixture
def acme(farm: Farm) -> dict[str, str]:
    return farm.bearer("acme")


def post(farm: Farm, content: bytes, headers: dict[str, str]) -> tuple[int, bool]:
    before = farm.dump()
    response = farm.http.post(
        "/v1/jobs", content=content, headers={"Content-Type": "application/json", **headers}
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"errors"}
    return response.status_code, farm.dump() != before


@settings(settings.get_profile("security"), max_examples=200)
@given(body=envelopes | values, ascii_only=st.booleans())
def test_job_bodies_never_5xx_and_refusals_change_nothing(
    farm: Farm, acme: dict[str, str], body: Any, ascii_only: bool
) -> None:
    status, changed = post(farm, json.dumps(body, ensure_ascii=ascii_only).encode(), acme)
    TALLY.record("job api body", status, changed and status >= 400)
    assert not (status >= 400 and changed)


@settings(settings.get_profile("security"), max_examples=60)
@given(
    raw=st.binary(max_size=200)
    | st.integers(min_value=1, max_value=50_000).map(nested)
    | st.integers(min_value=1, max_value=50_000).map(lambda n: b'{"request": ' + b"9" * n + b"}"),
    authorized=st.booleans(),
)
def test_raw_job_bytes_never_5xx_and_change_nothing(
    farm: Farm, acme: dict[str, str], raw: bytes, authorized: bool
) -> None:
    status, changed = post(farm, raw, acme if authorized else {})
    TALLY.record("job api raw", status, changed)
    assert status >= 400
    assert not changed
