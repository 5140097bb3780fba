"""`verify_callback`: a body signed per Standard Webhooks (by the reference library) is
its typed event; a tampered body, a wrong secret, an old timestamp or a missing header is
refused, each with a reason."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from fluxfarm_client import CallbackVerificationError, JobState, verify_callback
from tests.fluxfarm_client.conftest import job_json

SECRET = "whsec_" + base64.b64encode(b"a tenant's callback secret, 32b").decode()
OTHER = "whsec_" + base64.b64encode(b"another tenant's secret, 32 byte").decode()


def _signed(
    payload: dict[str, Any], secret: str = SECRET, at: datetime | None = None
) -> tuple[str, dict[str, str]]:
    body = json.dumps(payload)
    when = at or datetime.now(UTC)
    signature = Webhook(secret).sign("msg_1", when, body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }
    return body, headers


def _event(kind: str = "job.succeeded") -> dict[str, Any]:
    return {"type": kind, "timestamp": "2030-01-01T00:00:00Z", "data": job_json("j1", [])}


def test_a_signed_callback_verifies_into_its_event() -> None:
    body, headers = _signed(_event())
    event = verify_callback(body.encode(), headers, SECRET)
    assert (event.id, event.type) == ("msg_1", "job.succeeded")
    assert event.timestamp == datetime(2030, 1, 1, tzinfo=UTC)
    assert event.job.id == "j1"
    assert event.job.state is JobState.SUCCEEDED
    # header names in any case, the secret among several (a receiver rotating its own)
    upper = {name.title(): value for name, value in headers.items()}
    assert verify_callback(body, upper, [OTHER, SECRET]).id == "msg_1"


def test_a_signature_by_either_of_two_farm_secrets_verifies() -> None:
    body, headers = _signed(_event())
    _same, by_other = _signed(_event(), OTHER)
    both = {
        **headers,
        "webhook-signature": f"{by_other['webhook-signature']} {headers['webhook-signature']}",
    }
    assert verify_callback(body, both, SECRET).id == "msg_1"
    assert verify_callback(body, both, OTHER).id == "msg_1"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda body, h: (body.replace("succeeded", "failed", 1), h), "No matching signature"),
        (lambda body, h: (body, {**h, "webhook-id": "msg_2"}), "No matching signature"),
        (lambda body, h: (body, {**h, "webhook-signature": "v1,AAAA"}), "No matching signature"),
        (lambda body, h: (body, {**h, "webhook-signature": "garbage"}), "callback did not verify"),
        (lambda body, h: (body, {k: v for k, v in h.items() if k != "webhook-id"}), "Missing"),
        (lambda body, h: (body, {**h, "webhook-timestamp": "soon"}), "Invalid Signature Headers"),
    ],
)
def test_a_tampered_callback_is_refused(tamper: Any, reason: str) -> None:
    body, headers = tamper(*_signed(_event()))
    with pytest.raises(CallbackVerificationError, match=reason):
        verify_callback(body, headers, SECRET)


def test_a_wrong_secret_or_an_old_timestamp_is_refused() -> None:
    body, headers = _signed(_event())
    with pytest.raises(CallbackVerificationError, match="No matching signature"):
        verify_callback(body, headers, OTHER)
    old_body, old = _signed(_event(), at=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(CallbackVerificationError, match="too old"):
        verify_callback(old_body, old, SECRET)
    with pytest.raises(CallbackVerificationError, match="no secret"):
        verify_callback(body, headers, [])


def test_a_signed_body_that_is_no_callback_event_is_refused() -> None:
    body, headers = _signed({"type": "invoice.paid", "timestamp": "x", "data": {}})
    with pytest.raises(CallbackVerificationError, match=r"invoice\.paid"):
        verify_callback(body, headers, SECRET)
    body, headers = _signed({"type": "job.failed", "timestamp": "x", "data": {}})
    with pytest.raises(CallbackVerificationError, match="not a callback event"):
        verify_callback(body, headers, SECRET)
