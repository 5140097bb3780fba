"""What a FLUX.2 [pro] job is expected to cost, before Runware reports the real figure.

Runware lists "1k: $0.03"; Black Forest Labs' pass-through price is 3 cents for the first
output megapixel and 1.5 cents for each further output megapixel and each reference
megapixel, counts rounded up. A megapixel is 1024 x 1024 pixels here, so "1k" is $0.03.
The size of a reference given by URL or UUID is unknown before Runware fetches it: each
counts as one megapixel, and the reported cost settles the difference.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

FIRST_MEGAPIXEL_USD = Decimal("0.03")
EXTRA_MEGAPIXEL_USD = Decimal("0.015")
MEGAPIXEL = 1024 * 1024
DEFAULT_SIDE = 1024


def megapixels(width: int, height: int) -> int:
    return max(1, math.ceil(width * height / MEGAPIXEL))


def estimate_usd(params: dict[str, Any]) -> Decimal:
    """The expected cost of a whole job: every image of it, with its references."""
    # a field sent as null means the same as one left out
    width = int(params.get("width") or DEFAULT_SIDE)
    height = int(params.get("height") or DEFAULT_SIDE)
    references = len((params.get("inputs") or {}).get("referenceImages") or [])
    per_image = FIRST_MEGAPIXEL_USD + EXTRA_MEGAPIXEL_USD * (
        megapixels(width, height) - 1 + references
    )
    return per_image * int(params.get("numberResults") or 1)
