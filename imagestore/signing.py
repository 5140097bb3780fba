"""Signed, expiring URLs for images that `web` serves from the directory store.

The URL carries its expiry and an HMAC of (key, expiry) under a key derived from the
webhook secrets, so a URL works without a bearer token until it expires, and rotating
the webhook secret (the previous one still verifies) rotates these too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import quote, urlencode

# outside /v1/: the signature is the credential, and the API's per-client rate limit is
# for requests that cost the store, not for reading files
IMAGES_PATH = "/images/"
# separates these signatures from the webhook tokens made with the same secrets
_PURPOSE = b"fluxfarm image url"


def _signing_key(secret: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def signature(secret: bytes, key: str, expires: int) -> str:
    message = f"{key}\n{expires}".encode()
    return hmac.new(_signing_key(secret), message, hashlib.sha256).hexdigest()


def signed_url(base_url: str, secret: bytes, key: str, expires: int) -> str:
    """The URL at `base_url` that serves `key` until the Unix time `expires`."""
    query = urlencode({"expires": expires, "signature": signature(secret, key, expires)})
    return f"{base_url.rstrip('/')}{IMAGES_PATH}{quote(key)}?{query}"


def verify(secrets: Sequence[bytes], key: str, expires: int, given: str, now: float) -> bool:
    """Whether `given` signs (key, expires) under one of `secrets` and is not yet expired."""
    if expires <= now:
        return False
    # every secret is compared, in constant time, so timing tells nothing of which matched
    matched = [hmac.compare_digest(signature(s, key, expires), given) for s in secrets]
    return any(matched)
