"""What a webhook may claim about its task, judged against what the farm knows of it.

A webhook token is one task's, and a leaked one lets anyone say anything about that task.
So a body is believed only as far as the farm can check it: no more distinct images than
the job's numberResults, image URLs only from the download allow-list, inline data no
bigger than an image of the requested size and of the requested format, and a cost that
fits the job's estimate; the token itself expires a while after the job is terminal.
A claim that fails is refused whole, except a cost: the image is real enough to keep, its
cost is kept apart as unconfirmed and counts in no spend figure.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from farmdomain.errors import WebhookRejected
from farmdomain.jobs import JobState
from farmdomain.pricing import DEFAULT_SIDE, estimate_usd
from farmdomain.settings import Origin, Settings, origin_of
from farmdomain.values import IncomingResult, ParsedBody, ResultOutcome

# Bytes per pixel no image of ours passes: noise saved as JPEG at quality 99 takes about
# 3.7, as RGBA PNG or lossless WebP about 4; plus room for the file's own headers
BYTES_PER_PIXEL = Decimal("4.5")
HEADER_ROOM_BYTES = 64 * 1024
# how each outputFormat's file starts
_SIGNATURES = {"JPG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n", "WEBP": b"RIFF"}
REFUSED = "refused"


@dataclass(frozen=True)
class TaskFacts:
    """What the store knows of the task a webhook names."""

    state: JobState
    finished_at: datetime | None
    number_results: int
    request: dict[str, Any]
    known_images: frozenset[str]


def _dimensions(request: dict[str, Any]) -> tuple[int, int]:
    # a field sent as null means the same as one left out
    return int(request.get("width") or DEFAULT_SIDE), int(request.get("height") or DEFAULT_SIDE)


def inline_limit_bytes(request: dict[str, Any]) -> int:
    """The most bytes an image of the request's size may take."""
    width, height = _dimensions(request)
    return int(width * height * BYTES_PER_PIXEL) + HEADER_ROOM_BYTES


def _refused(message: str) -> WebhookRejected:
    return WebhookRejected(REFUSED, 422, message)


@dataclass(frozen=True)
class ClaimRules:
    allowed_origins: frozenset[Origin]
    cost_factor: Decimal
    token_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaimRules:
        return cls(
            allowed_origins=settings.download_allow_list(),
            cost_factor=Decimal(str(settings.webhook_cost_factor)),
            token_ttl=timedelta(seconds=settings.webhook_token_ttl_s),
        )

    def judge(
        self, body: ParsedBody, facts: TaskFacts | None, now: datetime, seen: set[str]
    ) -> ParsedBody:
        """`body` as the farm believes it (costs that do not fit made unconfirmed), or
        WebhookRejected. `seen` holds the new images of the task already let through in
        the same batch, and takes this body's. A task the store does not know is left to
        the store to answer."""
        if facts is None:
            return body
        if (
            facts.state.terminal
            and facts.finished_at is not None
            and now - facts.finished_at > self.token_ttl
        ):
            hours = self.token_ttl.total_seconds() / 3600
            message = f"webhook token expired {hours:g} h after the job finished"
            raise WebhookRejected("token_expired", 401, message)
        results = [self._believed(result, facts) for result in body.results]
        new = {r.image_uuid for r in results} - facts.known_images - seen
        if len(facts.known_images | seen) + len(new) > facts.number_results:
            raise WebhookRejected(
                ResultOutcome.TOO_MANY_IMAGES.value,
                409,
                f"imageUUID: the job asked for {facts.number_results} images and this body"
                " would make more",
            )
        seen.update(new)
        return replace(body, results=results)

    def _believed(self, result: IncomingResult, facts: TaskFacts) -> IncomingResult:
        if result.image_url is not None:
            origin = origin_of(result.image_url)
            if origin not in self.allowed_origins:
                host = "no host" if origin is None else f"{origin[0]}://{origin[1]}:{origin[2]}"
                raise _refused(f"imageURL: {host} is not on the download allow-list")
        if result.image_data is not None:
            _check_inline(result.image_data, facts.request)
        per_image = estimate_usd(facts.request) / max(1, facts.number_results)
        cost = result.cost_usd
        if cost is not None and cost > per_image * self.cost_factor:
            return replace(result, cost_usd=None, unconfirmed_cost_usd=cost)
        return result


def _check_inline(data: str, request: dict[str, Any]) -> None:
    """Refuse inline image data bigger than the request's size allows or not of its format."""
    encoded = data.partition(",")[2] if data.startswith("data:") else data
    limit = inline_limit_bytes(request)
    # base64 carries 3 bytes in every 4 characters
    if len(encoded) // 4 * 3 > limit:
        width, height = _dimensions(request)
        raise _refused(f"imageBase64Data: over the {limit} bytes a {width}x{height} image takes")
    try:
        start = base64.b64decode(encoded[:16], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _refused("imageBase64Data: not base64") from exc
    wanted = str(request.get("outputFormat") or "JPG").upper()
    signature = _SIGNATURES.get(wanted)
    if signature is not None and not start.startswith(signature):
        raise _refused(f"imageBase64Data: not a {wanted} image, as the request asked")
