"""Verifying the farm's callbacks: Standard Webhooks signatures, checked by the spec's
reference library, and the event inside turned into a typed CallbackEvent."""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError

from fluxfarm_client._errors import CallbackVerificationError
from fluxfarm_client._models import CallbackEvent, Job

EVENT_TYPES = frozenset({"job.succeeded", "job.failed", "job.canceled"})


def verify_callback(
    body: bytes | str, headers: Mapping[str, str], secret: str | Sequence[str]
) -> CallbackEvent:
    """The event of a callback whose signature verifies with `secret` (the tenant's
    `whsec_...`, or several while you rotate yours); CallbackVerificationError otherwise.

    Pass the body exactly as received, before any JSON parsing: the signature covers its
    bytes. The webhook-timestamp must be within five minutes of now, so a captured
    callback cannot be replayed later. Deduplicate on the event's `id`: an event may be
    delivered more than once, always with the same id.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise CallbackVerificationError("no secret to verify with")
    text = body.decode() if isinstance(body, bytes) else body
    plain = {str(name).lower(): str(value) for name, value in headers.items()}
    reasons: list[str] = []
    for candidate in secrets:
        try:
            payload = Webhook(candidate).verify(text, plain)
        # the reference library raises its own error for a bad signature or timestamp,
        # and ValueError (binascii.Error, json's) for a header or body it cannot read
        except (WebhookVerificationError, ValueError, binascii.Error) as exc:
            reasons.append(str(exc) or type(exc).__name__)
            continue
        return _event(plain["webhook-id"], payload)
    raise CallbackVerificationError(f"callback did not verify: {'; '.join(dict.fromkeys(reasons))}")


def _event(webhook_id: str, payload: object) -> CallbackEvent:
    if not isinstance(payload, dict) or payload.get("type") not in EVENT_TYPES:
        kind = payload.get("type") if isinstance(payload, dict) else None
        raise CallbackVerificationError(f"signed, but not a callback event (type {kind!r})")
    try:
        stamp = datetime.fromisoformat(payload["timestamp"]).astimezone(UTC)
        job = Job.from_json(payload["data"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CallbackVerificationError(f"signed, but not a callback event: {exc!r}") from exc
    return CallbackEvent(webhook_id, payload["type"], stamp, job)
