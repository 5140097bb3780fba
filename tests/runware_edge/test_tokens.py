"""Webhook tokens: an HMAC of the taskUUID; only the right task under an accepted secret passes."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from runware_edge.tokens import sign, verify, webhook_url

SECRET = b"current-secret"
OLD = b"previous-secret"
TASK_A = "5b3c3b5e-8c55-4c1e-9a3c-0a2b8f3f6d11"
TASK_B = "0f6c2e8e-7d0f-4f55-8a7e-3c0cbbd4d2a2"


def test_a_signed_token_verifies_for_its_task() -> None:
    token = sign(TASK_A, SECRET)
    assert verify(TASK_A, token, [SECRET])
    assert sign(TASK_A, SECRET) == token  # derived, not random: nothing to store


def test_a_token_for_task_a_never_verifies_task_b() -> None:
    assert not verify(TASK_B, sign(TASK_A, SECRET), [SECRET])
    tokens = {sign(str(uuid.uuid4()), SECRET) for _ in range(50)}
    assert len(tokens) == 50


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param(sign(TASK_A, SECRET)[:-1], id="truncated"),
        pytest.param(sign(TASK_A, SECRET) + "A", id="extended"),
        pytest.param(sign(TASK_A, SECRET).upper(), id="case-changed"),
        pytest.param(sign(TASK_A, b"attacker-secret"), id="forged-other-secret"),
        pytest.param("A" * 43, id="forged-right-length"),
        pytest.param(sign(TASK_A, SECRET) + "=", id="padded"),
        pytest.param("tökén-ünïcode", id="non-ascii"),
        pytest.param("\x00" * 43, id="nul-bytes"),
    ],
)
def test_wrong_tokens_are_rejected(token: str) -> None:
    assert not verify(TASK_A, token, [SECRET, OLD])


def test_a_previous_secret_is_accepted_during_rotation() -> None:
    old_token = sign(TASK_A, OLD)
    assert verify(TASK_A, old_token, [SECRET, OLD])
    assert verify(TASK_A, sign(TASK_A, SECRET), [SECRET, OLD])


def test_a_removed_secret_is_rejected_after_rotation() -> None:
    assert not verify(TASK_A, sign(TASK_A, OLD), [SECRET])


def test_no_secrets_verify_nothing() -> None:
    assert not verify(TASK_A, sign(TASK_A, SECRET), [])


def test_webhook_url_carries_the_task_and_its_token() -> None:
    url = webhook_url("https://farm.example/base/", TASK_A, SECRET)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "farm.example")
    assert parts.path == f"/base/webhooks/runware/{TASK_A}"
    [token] = parse_qs(parts.query)["token"]
    assert verify(TASK_A, token, [SECRET])
    assert not verify(TASK_B, token, [SECRET])
    assert "=" not in token  # unpadded url-safe base64 needs no escaping in a query
