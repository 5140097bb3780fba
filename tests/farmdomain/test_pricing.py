"""The cost estimate reserved against the budget, checked against the seed's prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from farmdomain.pricing import estimate_usd

REFS = {"inputs": {"referenceImages": ["https://example.com/a.jpg"] * 3}}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # the model page's "1k: $0.03"
        ({"width": 1024, "height": 1024}, "0.03"),
        ({}, "0.03"),
        ({"width": None, "height": None, "inputs": None}, "0.03"),
        # the seed's text-to-image and image-to-image examples
        ({"width": 1536, "height": 1024}, "0.045"),
        ({"width": 1536, "height": 1024, **REFS}, "0.09"),
        ({"width": 2048, "height": 2048}, "0.075"),
        ({"width": 256, "height": 256, "numberResults": 4}, "0.12"),
        ({"width": 1536, "height": 1024, "numberResults": 20, **REFS}, "1.8"),
    ],
)
def test_estimate_follows_the_per_megapixel_price(params: dict[str, Any], expected: str) -> None:
    assert estimate_usd({"positivePrompt": "x", **params}) == Decimal(expected)
