"""Per-task webhook tokens: HMAC-SHA256 of the taskUUID, carried in the webhook URL.

Runware does not sign webhooks, so this token is what stands between a forged POST and a
job marked done. It is derived, never stored: the store keeps the request without it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import quote


def sign(task_uuid: str, secret: bytes) -> str:
    digest = hmac.new(secret, task_uuid.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(task_uuid: str, token: str, secrets: Sequence[bytes]) -> bool:
    """True when `token` was signed for `task_uuid` under any accepted secret.

    Every secret is compared, in constant time, so timing does not tell which matched.
    """
    # bytes, because compare_digest raises TypeError on a str with non-ASCII characters
    presented = token.encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(sign(task_uuid, secret).encode(), presented)
    return matched


def webhook_url(public_base_url: str, task_uuid: str, secret: bytes) -> str:
    """The URL Runware POSTs this task's results to."""
    base = public_base_url.rstrip("/")
    return f"{base}/webhooks/runware/{quote(task_uuid)}?token={sign(task_uuid, secret)}"
