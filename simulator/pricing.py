"""Per-image cost estimate for FLUX.2 [pro], computed exactly with Decimal.

Runware lists only "1k: $0.03"; the estimate follows Black Forest Labs' pass-through price
(runware-api.md §6.4): 3 cents for the first output megapixel, 1.5 cents for each further
output megapixel and for each reference megapixel, every megapixel count rounded up.
A megapixel is taken as 1024 x 1024 pixels, so that "1k" (1024 x 1024) costs the listed
$0.03; with 10^6 it would cost $0.045. Both readings give the seed's example prices.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_CEILING, Decimal

FIRST_MEGAPIXEL_USD = Decimal("0.03")
EXTRA_MEGAPIXEL_USD = Decimal("0.015")
PIXELS_PER_MEGAPIXEL = Decimal(1024 * 1024)


def megapixels(width: int, height: int) -> int:
    """Megapixels of an image, rounded up; never less than one."""
    exact = Decimal(width * height) / PIXELS_PER_MEGAPIXEL
    return max(1, int(exact.to_integral_value(rounding=ROUND_CEILING)))


def image_cost(width: int, height: int, reference_megapixels: Iterable[int]) -> Decimal:
    """Cost in USD of one generated image of `width` x `height` with these references."""
    extra_output = megapixels(width, height) - 1
    inputs = sum(reference_megapixels)
    return FIRST_MEGAPIXEL_USD + EXTRA_MEGAPIXEL_USD * (extra_output + inputs)
