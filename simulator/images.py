"""Deterministic placeholder images: rendering, the LRU cache, and the TTL store behind imageURL.

An image is a small pattern drawn from a hash of (prompt, seed), upscaled to the requested
size and encoded in the requested format and quality: real, decodable, cheap. Encoding runs
in the default thread pool so the event loop keeps serving while a 4 MP PNG is compressed.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import io
import time
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

PATTERN_SIZE = 8
MEDIA_TYPES = {"JPG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"JPG": "jpg", "PNG": "png", "WEBP": "webp"}
_PIL_FORMATS = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
_FAST_PROMPT = "fluxfarm simulator"

RenderKey = tuple[str, int, int, int, str, int]


def render(prompt: str, seed: int, width: int, height: int, fmt: str, quality: int) -> bytes:
    """Encode the image for (prompt, seed) at exactly width x height; same inputs, same bytes."""
    digest = hashlib.shake_256(f"{seed}\x00{prompt}".encode()).digest(
        PATTERN_SIZE * PATTERN_SIZE * 3
    )
    pattern = Image.frombytes("RGB", (PATTERN_SIZE, PATTERN_SIZE), digest)
    image = pattern.resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    if fmt == "PNG":
        # Quality has no meaning for lossless PNG; the lowest effort keeps big images cheap.
        image.save(out, "PNG", compress_level=1)
    else:
        image.save(out, _PIL_FORMATS[fmt], quality=quality)
    return out.getvalue()


def spoiled(data: bytes, hostile: str, too_large_bytes: int) -> bytes:
    """`data` as a hostile image host serves it (settings.FaultSettings.hostile_images)."""
    if hostile == "not_image":
        # the signature a client sniffs, then nothing an image decoder can read
        return data[:16] + bytes(max(0, len(data) - 16))
    if hostile == "too_large":
        # a real image, and trailing bytes every decoder skips
        return data + bytes(max(0, too_large_bytes - len(data)))
    return data


class ImageRenderer:
    """Renders off the event loop, behind an LRU cache that only the loop thread touches."""

    def __init__(self, cache_size: int, fast: bool) -> None:
        self._cache: OrderedDict[RenderKey, bytes] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._fast = fast

    async def image(
        self, prompt: str, seed: int, width: int, height: int, fmt: str, quality: int
    ) -> bytes:
        key: RenderKey = (
            (_FAST_PROMPT, 0, width, height, fmt, quality)
            if self._fast
            else (prompt, seed, width, height, fmt, quality)
        )
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        data = await asyncio.get_running_loop().run_in_executor(None, render, *key)
        self._cache[key] = data
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return data


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    media_type: str
    expires_at: float


class ImageStore:
    """Images reachable through imageURL until their ttl expires, then gone (404)."""

    def __init__(self) -> None:
        self._images: dict[str, StoredImage] = {}
        self._expiry: list[tuple[float, str]] = []

    def put(self, image_uuid: str, data: bytes, fmt: str, ttl_s: float) -> None:
        expires_at = time.monotonic() + ttl_s
        self._images[image_uuid] = StoredImage(data, MEDIA_TYPES[fmt], expires_at)
        heapq.heappush(self._expiry, (expires_at, image_uuid))

    def get(self, image_uuid: str) -> StoredImage | None:
        stored = self._images.get(image_uuid)
        if stored is None or stored.expires_at <= time.monotonic():
            return None
        return stored

    def sweep(self) -> None:
        """Forget expired images so memory stays bounded by what is still reachable."""
        now = time.monotonic()
        while self._expiry and self._expiry[0][0] <= now:
            _, image_uuid = heapq.heappop(self._expiry)
            stored = self._images.get(image_uuid)
            if stored is not None and stored.expires_at <= now:
                del self._images[image_uuid]

    def clear(self) -> None:
        self._images.clear()
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._images)
